"""SSSD against Snowflake's SuffixDecoding (arctic-inference 0.3.0) on the replay protocol.

Both drafters see the same cases, the same datastore (ShareGPT conversations 2000-16999 as
Llama-3 tokens) and the request's own prompt and output; each step's tree is verified
greedily against the recorded response and the bonus token counted (tau = response tokens /
steps). SSSD runs through the product's own replay (``sssd.bench.replay``, the real
Speculator, in-process datastore). SuffixDecoding runs its released code: the
``SuffixDecodingCache`` of arctic-inference, with the datastore's documents cached as earlier
responses in its global suffix tree, each case's prompt in its per-request tree, and each
case's response evicted from the global tree when the case ends (so neither side learns from
the evaluation set).

arctic-inference ships only as an sdist that builds CUDA kernels with torch; its suffix tree is
a separate C++ extension. On first use this script downloads the sdist with pip and builds
only that extension (C++20 compiler, and nanobind, cmake and ninja installed with
``pip --target`` under the cache directory, not into the project) in
``$SSSD_CACHE/arctic-inference-0.3.0``.

    .venv/bin/python bench/compare_suffix_decoding.py --json > bench/results/suffix-compare.json

SuffixDecoding is run twice: with vLLM's defaults (max_tree_depth 24, max_spec_factor 1.0,
min_token_prob 0.1, tree speculation) and budget-filling (max_spec_factor 64, min_token_prob 0:
the tree grows best-first until the budget is spent, whatever the match length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from client_sdk.types import DraftTree
from sssd.bench import datasets, llama3, replay
from sssd.bench.provenance import provenance
from sssd.bench.stats import percentiles
from sssd.paths import cache_dir

VERSION = "0.3.0"
SUFFIX_CONFIGS = {
    "suffix_default": {"max_spec_factor": 1.0, "max_spec_offset": 0.0, "min_token_prob": 0.1},
    "suffix_fill": {"max_spec_factor": 64.0, "max_spec_offset": 0.0, "min_token_prob": 0.0},
}
TREE_DEPTH = 24  # vLLM's default suffix_decoding_max_tree_depth


def _run(cmd: list[str], **kw) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])}… failed:\n{done.stderr[-2000:]}")


def build_suffix_decoding() -> Path:
    """The directory to put on sys.path for ``arctic_inference.suffix_decoding``."""
    root = cache_dir() / f"arctic-inference-{VERSION}"
    pkg = root / "site" / "arctic_inference" / "suffix_decoding"
    if list(pkg.glob("_C*.so")):
        return root / "site"
    root.mkdir(parents=True, exist_ok=True)
    print(f"building SuffixDecoding from arctic-inference {VERSION} in {root}", file=sys.stderr)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "-q",
          f"arctic-inference=={VERSION}", "-d", str(root)])
    with tarfile.open(root / f"arctic_inference-{VERSION}.tar.gz") as tar:
        tar.extractall(root, filter="data")
    src = root / f"arctic_inference-{VERSION}"
    tools = root / "tools"
    _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(tools), "nanobind==2.9.2", "cmake", "ninja"])
    env = {"PYTHONPATH": str(tools), "PATH": f"{tools / 'bin'}:/usr/bin:/bin"}
    build = root / "build"
    _run([sys.executable, "-m", "cmake", "-S", str(src / "csrc" / "suffix_decoding"), "-B", str(build), "-G", "Ninja",
          f"-DPython_EXECUTABLE={sys.executable}", f"-DCMAKE_MAKE_PROGRAM={tools / 'bin' / 'ninja'}"], env=env)
    _run([sys.executable, "-m", "cmake", "--build", str(build)], env=env)
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg.parent / "__init__.py").write_text("")
    for name in ("__init__.py", "cache.py"):
        (pkg / name).write_text((src / "arctic_inference" / "suffix_decoding" / name).read_text())
    (so,) = build.glob("_C*.so")
    (pkg / so.name).write_bytes(so.read_bytes())
    return root / "site"


def suffix_cache(docs):
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    cache = SuffixDecodingCache(max_tree_depth=TREE_DEPTH)
    empty = np.zeros(0, dtype=np.int32)
    for i, doc in enumerate(docs):
        cache.start_request(("doc", i), empty)
        cache.add_active_response(("doc", i), np.ascontiguousarray(doc, dtype=np.int32))
        cache.stop_request(("doc", i))
    return cache


def suffix_replay(cache, cases: list[dict], budget: int, spec: dict) -> dict:
    steps = tokens = 0
    draft_s: list[float] = []
    for i, case in enumerate(cases):
        rid = ("case", i)
        truth = np.asarray(case["response"], dtype=np.int32)
        text = np.asarray(case["prompt"], dtype=np.int32)
        cache.start_request(rid, text)
        pos = 0
        while pos < truth.shape[0]:
            t0 = time.perf_counter()
            d = cache.speculate(rid, np.ascontiguousarray(text[-TREE_DEPTH:]), max_spec_tokens=budget,
                                use_tree_spec=True, **spec)
            draft_s.append(time.perf_counter() - t0)
            n = len(d.token_ids)
            tree = DraftTree(np.asarray(d.token_ids, np.int32), np.asarray(d.parents, np.int32), np.ones(n),
                             np.full((n, 1, 4), -1, np.int8))
            path = tree.longest_match(truth[pos : pos + TREE_DEPTH])
            new = truth[pos : pos + len(path) + 1]
            cache.add_active_response(rid, new)
            text = np.concatenate([text, new])
            pos += new.shape[0]
            steps += 1
            tokens += new.shape[0]
        cache.stop_request(rid)
        cache.evict_cached_response(rid)
    return {"budget": budget, "tau": round(tokens / max(steps, 1), 4), "steps": steps, "draft_us": percentiles(draft_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="sharegpt,mtbench,mtbench2,humaneval,math,multiturn")
    ap.add_argument("--budgets", default="4,8,16,32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = args.datasets.split(",")
    unknown = [n for n in names if n not in datasets.LOADERS]
    if unknown:
        raise SystemExit(f"--datasets: unknown {', '.join(unknown)} (one of {', '.join(datasets.LOADERS)})")
    budgets = [int(b) for b in args.budgets.split(",")]
    sys.path.insert(0, str(build_suffix_decoding()))
    docs = datasets.sharegpt_datastore()
    t0 = time.perf_counter()
    cache = suffix_cache(docs)
    print(f"SuffixDecoding global tree: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    lookup = replay.InProcessDatastore(docs, llama3.VOCAB_SIZE).lookup
    rows = []
    for name in names:
        cases = datasets.LOADERS[name]()
        ours = {"sssd_blocking": replay.replay(cases, replay.drafter_named("sssd"), budgets, lookup, progress=False,
                                               prefetch_outcomes=False)["results"],
                "sssd_zero_wait": replay.replay(cases, replay.drafter_named("sssd"), budgets, lookup, progress=False,
                                                prefetch_outcomes=True, vocab_size=llama3.VOCAB_SIZE)["results"],
                "pld": replay.replay(cases, replay.drafter_named("pld"), budgets, None, progress=False)["results"]}
        peers = {c: [suffix_replay(cache, cases, b, spec) for b in budgets] for c, spec in SUFFIX_CONFIGS.items()}
        for j, b in enumerate(budgets):
            row = {"dataset": name, "cases": len(cases), "budget": b,
                   **{d: r[j]["tau"] for d, r in {**ours, **peers}.items()},
                   "sssd_draft_us_p50": ours["sssd_blocking"][j]["draft_us"]["p50"],
                   "suffix_fill_draft_us_p50": peers["suffix_fill"][j]["draft_us"]["p50"]}
            row["blocking_vs_suffix_fill"] = round(row["sssd_blocking"] / row["suffix_fill"], 4)
            row["zero_wait_vs_suffix_fill"] = round(row["sssd_zero_wait"] / row["suffix_fill"], 4)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    out = {"protocol": "replay, greedy tree verification, bonus token counted; ShareGPT 2000-16999 datastore",
           "sssd_lookup": {"sssd_blocking": "each step's committed context, answered before drafting (as the peers read "
                                            "their trees)", "sssd_zero_wait": "the product's outcome prefetch"},
           "suffix_decoding": {"version": VERSION, "max_tree_depth": TREE_DEPTH, "configs": SUFFIX_CONFIGS},
           "rows": rows, "provenance": provenance()}
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

"""GPU smoke test of the plugin: ``python -m sglang_integration.smoke --model-path PATH``.

Launches SGLang twice on 127.0.0.1 (plain, then ``--speculative-algorithm sssd``), sends
the same greedy prompts to both, checks the texts are identical, and prints the acceptance
length (completion tokens per verify step) and throughput of each. Needs a CUDA GPU, the
full ``sglang==0.5.23`` install (``pip install -e '.[sglang]'``) and the model on local disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain the difference between a list and a tuple in Python.",
    "List the first ten prime numbers, separated by commas.",
    "Write a SQL query that returns the five most recent orders.",
    "Summarise what speculative decoding is in three sentences.",
    "Repeat this sentence twice: the quick brown fox jumps over the lazy dog.",
]


def launch(model: str, port: int, speculative: bool, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
           "--port", str(port), *extra]
    if speculative:
        cmd += ["--speculative-algorithm", "sssd"]
    proc = subprocess.Popen(cmd, env={**os.environ})
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"sglang exited with {proc.returncode}")
            time.sleep(2)
    proc.kill()
    raise SystemExit("sglang did not become healthy in 15 minutes")


def generate(port: int, prompt: str, max_new: int) -> dict:
    body = json.dumps({"text": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": max_new}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/generate", body, {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())


def run_side(model: str, port: int, speculative: bool, max_new: int, extra: list[str]) -> dict:
    proc = launch(model, port, speculative, extra)
    try:
        generate(port, PROMPTS[0], 8)  # warm-up
        t = time.perf_counter()
        outs = [generate(port, p, max_new) for p in PROMPTS]
        seconds = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
    return {"texts": [o["text"] for o in outs], "tokens_per_s": tokens / seconds,
            "accept_length": accept_length([o["meta_info"] for o in outs], speculative)}


def accept_length(metas: list[dict], speculative: bool) -> float | None:
    """Completion tokens per verify step over the outputs' meta_info (plain decoding: 1 per step).
    None when a speculative server did not report its verify steps (``spec_verify_ct``) for every
    output: no figure rather than a plain step's 1.0 passed off as SSSD's."""
    tokens = sum(m["completion_tokens"] for m in metas)
    if not speculative:
        return 1.0 if tokens else None
    if not metas or not all(m.get("spec_verify_ct") for m in metas):
        return None
    return tokens / sum(m["spec_verify_ct"] for m in metas)


def missing_prerequisite(model: str, cuda: bool) -> str:
    """What this machine lacks for the smoke test ("" when nothing): without a CUDA device, or with
    a model path that is not there, SGLang started and failed minutes later on an unrelated import
    (torchvision on a CPU box) or a hub download."""
    if not cuda:
        return "the smoke test needs a CUDA GPU (SGLang's kernels are CUDA-only); torch sees none here"
    if model.startswith(("/", ".", "~")) and not os.path.isdir(os.path.expanduser(model)):  # (org/name: a hub id)
        return f"--model-path {model}: no such directory (a local model folder, or a Hugging Face id like org/name)"
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--port", type=int, default=30123)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("extra", nargs="*", help="extra sglang.launch_server arguments, after --")
    args = ap.parse_args(argv)
    import torch

    problem = missing_prerequisite(args.model_path, torch.cuda.is_available())
    if problem:
        print(f"smoke: {problem}", file=sys.stderr)
        return 2
    plain = run_side(args.model_path, args.port, False, args.max_new_tokens, args.extra)
    sssd = run_side(args.model_path, args.port, True, args.max_new_tokens, args.extra)
    same = plain["texts"] == sssd["texts"]
    print(json.dumps({
        "greedy_identical": same,
        "plain_tokens_per_s": round(plain["tokens_per_s"], 1),
        "sssd_tokens_per_s": round(sssd["tokens_per_s"], 1),
        "speedup": round(sssd["tokens_per_s"] / plain["tokens_per_s"], 3),
        "sssd_accept_length": None if sssd["accept_length"] is None else round(sssd["accept_length"], 3),
    }, indent=2))
    if sssd["accept_length"] is None:
        print("sglang reported no spec_verify_ct for some outputs: no acceptance length", file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

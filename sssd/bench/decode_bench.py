"""``sssd bench decode``: end to end with SmolLM2-135M, plain decoding vs SSSD, side by side.

For each dataset and batch size the same prompts run through the reference decoder as plain
decoding, SSSD with an empty datastore (the request's own text only) and SSSD with a filled
datastore (ShareGPT answers tokenised for SmolLM2, in process). The configurations decode each
batch in lockstep, one step each in turn (``decoder.lockstep``), so they share whatever load
the machine has from moment to moment; greedy outputs must be identical to plain. The planner
starts from forward times measured on this device and learns online. ``--runs N`` repeats the
whole measurement and reports the worst and the median speedup; ``--contention`` starts
CPU-burning processes *after* the planner's start-up measurement, so the planner has to notice
that its table went wrong. Speedups are of the decode phase (tokens / decode seconds: 1 / time
per output token); ``e2e_`` fields count each batch's prefill in too, which is the same in
every configuration. Prints JSON.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import subprocess
import sys

import numpy as np
import torch

from client_sdk.drafting.budget import Model, forward_time, measure_local
from client_sdk.verification.decoder import ReferenceDecoder, check_prompts, measured_costs
from client_sdk.runtime import CPU_DECODING, build_speculator, lookup_options
from sssd.bench.replay import InProcessSource

CONFIGS = ("plain", "sssd-empty", "sssd-filled")
CONTEXT = 256  # cache length of the start-up forward measurements


PROMPT_SETS = ("mtbench", "humaneval")  # the dev sets whose prompts decode end to end


def _prompt_texts(dataset: str, n: int) -> list[str]:
    """The first ``n`` prompts of ``dataset``; a one-line ValueError for a name that is not one of
    ``PROMPT_SETS`` (one was taken for HumanEval, and labelled with its own name in the results), or
    for more prompts than it holds (the rest were left out silently: the demo then decoded none
    after feedback)."""
    from sssd.bench import datasets

    if dataset not in PROMPT_SETS:
        raise ValueError(f"--datasets: no prompt set {dataset!r} (one of {', '.join(PROMPT_SETS)})")
    texts = datasets.mtbench_questions() if dataset == "mtbench" else datasets.humaneval_prompts()
    if n > len(texts):
        raise ValueError(f"--prompts {n}: {dataset} has {len(texts)} prompts")
    return texts[:n]


def check_prompt_sets(names, n: int) -> None:
    """``prompts_for``'s checks of every set, before anything is loaded (see ``_prompt_texts``)."""
    for name in names:
        _prompt_texts(name, n)


def prompts_for(tok, dataset: str, n: int) -> list[list[int]]:
    from sssd.smollm2 import chat_ids

    return [chat_ids(tok, t) for t in _prompt_texts(dataset, n)]


def checked_prompts(datasets, n: int, max_new_tokens: int) -> dict[str, list[list[int]]]:
    """Each dataset's first ``n`` prompts as the bundled model's token ids, checked against its
    positions before the model loads (a length past them was said after the load, the demo's
    ingest or the bench's cost measurement)."""
    from sssd.smollm2 import context_length, load_tokenizer

    prompts = {d: prompts_for(load_tokenizer(), d, n) for d in datasets}
    check_prompts([p for ps in prompts.values() for p in ps], max_new_tokens, context_length())
    return prompts


def build_datastore(tok, vocab: int):
    from sssd.bench import datasets
    from sssd.bench.replay import InProcessDatastore

    return InProcessDatastore(datasets.sharegpt_docs_for(tok, "smollm2"), vocab)


@contextlib.contextmanager
def cpu_burners(count: int):
    """``count`` processes that spin on the CPU until the block ends (0 = none). Each also ends
    once it is orphaned, so a bench that crashed or was killed leaves no CPU burning."""
    spin = f"import os\nwhile os.getppid() == {os.getpid()}: pass"  # this process's id: no race with its death
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, "-c", spin], **quiet) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure_configs(decoder, prompts, batch, max_new, specs: dict) -> dict:
    """Every configuration over the same prompts, batch by batch, the configurations of a batch
    in lockstep (a step each in turn, the order rotating), each timing its own steps."""
    out = {name: {"gens": [], "seconds": 0.0, "prefill": 0.0} for name in specs}
    for i in range(0, len(prompts), batch):
        for name, gens in decoder.generate_in_lockstep(prompts[i : i + batch], max_new, specs).items():
            out[name]["gens"] += gens
            out[name]["seconds"] += gens[0].decode_seconds  # one decoding steps the batch together
            out[name]["prefill"] += gens[0].prefill_seconds
    return {name: _summary(r["gens"], r["seconds"], r["prefill"]) for name, r in out.items()}


def _summary(gens, seconds: float, prefill: float) -> dict:
    """tokens_per_s: the decode phase (1 / time per output token); e2e_tokens_per_s with prefill."""
    tokens = sum(len(g.tokens) for g in gens)
    steps = sum(g.steps for g in gens)
    return {"tokens": tokens, "seconds": round(seconds, 2), "prefill_seconds": round(prefill, 2),
            "tokens_per_s": round(tokens / seconds, 2), "ms_per_token": round(1e3 * seconds / tokens, 2),
            "e2e_tokens_per_s": round(tokens / (seconds + prefill), 2), "tau": round(tokens / steps, 3),
            "outputs": [g.tokens for g in gens]}


def _one_run(decoder, prompts_by_set, batch_sizes, max_new, make_specs) -> list[dict]:
    rows = []
    for dataset, prompts in prompts_by_set.items():
        for batch in batch_sizes:
            specs = make_specs()
            configs = measure_configs(decoder, prompts, batch, max_new, specs)
            for name, spec in specs.items():
                if spec is not None:
                    configs[name]["planner"] = spec.planner.stats()
            base = configs["plain"]
            for r in configs.values():
                r["speedup"] = round(r["tokens_per_s"] / base["tokens_per_s"], 3)
                r["e2e_speedup"] = round(r["e2e_tokens_per_s"] / base["e2e_tokens_per_s"], 3)
                r["identical_to_plain"] = r["outputs"] == base["outputs"]
            for r in configs.values():
                del r["outputs"]
            rows.append({"dataset": dataset, "batch": batch, "configs": configs})
    return rows


def _aggregate(runs: list[list[dict]]) -> list[dict]:
    """Per (dataset, batch, configuration): worst and median speedup over the runs."""
    table = []
    for i, row in enumerate(runs[0]):
        for name in CONFIGS[1:]:
            s = [run[i]["configs"][name]["speedup"] for run in runs]
            e2e = [run[i]["configs"][name]["e2e_speedup"] for run in runs]
            taus = [run[i]["configs"][name]["tau"] for run in runs]
            table.append({"dataset": row["dataset"], "batch": row["batch"], "config": name,
                          "speedup_worst": min(s), "speedup_median": statistics.median(s), "speedups": s,
                          "e2e_speedup_worst": min(e2e), "e2e_speedup_median": statistics.median(e2e),
                          "tau_median": statistics.median(taus),
                          "identical": all(run[i]["configs"][name]["identical_to_plain"] for run in runs)})
    return table


def run(datasets=("mtbench", "humaneval"), n_prompts: int = 8, max_new_tokens: int = 96, batch_sizes=(1,),
        device: str = "cpu", progress: bool = True, runs: int = 1, contention: int = 0, dtype: str = "float32",
        linears: str | None = None, attention: str = "model") -> dict:
    from sssd.smollm2 import load_model, resolve_dtype

    dtype = resolve_dtype(dtype)  # "auto" named as what it is in the results
    prompts = checked_prompts(datasets, n_prompts, max_new_tokens)
    model, tok = load_model(dtype=dtype)
    model.to(device)
    decoder = ReferenceDecoder(model, {tok.eos_token_id}, device, linears=linears, attention=attention)
    store = build_datastore(tok, model.config.vocab_size)
    config = CPU_DECODING
    options = lookup_options(config.draft, config.draft.max_depth, config.prefetch_outcomes)
    costs = measured_costs(decoder, CONTEXT, batches=tuple(batch_sizes))  # before any contention starts
    result = {"device": device if device == "cpu" else torch.cuda.get_device_name(0),
              "model": f"SmolLM2-135M-Instruct ({dtype})", **decoder.linear_fields(), "max_new_tokens": max_new_tokens,
              "prompts_per_dataset": n_prompts, "runs": runs, "contention_processes": contention,
              "startup_forward_ms": {f"{b}x{n}": round(t * 1e3, 1) for b, row in costs.rows.items() for n, t in row.items()}}
    if device == "cpu":
        hw, shape = measure_local(0.3), Model.from_config({**model.config.to_dict(), "torch_dtype": dtype})
        result["roofline_relative_error"] = {f"{b}x{n}": round(forward_time(hw, shape, b, n, CONTEXT) / t - 1, 3)
                                             for b, row in costs.rows.items() for n, t in row.items()}

    def make_specs():  # fresh speculators per (dataset, batch): each learns across its prompts
        return {"plain": None,
                "sssd-empty": build_speculator(costs=copy.deepcopy(costs), config=config),
                "sssd-filled": build_speculator(costs=copy.deepcopy(costs), config=config,
                                               remote=InProcessSource(store.lookup, options))}

    all_runs = []
    with cpu_burners(contention):
        for i in range(runs):
            rows = _one_run(decoder, prompts, batch_sizes, max_new_tokens, make_specs)
            all_runs.append(rows)
            if progress:
                for r in rows:
                    c = r["configs"]
                    print(f"run {i + 1}/{runs} {r['dataset']} batch {r['batch']}: " + ", ".join(
                        f"{n} {c[n]['tokens_per_s']} tok/s (x{c[n]['speedup']}, tau {c[n]['tau']})" for n in CONFIGS),
                        file=sys.stderr, flush=True)
    result["runs_detail"] = all_runs
    result["summary"] = _aggregate(all_runs)
    result["min_speedup_vs_plain"] = min(r["speedup_worst"] for r in result["summary"])
    result["min_e2e_speedup_vs_plain"] = min(r["e2e_speedup_worst"] for r in result["summary"])
    result["all_identical"] = all(r["identical"] for r in result["summary"])
    return result

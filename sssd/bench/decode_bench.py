"""``sssd bench decode``: end to end with SmolLM2-135M, plain decoding vs SSSD, side by side.

For each dataset and batch size the same prompts run through the reference decoder as
plain decoding, SSSD with the request's own text only, and SSSD with a datastore (ShareGPT
answers tokenised for SmolLM2, in-process). Greedy outputs must be identical to plain.
Budgets come from the planner fed with forward times measured on this device. Prints JSON.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from client_sdk.budget import BudgetPlanner, Model, forward_time, measure_local
from client_sdk.decoder import ReferenceDecoder, measured_cost
from client_sdk.speculator import Speculator, SpeculatorConfig
from client_sdk.types import TrieBatch


class InProcessSource:
    """The datastore core in this process, behind the RemoteSource interface (no deadline needed)."""

    def __init__(self, lookup, options) -> None:
        self.lookup, self.options = lookup, options
        self._pending = None

    def request(self, key, contexts) -> None:
        self._pending = list(contexts)

    def collect(self, key, contexts, deadline_s: float) -> TrieBatch | None:
        self._pending = None
        return self.lookup(contexts, self.options)


def prompts_for(tok, dataset: str, n: int) -> list[list[int]]:
    from client_sdk.smollm2 import chat_ids
    from sssd.bench import datasets

    texts = datasets.mtbench_questions() if dataset == "mtbench" else datasets.humaneval_prompts()
    return [chat_ids(tok, t) for t in texts[:n]]


def build_datastore(tok, vocab: int):
    from sssd.bench import datasets
    from sssd.bench.replay import InProcessDatastore

    return InProcessDatastore(datasets.sharegpt_docs_for(tok, "smollm2"), vocab)


def run_config(decoder, prompts, batch, max_new, make_spec) -> dict:
    gens, seconds = [], 0.0
    spec = make_spec()  # one speculator for the whole run, as in serving: it learns across requests
    for i in range(0, len(prompts), batch):
        t = time.perf_counter()
        gens += decoder.generate(prompts[i : i + batch], max_new, speculator=spec)
        seconds += time.perf_counter() - t
    tokens = sum(len(g.tokens) for g in gens)
    steps = sum(g.steps for g in gens)
    accepted = np.bincount(np.concatenate([np.asarray(g.accepted, dtype=np.int64) for g in gens]), minlength=17)
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2),
            "ms_per_token": round(1e3 * seconds / tokens, 2), "tau": round(tokens / steps, 3),
            "accept_by_depth": [round(float(x), 4) for x in (accepted[::-1].cumsum()[::-1] / max(steps, 1))[1:9]],
            "outputs": [g.tokens for g in gens]}


def run(datasets=("mtbench", "humaneval"), n_prompts: int = 8, max_new_tokens: int = 96, batch_sizes=(1,),
        device: str = "cpu", progress: bool = True) -> dict:
    from client_sdk.smollm2 import load_model
    from client_sdk.runtime import lookup_options

    model, tok = load_model()
    model.to(device)
    decoder = ReferenceDecoder(model, {tok.eos_token_id}, device)
    store = build_datastore(tok, model.config.vocab_size)
    shape = Model.from_config({**model.config.to_dict(), "torch_dtype": "float32"})
    config = SpeculatorConfig()
    options = lookup_options(config.draft, config.draft.max_depth)
    context = 256
    cost = measured_cost(decoder, context, batches=tuple(batch_sizes))
    hw = measure_local(0.3) if device == "cpu" else None
    result = {"device": device if device == "cpu" else torch.cuda.get_device_name(0), "model": "SmolLM2-135M-Instruct (fp32)",
              "max_new_tokens": max_new_tokens, "prompts_per_dataset": n_prompts, "runs": []}
    if hw is not None:
        errors = {f"{b}x{n}": round(forward_time(hw, shape, b, n, context) / t - 1, 3) for (b, n), t in cost.table.items()}
        result["roofline_relative_error"] = errors
        result["measured_forward_ms"] = {f"{b}x{n}": round(t * 1e3, 1) for (b, n), t in cost.table.items()}

    def planner():
        return BudgetPlanner(hw or measure_local(0.1), shape, max_budget=16, cost=cost)

    configs = {
        "plain": lambda: None,
        "sssd-local": lambda: Speculator(config, planner=planner()),
        "sssd-datastore": lambda: Speculator(config, remote=InProcessSource(store.lookup, options), planner=planner()),
    }
    for dataset in datasets:
        prompts = prompts_for(tok, dataset, n_prompts)
        for batch in batch_sizes:
            rows = {}
            for name, make in configs.items():
                rows[name] = run_config(decoder, prompts, batch, max_new_tokens, make)
                if progress:
                    print(f"{dataset} batch {batch} {name}: {rows[name]['tokens_per_s']} tok/s, tau {rows[name]['tau']}", flush=True)
            base = rows["plain"]
            for name, r in rows.items():
                r["speedup"] = round(r["tokens_per_s"] / base["tokens_per_s"], 3)
                r["identical_to_plain"] = r["outputs"] == base["outputs"]
            for r in rows.values():
                del r["outputs"]
            result["runs"].append({"dataset": dataset, "batch": batch, "configs": rows})
    speedups = [r["speedup"] for run_ in result["runs"] for n, r in run_["configs"].items() if n != "plain"]
    result["min_speedup_vs_plain"] = min(speedups) if speedups else None
    result["all_identical"] = all(r["identical_to_plain"] for run_ in result["runs"] for r in run_["configs"].values())
    return result

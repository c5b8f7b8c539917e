"""``sssd bench forward``: what verifying k draft tokens costs on this device, against 1 token.

For k = 0..K the median time of one forward of SmolLM2-135M over root + k draft tokens at a
cache of ``--context`` entries, three ways: a chain draft (for one row this is the causal
mask, so the decoder takes the model's own causal path), a branching draft (binary tree,
explicit tree mask: what a real draft tree costs), and the model's plain causal path with
no mask at all (the reference the tree forward is held to). The three ways run interleaved,
one forward each per repetition, so they share the machine's load. Prints JSON with the
ratios forward(1 + k) / forward(1) and tree / causal.
"""

from __future__ import annotations

import statistics
import sys
import time

WAYS = ("causal", "chain", "tree")


def _forwards(decoder, k: int, context: int):
    """{way: a function that runs one such forward and returns its seconds}."""
    import torch

    from client_sdk.verification.decoder import probe_tree
    from client_sdk.verification.verify import build_batch

    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, decoder.model.config.vocab_size, (context + 1,), generator=gen).tolist()
    cache = decoder.prefill([prompt])
    runs = {}
    for way in WAYS:
        tree = probe_tree(k, decoder.model.config.vocab_size, branching=way == "tree")
        b = build_batch([prompt[-1]], [tree], cache.lengths, cache.width, decoder.device)
        causal = way == "causal"

        def run(b=b, causal=causal) -> float:
            t = time.perf_counter()
            with torch.no_grad():
                if causal:  # the model's own causal path, no tree layout
                    decoder.model(input_ids=b.input_ids, past_key_values=cache.as_dynamic(), use_cache=True)
                else:
                    decoder.forward(b, cache)
            return time.perf_counter() - t

        runs[way] = run
    return runs


def run(max_k: int = 15, context: int = 256, repeats: int = 7, device: str = "cpu", progress: bool = True,
        dtype: str = "float32", linears: str | None = None, attention: str = "model") -> dict:
    from client_sdk.verification.decoder import ReferenceDecoder
    from sssd.smollm2 import context_length, load_model, resolve_dtype

    dtype = resolve_dtype(dtype)  # "auto" named as what it is in the results
    positions = context_length()  # (past them it ran on for minutes, then failed; said before the load)
    if context + 1 + max_k > positions:
        raise ValueError(f"--context {context:,} and --max-k {max_k} pass the model's {positions:,}-token context")
    model, tok = load_model(dtype=dtype)
    model.to(device)
    decoder = ReferenceDecoder(model, {tok.eos_token_id}, device, linears=linears, attention=attention)
    rows = []
    for k in range(max_k + 1):
        runs = _forwards(decoder, k, context)
        times = {way: [] for way in WAYS}
        for rep in range(repeats + 2):  # the first two rounds warm up
            for way in WAYS:
                t = runs[way]()
                if rep >= 2:
                    times[way].append(t)
        med = {way: statistics.median(ts) for way, ts in times.items()}
        rows.append({"k": k, **{f"{w}_ms": round(v * 1e3, 2) for w, v in med.items()}})
        if progress:
            print(f"k={k}: " + ", ".join(f"{w} {v * 1e3:.1f} ms" for w, v in med.items()), file=sys.stderr, flush=True)
    base = rows[0]["causal_ms"]
    for r in rows:
        r["tree_over_1"] = round(r["tree_ms"] / base, 3)
        r["causal_over_1"] = round(r["causal_ms"] / base, 3)
        r["tree_over_causal"] = round(r["tree_ms"] / r["causal_ms"], 3)
    ratios = [r["tree_over_causal"] for r in rows[1:]]
    return {"model": f"SmolLM2-135M-Instruct ({dtype})", **decoder.linear_fields(), "device": device, "context": context, "batch": 1,
            "repeats": repeats, "rows": rows, "median_tree_over_causal": statistics.median(ratios),
            "max_tree_over_causal": max(ratios)}

"""``sssd bench forward``: what verifying k draft tokens costs on this device, against 1 token.

For k = 0..K the median time of one forward of SmolLM2-135M over root + k draft tokens at a
cache of ``--context`` entries, three ways: a chain draft (for one row this is the causal
mask, so the decoder takes the model's own causal path), a branching draft (binary tree,
explicit tree mask: what a real draft tree costs), and the model's plain causal path with
no mask at all (the reference the tree forward is held to). Prints JSON with the ratios
forward(1 + k) / forward(1) and tree / causal.
"""

from __future__ import annotations

import sys


def run(max_k: int = 15, context: int = 256, repeats: int = 7, device: str = "cpu", progress: bool = True,
        dtype: str = "float32") -> dict:
    from client_sdk.verification.decoder import ReferenceDecoder, time_forward
    from sssd.smollm2 import load_model

    model, tok = load_model(dtype=dtype)
    model.to(device)
    decoder = ReferenceDecoder(model, {tok.eos_token_id}, device)
    rows = []
    for k in range(max_k + 1):
        t = {way: time_forward(decoder, 1, 1 + k, context, repeats, branching=way == "tree", causal=way == "causal")
             for way in ("causal", "chain", "tree")}
        rows.append({"k": k, **{f"{w}_ms": round(v * 1e3, 2) for w, v in t.items()}})
        if progress:
            print(f"k={k}: " + ", ".join(f"{w} {v * 1e3:.1f} ms" for w, v in t.items()), file=sys.stderr, flush=True)
    base = rows[0]["causal_ms"]
    for r in rows:
        r["tree_over_1"] = round(r["tree_ms"] / base, 3)
        r["causal_over_1"] = round(r["causal_ms"] / base, 3)
        r["tree_over_causal"] = round(r["tree_ms"] / r["causal_ms"], 3)
    return {"model": f"SmolLM2-135M-Instruct ({dtype})", "device": device, "context": context, "batch": 1,
            "repeats": repeats, "rows": rows,
            "max_tree_over_causal": max(r["tree_over_causal"] for r in rows[1:])}

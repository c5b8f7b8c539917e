"""The verify's full attention mask: the tensor operations and host time of building it request by
request, as NGRAM's GPU path does, against ``sglang_integration.masks.full_tree_mask``, on CPU.

On a GPU each operation is a kernel launch, about 5-10 µs of the host's time before the GPU can
run it; NGRAM runs these on the step's critical path after the drafts. There is no GPU here, so
this counts the operations each way dispatches (a ``TorchDispatchMode``) and times both on CPU
tensors: with 16-token contexts, where the operations' own work is small and their time is
mostly torch's per-operation cost on the host, and with 1,024-token contexts, where the CPU also
does the memory work a GPU would do (so those times are not a GPU's). The request-by-request side
is NGRAM's lines (sglang 0.5.23 ``ngram_worker.py`` 325-332 and 355-370) with the device a CPU.

    .venv/bin/python bench/full_mask.py [--batch-sizes 16,64] [--width 16] [--contexts 16,1024] [--rounds 300]

Prints JSON: per batch size and context length, the operations per step and the p50 µs per step
of each way.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sglang_integration.masks import full_tree_mask
from sssd.bench.provenance import stamped


class Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def per_request(mask: np.ndarray, seq_lens_cpu: torch.Tensor, n: int, device: str = "cpu") -> torch.Tensor:
    """NGRAM's construction on ``device`` (ones first, as NGRAM builds them before the drafts)."""
    bs = seq_lens_cpu.shape[0]
    ones_masks = [torch.ones((n, seq_lens_cpu[i]), device=device) for i in range(bs)]
    mask = mask.reshape(bs, n, n)
    tree_mask = []
    for i in range(bs):
        req_mask = torch.cat((ones_masks[i], torch.from_numpy(mask[i]).to(device=device, non_blocking=True)),
                             dim=1).to(torch.bool)
        tree_mask.append(req_mask.flatten())
    return torch.cat(tree_mask, dim=0)


def batched(mask: np.ndarray, seq_lens_cpu: torch.Tensor, n: int, device: str = "cpu") -> torch.Tensor:
    """The worker's: NGRAM has already copied the n x n masks to the device in one copy."""
    return full_tree_mask(torch.from_numpy(mask).to(device), seq_lens_cpu, n)


def run(bs: int, n: int, context: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    seq_lens = torch.as_tensor(rng.integers(context // 2, context * 3 // 2 + 1, bs))
    mask = rng.random(bs * n * n) < 0.3
    row = {"batch": bs, "width": n, "mean_context": round(float(seq_lens.float().mean()), 1)}
    assert torch.equal(per_request(mask, seq_lens, n), batched(mask, seq_lens, n))
    for name, fn in (("per_request", per_request), ("batched", batched)):
        with Count() as c:
            fn(mask, seq_lens, n)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn(mask, seq_lens, n)
            times.append((time.perf_counter() - t0) * 1e6)
        row[name] = {"ops": c.ops, "p50_us": round(float(np.median(times)), 1)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--contexts", default="16,1024")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [run(b, args.width, c, args.rounds) for c in map(int, args.contexts.split(","))
            for b in map(int, args.batch_sizes.split(","))]
    print(json.dumps(stamped({"rows": rows}), indent=1))


if __name__ == "__main__":
    main()

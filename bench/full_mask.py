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
                                        [--device cuda]

Prints JSON: per batch size and context length, the operations per step and the p50 µs per step
of each way (the host's time to return). ``--device cuda`` (a lent GPU; ``bench/gpu_run.sh`` runs
it) builds both on the GPU, NGRAM's side with its per-request host-to-device copies, the batched
side from n x n masks already on the GPU as NGRAM leaves them, and also reports ``done_p50_us``:
until the GPU has finished them (a ``torch.cuda.synchronize`` before and after each call).
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


def run(bs: int, n: int, context: int, rounds: int, device: str = "cpu") -> dict:
    rng = np.random.default_rng(0)
    seq_lens = torch.as_tensor(rng.integers(context // 2, context * 3 // 2 + 1, bs))
    mask = rng.random(bs * n * n) < 0.3
    on_device = torch.from_numpy(mask).to(device)  # NGRAM's one copy of the n x n masks, made either way
    ways = {"per_request": lambda: per_request(mask, seq_lens, n, device),
            "batched": lambda: full_tree_mask(on_device, seq_lens, n)}
    row = {"batch": bs, "width": n, "mean_context": round(float(seq_lens.float().mean()), 1)}
    assert torch.equal(ways["per_request"]().cpu(), ways["batched"]().cpu())
    cuda = device.startswith("cuda")
    for name, fn in ways.items():
        with Count() as c:
            fn()
        host, done = [], []
        for _ in range(rounds):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            host.append((time.perf_counter() - t0) * 1e6)
            if cuda:
                torch.cuda.synchronize()
                done.append((time.perf_counter() - t0) * 1e6)
        row[name] = {"ops": c.ops, "p50_us": round(float(np.median(host)), 1)}
        if cuda:
            row[name]["done_p50_us"] = round(float(np.median(done)), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--contexts", default="16,1024")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--device", default="cpu", help="where the masks are built (cuda: a GPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [run(b, args.width, c, args.rounds, args.device) for c in map(int, args.contexts.split(","))
            for b in map(int, args.batch_sizes.split(","))]
    print(json.dumps(stamped({"device": args.device, "rows": rows}), indent=1))


if __name__ == "__main__":
    main()

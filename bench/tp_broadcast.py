"""What handing rank 0's drafts to the other tensor-parallel ranks costs a decode step: the SGLang
worker's ``share_from_rank0`` (sglang_integration.width_states) between two processes of a gloo
group on 127.0.0.1, as SGLang's CPU group of ranks on one host is.

Each round both ranks meet at a barrier, then rank 0 shares a step's drafts (``batch`` requests,
every width of the planner's menu in turn up to the launch width 16) and each rank times its call.
The receiving rank's time is what its GPU waits for beyond rank 0's drafting.

    .venv/bin/python bench/tp_broadcast.py [--batch-sizes 16,64] [--rounds 1500]

Prints JSON: per batch size, p50 / p99 µs of the call on rank 0 and on rank 1. It runs over an
earlier commit with ``PYTHONPATH=<its tree>`` (a ``share_from_rank0`` without the launch width
argument is called without it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import socket
import time

import numpy as np

from sssd.bench.provenance import stamped

MENU = (1, 2, 3, 5, 9, 16)  # verify widths a step may have; the launch width is the last
WARMUP = 100


def _rank(rank: int, port: int, batches: list[int], rounds: int, out) -> None:
    import torch.distributed as dist

    from sglang_integration.width_states import share_from_rank0

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    with_max = "max_width" in inspect.signature(share_from_rank0).parameters
    rng = np.random.default_rng(0)
    rows = []
    for bs in batches:
        times = []
        for i in range(rounds + WARMUP):
            w = MENU[i % len(MENU)]
            mine = ((rng.integers(0, 128_000, bs * w), rng.random(bs * w * w) < 0.3, w) if rank == 0
                    else (None, None, None))
            extra = (MENU[-1],) if with_max else ()
            dist.barrier()
            t0 = time.perf_counter()
            _, _, got = share_from_rank0(mine[0], mine[1], bs, mine[2], dist.group.WORLD, *extra)
            if i >= WARMUP:
                times.append((time.perf_counter() - t0) * 1e6)
            assert got == w
        t = np.asarray(times)
        rows.append({"batch": bs, "p50_us": round(float(np.median(t)), 1), "p99_us": round(float(np.percentile(t, 99)), 1)})
    out.put((rank, rows))
    dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--rounds", type=int, default=1500)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, batches, args.rounds, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    rows = [{"batch": a["batch"], "rank0": {k: a[k] for k in ("p50_us", "p99_us")},
             "rank1": {k: b[k] for k in ("p50_us", "p99_us")}} for a, b in zip(results[0], results[1])]
    print(json.dumps(stamped({"menu": list(MENU), "rounds": args.rounds, "rows": rows}), indent=1))


if __name__ == "__main__":
    main()

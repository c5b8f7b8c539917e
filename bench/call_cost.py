"""What one compiled (numba) call costs by itself: its array arguments and its array outputs.

A decode step's critical path is a handful of compiled calls with Python between them, run
after the GPU's answer, when the caches have gone cold. This times calls that do (almost) no
work, so what is left is the call: typing and unboxing the arguments, allocating and boxing
what it returns. Each kind of call is timed hot (back to back), after a 6 ms sleep (as after a
verify) and after 64 MB of other memory was written (a cold cache); p50 µs of each. Prints JSON.

    .venv/bin/python bench/call_cost.py
"""

from __future__ import annotations

import json
import time

import numba
import numpy as np

from sssd.bench.provenance import stamped

ARGS = 34  # resolve_kernels.resolve's count
OUTPUTS = 7  # the arrays it returns


def _kernel(args: int, body: str, ret: str):
    names = ", ".join(f"a{i}" for i in range(args))
    ns = {"np": np}
    exec(f"def f(n, {names}):\n{body}    return {ret}\n", ns)  # noqa: S102 - generated signatures only
    return numba.njit(ns["f"])


def _fresh_outputs(k: int) -> str:
    return "".join(f"    o{i} = np.empty(n, np.int64)\n    o{i}[0] = {i}\n" for i in range(k))


def _p50_us(fn, before=None, repeat: int = 200) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e6, 2)


def main() -> None:
    arrays = [np.zeros(64, np.int64) for _ in range(ARGS)]
    kinds = {
        "2 arrays in, nothing out": (_kernel(2, "", "0"), arrays[:2]),
        f"{ARGS} arrays in, nothing out": (_kernel(ARGS, "", "0"), arrays),
        f"{ARGS} arrays in, 1 new array out": (_kernel(ARGS, _fresh_outputs(1), "o0"), arrays),
        f"{ARGS} arrays in, {OUTPUTS} new arrays out": (
            _kernel(ARGS, _fresh_outputs(OUTPUTS), ", ".join(f"o{i}" for i in range(OUTPUTS))), arrays),
        f"{ARGS} arrays in, {OUTPUTS} of them written and a count out": (
            _kernel(ARGS, "".join(f"    a{i}[0] = n\n" for i in range(OUTPUTS)), "n"), arrays),
    }
    junk = np.zeros(64 << 20, np.uint8)

    def sweep() -> None:
        junk[::64] += 1  # one write per cache line of 64 MB

    rows = []
    for label, (kernel, args) in kinds.items():
        call = lambda: kernel(64, *args)  # noqa: E731
        call()  # compiled before it is timed
        rows.append({"call": label, "hot_us": _p50_us(call, repeat=2000),
                     "after_sleep_us": _p50_us(call, lambda: time.sleep(0.006)),
                     "after_sweep_us": _p50_us(call, sweep, repeat=60)})
    print(json.dumps(stamped({"rows": rows})))


if __name__ == "__main__":
    main()

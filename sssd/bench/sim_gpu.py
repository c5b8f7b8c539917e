"""The serving simulation's GPU: how long a verify step of ``batch`` x ``width`` tokens takes.

``RooflineGPU``: client_sdk.drafting.budget.forward_time of Llama-3.1-8B on a datasheet preset,
at the step's mean context (the default). ``MeasuredGPU``: a verify-time table measured on a
real GPU by ``bench/gpu_decode.py`` (its ``cost_table``, at that script's fixed context), linear
between the measured widths and batches; the planner then starts from the roofline of the
table's device (the H100 preset for an H100, the H200 one otherwise), as a worker configured
for that GPU would.

``wait``: how the simulation's step thread waits out a verify. ``sleep`` gives the core away (a
worker that synchronises with ``cudaDeviceScheduleBlockingSync``). ``spin`` keeps it, as CUDA's
default does: ``cudaDeviceScheduleAuto`` spins while a process's CUDA contexts are fewer than its
cores, and PyTorch releases the GIL while it waits in ``.cpu()`` or an event's ``synchronize``, so
the spin here runs in compiled code without the GIL (the worker's other threads, such as the
datastore client's, go on meanwhile).
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from client_sdk.drafting.budget import PRESETS, Model, forward_time

# Llama-3.1-8B's shape (config.json of meta-llama/Llama-3.1-8B-Instruct), bf16
LLAMA_8B = Model(layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336, vocab=128256)
HARDWARE = "h100-sxm"
WAITS = ("sleep", "spin")  # how the step thread waits out a simulated verify (``wait``; sleep: the default)
_CLOCK_MONOTONIC = 1  # clock_gettime's clock id on Linux (time.monotonic's clock)


def wait(seconds: float, how: str = "sleep") -> None:
    """Wait ``seconds`` (<= 0: return at once) as ``how`` says: ``sleep``, or ``spin`` on this core
    without the GIL (the module docstring)."""
    if how not in WAITS:
        raise ValueError(f"GPU wait {how!r} is not one of {', '.join(WAITS)}")
    if seconds <= 0:
        return
    if how == "sleep":
        time.sleep(seconds)
        return
    _spinner()(int(seconds * 1e9), np.zeros(2, dtype=np.int64))  # (a struct timespec: seconds, nanoseconds)


@functools.cache
def _spinner():
    """The compiled spin loop over libc's clock_gettime: compiled on first use, not cached on disk
    (numba does not cache a function that calls through a ctypes pointer)."""
    from numba import njit

    clock = ctypes.CDLL(None).clock_gettime
    clock.argtypes = [ctypes.c_int, ctypes.c_void_p]
    clock.restype = ctypes.c_int

    @njit(nogil=True)
    def spin_for(ns: int, now: np.ndarray) -> None:
        address = now.ctypes.data
        clock(_CLOCK_MONOTONIC, address)
        deadline = now[0] * 1_000_000_000 + now[1] + ns
        while now[0] * 1_000_000_000 + now[1] < deadline:
            clock(_CLOCK_MONOTONIC, address)

    return spin_for


class RooflineGPU:
    def __init__(self, hardware: str = HARDWARE) -> None:
        self.hardware = hardware

    def check(self, batch: int) -> None:
        """Any batch can be simulated."""

    def seconds(self, batch: int, width: int, context: float) -> float:
        return forward_time(PRESETS[self.hardware], LLAMA_8B, batch, width, int(context))

    def seed(self, batch: int, width: int) -> float:
        """The planner's start-up cost of a step (at a context of 1024)."""
        return self.seconds(batch, width, 1024)

    def describe(self) -> dict:
        return {"model": "Llama-3.1-8B (bf16, roofline)", "hardware": self.hardware}


class MeasuredGPU:
    def __init__(self, path: str | Path) -> None:
        try:
            data = json.loads(Path(path).read_text())
            rows = data["cost_table"]["rows"]
            self.ms = {(int(r["batch"]), int(r["width"])): float(r["measured_ms"]) for r in rows}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a bench/gpu_decode.py result with a cost table ({exc})") from exc
        self.batches = sorted({b for b, _ in self.ms})
        self.widths = sorted({w for _, w in self.ms})
        missing = [(b, w) for b in self.batches for w in self.widths if (b, w) not in self.ms]
        if missing or 1 not in self.widths:
            raise ValueError(f"{path}: the cost table needs width 1 and every batch x width, missing {missing[:3]}")
        self.path, self.device = str(path), str(data.get("device", "unknown GPU"))
        self.preset = "h100-sxm" if "H100" in self.device else "h200"
        self.context = data.get("context")

    def check(self, batch: int) -> None:
        if not self.batches[0] <= batch <= self.batches[-1]:
            raise ValueError(f"batch {batch} is outside the measured cost table's batches "
                             f"{self.batches[0]}-{self.batches[-1]} ({self.path})")

    def seconds(self, batch: int, width: int, context: float) -> float:
        """The table's time (its own fixed context; ``context`` is not used)."""
        self.check(batch)
        if not 1 <= width <= self.widths[-1]:
            raise ValueError(f"width {width} is outside the measured widths 1-{self.widths[-1]} ({self.path})")
        return _between(batch, self.batches, lambda b: _between(width, self.widths, lambda w: self.ms[(b, w)])) / 1e3

    def seed(self, batch: int, width: int) -> float:
        return forward_time(PRESETS[self.preset], LLAMA_8B, batch, width, 1024)

    def describe(self) -> dict:
        return {"model": f"Llama-3.1-8B shape, verify times measured on {self.device} at context {self.context}",
                "hardware": f"{self.device} (measured: {self.path}; "
                            f"the planner starts from the {self.preset} roofline)"}


def _between(x: float, xs: list[int], f: Callable[[int], float]) -> float:
    """f at x, linear between the neighbouring grid points of sorted xs (x within them)."""
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return f(xs[i])
    lo, hi = xs[i - 1], xs[i]
    t = (x - lo) / (hi - lo)
    return f(lo) * (1 - t) + f(hi) * t

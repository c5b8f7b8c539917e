"""Latency summaries shared by the benchmarks."""

from __future__ import annotations

import os

import numpy as np

SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6}


def percentiles(samples_s, unit: str = "us", digits: int = 1, with_max: bool = False) -> dict[str, float] | None:
    """{"p50", "p99"[, "max"]} of durations given in seconds, in ``unit``; None for no samples."""
    if len(samples_s) == 0:
        return None
    x = np.asarray(samples_s, dtype=np.float64) * SCALE[unit]
    out = {"p50": round(float(np.percentile(x, 50)), digits), "p99": round(float(np.percentile(x, 99)), digits)}
    if with_max:
        out["max"] = round(float(x.max()), digits)
    return out


def process_cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far (utime + stime, from /proc), whichever cores it ran on."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

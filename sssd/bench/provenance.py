"""Where a benchmark result came from: the commit and the machine, attached to every result JSON."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import sssd

_ROOT = Path(__file__).resolve().parents[2]


def commit() -> str:
    """The checkout's commit, with "-dirty" when tracked files (results aside) differ from it;
    "unknown" outside git."""
    try:
        head = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        # results being written into bench/results do not make the code dirty
        dirty = subprocess.run(["git", "-C", str(_ROOT), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench/results"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    torch = sys.modules.get("torch")  # only when the benchmark loaded it: no import for the others
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def machine() -> dict:
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": _memory_gb(), "gpu": _gpu(), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def provenance() -> dict:
    return {"commit": commit(), "sssd": sssd.__version__, "machine": machine(),
            "utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def stamped(result: dict) -> dict:
    """``result`` with a "provenance" entry (the result's own keys first)."""
    return {**result, "provenance": provenance()}

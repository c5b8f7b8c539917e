"""The datastore process's memory: how many tokens it may hold by default, and giving freed heap
pages back to the OS."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v2, v1


def auto_live_tokens(bytes_per_token: int = 16) -> int:
    """Half the memory this process may use (the machine's, or its cgroup's limit when lower), in
    tokens of ``bytes_per_token`` (a segment holds ~8 B a token; a merge holds old and new)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in CGROUP_LIMITS:  # ("max" or a huge number: no limit)
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            memory = min(memory, int(limit))
    return memory // 2 // bytes_per_token


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them after large temporary builds)."""
    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):
            pass

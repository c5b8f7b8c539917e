"""numba's on-disk cache of the drafting kernels, dropped whenever any kernel source changed.

numba keys a cached compilation on the timestamp of the file that defines the function, not on
the files of the compiled functions it calls. After an edit or a ``git pull`` that changes
merge_kernels.py alone, parallel.py's cached kernel would still hold the old ``_draft_one`` compiled
into it, and draft differently from the serial kernel, silently. So the package hashes its
kernel sources together at import, and when the hash is not the one its cache was built from,
it deletes the cached compilations (numba rebuilds them at first use) before any is loaded.

Only the cache beside the sources is looked after: with ``NUMBA_CACHE_DIR`` set, or where the
package folder is read-only (numba then caches in a per-user folder), nothing is dropped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

STAMP = "kernel-sources.sha1"  # in __pycache__: the hash of the sources its compilations came from


def sources_digest(folder: Path, sources: Iterable[str]) -> str:
    h = hashlib.sha1()
    for name in sources:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return h.hexdigest()


def drop_stale(folder: Path, sources: Iterable[str]) -> bool:
    """Delete ``folder``/__pycache__'s numba files (*.nbi, *.nbc) unless they were built from
    these very ``sources`` (file names in ``folder``). True if any were deleted."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return False
    cache = folder / "__pycache__"
    digest = sources_digest(folder, sources)
    stamp = cache / STAMP
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:  # no stamp yet: whatever is cached may be stale
        pass
    dropped = False
    for f in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
        try:
            f.unlink()
            dropped = True
        except OSError:  # another process dropped it first, or the folder is read-only
            pass
    try:
        cache.mkdir(exist_ok=True)
        tmp = cache / f"{STAMP}.{os.getpid()}"
        tmp.write_text(digest)
        tmp.replace(stamp)
    except OSError:  # a read-only install: numba cannot cache here either
        pass
    return dropped

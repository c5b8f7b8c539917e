"""Where the command line keeps what it derives once and reuses (converted model weights,
tokenised datasets): ``$SSSD_CACHE``, else ``~/.cache/sssd`` (not the current directory)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

KEEP_DERIVED = 2  # versions of one source kept derived: this one and one more (another checkout's, say)


def cache_dir() -> Path:
    return Path(os.environ.get("SSSD_CACHE") or Path.home() / ".cache" / "sssd").expanduser()


def derived_name(source: Path) -> str:
    """The cache's name for what is derived from the file ``source``: its stem and a digest of its
    resolved path, size and modification time, so that another file of the same name, or this one
    changed (a package upgraded), is derived again rather than read stale."""
    import hashlib

    source = source.resolve()
    st = source.stat()
    digest = hashlib.sha256(f"{source}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"{source.stem}-{digest}"


def used(entry: Path) -> None:
    """Mark a cache entry as used now (its modification time, which ``prune_derived`` orders by)."""
    try:
        os.utime(entry)
    except OSError:  # (removed meanwhile, or a read-only cache: nothing to order then)
        pass


def prune_derived(entry: Path, suffix: str = "", keep: int = KEEP_DERIVED) -> list[str]:
    """Remove what the cache derived from other versions of ``entry``'s source (its stem, another
    path, size or time: another checkout's copy, or an install since replaced), all but the ``keep``
    most recently used, ``entry`` among them; returns the names removed. (Each converted SmolLM2 is
    514 MB, and every fresh install of the package derived one more, none ever removed.)"""
    name = entry.name[: len(entry.name) - len(suffix)]
    pattern = re.compile(re.escape(name[:-17]) + r"-[0-9a-f]{16}" + re.escape(suffix))
    others = []
    for other in entry.parent.iterdir():
        try:
            if other != entry and pattern.fullmatch(other.name):
                others.append((other.stat().st_mtime_ns, other))
        except OSError:  # another process removed it first
            continue
    removed = []
    for _, other in sorted(others, reverse=True)[max(keep - 1, 0):]:
        try:
            shutil.rmtree(other) if other.is_dir() else other.unlink()
            removed.append(other.name)
        except OSError:
            pass
    return removed


def write_cached(path: Path, write: Callable) -> None:
    """``write(file)`` into ``path`` through a temporary file renamed over it, so that a run killed
    while writing leaves no half-written cache for the next one to fail on; the directory is made
    first (one line naming a file in its way, before the work that fills it is lost)."""
    from datastore_service.store import make_directory

    make_directory(path.parent, f"the cache {path.parent} ($SSSD_CACHE)")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    tmp.replace(path)

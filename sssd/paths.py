"""Where the command line keeps what it derives once and reuses (converted model weights,
tokenised datasets): ``$SSSD_CACHE``, else ``~/.cache/sssd`` (not the current directory)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


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

"""Where the command line keeps what it derives once and reuses (converted model weights,
tokenised datasets): ``$SSSD_CACHE``, else ``~/.cache/sssd`` (not the current directory)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("SSSD_CACHE") or Path.home() / ".cache" / "sssd").expanduser()

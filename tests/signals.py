"""A real ``sssd serve`` process and signals to it, for the tests of what it does on one."""

import contextlib
import os
import signal
import time
from pathlib import Path

from sssd import serve_process

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def served(tmp_path: Path, *flags: str):
    """(process, address) of ``sssd serve`` on port 0 with ``flags``, its log in tmp_path/serve.log
    (read it after the block: the server is stopped on leaving it)."""
    with open(tmp_path / "serve.log", "w") as log:
        proc, address = serve_process.start_server(str(tmp_path / "served.db"), *flags, stderr=log, cwd=str(ROOT))
    try:
        yield proc, address
    finally:
        proc.terminate()
        proc.wait(30)


def sighup_until(proc, observe, expect: dict, timeout_s: float = 10.0) -> None:
    """Send ``proc`` SIGHUP, then wait until ``observe(key)`` is ``expect[key]`` for every key (the
    reload is the server's to do when its loop gets to it); assert it was, and that it still runs."""
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while {k: observe(k) for k in expect} != expect and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {k: observe(k) for k in expect} == expect and proc.poll() is None

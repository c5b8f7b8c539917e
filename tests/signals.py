"""Signals to a real ``sssd serve`` process, for the tests of what it does on one."""

import os
import signal
import time


def sighup_until(proc, observe, expect: dict, timeout_s: float = 10.0) -> None:
    """Send ``proc`` SIGHUP, then wait until ``observe(key)`` is ``expect[key]`` for every key (the
    reload is the server's to do when its loop gets to it); assert it was, and that it still runs."""
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while {k: observe(k) for k in expect} != expect and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {k: observe(k) for k in expect} == expect and proc.poll() is None

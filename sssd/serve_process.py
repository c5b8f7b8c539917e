"""``sssd serve`` as a child process (benchmarks and fault tests): started on port 0, its
address read from the first line it prints. It shuts down by itself when this process exits
without stopping it (``--parent-pid``), so a crashed benchmark leaves no server behind."""

from __future__ import annotations

import os
import subprocess
import sys


def start_server(db: str, *flags: str, cwd: str | None = None,
                 stderr=subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """(process, "host:port"). Raises RuntimeError, with what it printed, if it did not start.
    stderr: where its log goes (a file to read it)."""
    proc = subprocess.Popen([sys.executable, "-m", "sssd.cli", "serve", "--db", db, "--port", "0",
                             "--parent-pid", str(os.getpid()), *flags],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"sssd serve did not start: {line!r}")
    return proc, line.split()[-1]

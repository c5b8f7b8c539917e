"""bench/grpc_floor.py end to end at a tiny size: a bare gRPC server process and client
processes of every kind, each row with the server's and the clients' CPU per call."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_kind_reports_server_and_client_cpu():
    # the server's CPU comes from /proc, in clock ticks (10 ms): 20 calls (~10 ms of its CPU) read 0
    # ticks in a CI run, so each row makes 200 (6-10 ticks here)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "grpc_floor.py"), "--clients", "1", "--seconds", "2",
                          "--rate", "100", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["rows"]
    assert [r["server"] for r in rows] == ["aio-unary", "aio-stream", "sync-unary", "aio-unary-loop",
                                              "aio-unary-thread"]
    for row in rows:
        assert row["calls"] == 200 and row["clients"] == 1
        assert row["server_cpu_us_per_call"] > 0 and row["client_cpu_us_per_call"] > 0


def test_an_unknown_kind_is_refused():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "grpc_floor.py"), "--kinds", "carrier-pigeon"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "--kinds" in out.stderr

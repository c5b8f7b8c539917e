"""SIGKILL a real ``sssd serve`` subprocess during ingest streams and compaction.

Acknowledged = a unary Ingest call returned OK. After each kill the server restarts on the
same file and every acknowledged document must be there, intact. CI runs a few cycles; the
fault benchmark sets SSSD_SERVER_KILL_CYCLES=20.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from client_sdk.transport.remote import DatastoreClient
from sssd import serve_process

ROOT = Path(__file__).resolve().parent.parent
CYCLES = int(os.environ.get("SSSD_SERVER_KILL_CYCLES", "3"))


def start_server(db: str) -> tuple[subprocess.Popen, str]:
    return serve_process.start_server(db, "--maintenance-interval-s", "0.02", "--compaction-fanout", "2",
                                      "--synchronous", "NORMAL", cwd=str(ROOT))


def tokens_for(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 500, 50 + i % 200).astype(np.int32)


def load(address: str, start: int, acked: list[int], stop: threading.Event) -> None:
    """Unary ingests (acked on OK) + a bulk stream + full compactions, until the kill."""
    with DatastoreClient(address, timeout_s=5) as c:
        def stream():
            i = start + 10_000_000
            while not stop.is_set():
                yield [(f"s{i + j}", tokens_for(i + j)) for j in range(50)]
                i += 50

        def compactor():
            while not stop.is_set():
                try:
                    c.compact("ns", full=True, timeout_s=30)
                except grpc.RpcError:
                    return

        threads = [threading.Thread(target=lambda: _swallow(lambda: c.ingest_stream("ns", stream()))),
                   threading.Thread(target=compactor)]
        for t in threads:
            t.start()
        i = start
        while not stop.is_set():
            try:
                c.ingest("ns", [(f"d{i + j}", tokens_for(i + j)) for j in range(4)])
            except grpc.RpcError:
                break
            acked.extend(range(i, i + 4))
            i += 4
        for t in threads:
            t.join(timeout=10)


def _swallow(fn):
    try:
        fn()
    except grpc.RpcError:
        pass


def test_sigkill_server_during_stream_and_compaction(tmp_path):
    db = str(tmp_path / "kill.db")
    rng = random.Random(7)
    proc, address = start_server(db)
    with DatastoreClient(address) as c:
        c.create_namespace("ns", 500)
    acked: list[int] = []
    start = 0
    for cycle in range(CYCLES):
        stop = threading.Event()
        worker = threading.Thread(target=load, args=(address, start, acked, stop))
        worker.start()
        time.sleep(rng.uniform(0.5, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        worker.join(timeout=30)
        proc, address = start_server(db)
        with DatastoreClient(address, timeout_s=30) as c:
            stats = c.stats("ns").namespaces[0]
            assert stats.documents >= len(acked)
            for i in acked[-50:] + acked[:50]:
                probe = tokens_for(i)[:8]
                tree = c.lookup("ns", [probe[:4]])[0]
                assert tree.match_length == 4, f"acked d{i} not found after kill {cycle}"
        start = (max(acked) + 1000) if acked else start + 1000
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    from datastore_service.datastore import Datastore, DatastoreConfig

    ds = Datastore(DatastoreConfig(db=db))
    assert ds.check_integrity() == ""
    ns = ds.namespace("ns")
    missing = [i for i in acked if not ns.has_document(f"d{i}")]
    assert not missing, f"{len(missing)} acknowledged documents lost, e.g. d{missing[0]}"
    ds.close()


def _gone(pid: int) -> bool:
    """No such process, or one that has exited and waits to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _left_running(code: str, children: int) -> list[int]:
    """Run ``code`` in a parent process that prints its children's pids and SIGKILLs itself
    (no cleanup of any kind); the children still running 30 s later (killed now, so that a
    failing test leaves nothing behind)."""
    parent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert parent.returncode == -signal.SIGKILL
    pids = [int(p) for p in parent.stdout.split()]
    assert len(pids) == children
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [p for p in pids if not _gone(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    return alive


def test_a_child_server_outlives_no_crashed_parent(tmp_path):
    """A process that started ``sssd serve`` through serve_process and then died without
    stopping it leaves no server behind: the server notices it was orphaned and shuts down."""
    code = ("import os, signal\nfrom sssd import serve_process\n"
            f"proc, address = serve_process.start_server({str(tmp_path / 'orphan.db')!r})\n"
            "print(proc.pid, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    alive = _left_running(code, 1)
    assert not alive, f"the orphaned server {alive} was still running 30 s after its parent died"


def test_cpu_burners_of_a_killed_bench_stop_spinning():
    """``sssd bench decode --contention`` spins CPU burners; a bench killed without cleanup
    must not leave them burning the machine's cores."""
    code = ("import os, signal\nfrom sssd.bench.decode_bench import cpu_burners\n"
            "with cpu_burners(2) as procs:\n    print(*[p.pid for p in procs], flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    alive = _left_running(code, 2)
    assert not alive, f"burners {alive} still spinning 30 s after their bench was killed"


def test_a_serve_process_freezes_its_start_up_heap(tmp_path):
    """``sssd serve`` leaves start-up objects out of later garbage collections (and says how
    many on /metrics); a server embedded in another process (the tests' own) does not."""
    import gc
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, _ = serve_process.start_server(str(tmp_path / "gc.db"), "--metrics-port", str(port), cwd=str(ROOT))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    frozen = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("sssd_gc_frozen_objects ")]
    assert frozen and frozen[0] > 10_000  # imports, kernels and the datastore: far more than a handful
    assert gc.get_freeze_count() == 0

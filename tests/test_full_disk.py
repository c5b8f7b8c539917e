"""A restart on a full disk: one line, exit 1, and the data intact once space is freed.

The disk is a 3 MiB tmpfs mounted in a private user+mount namespace (``unshare -rm``), so the
test needs no root; it is skipped where the kernel does not allow such namespaces."""

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    set -eu
    mount -t tmpfs -o size=3m tmpfs "$DIR"
    "$PY" - <<'PY'
    import os
    import numpy as np
    from datastore_service.core import Document, NamespaceSpec
    from datastore_service.datastore import Datastore, DatastoreConfig
    ds = Datastore(DatastoreConfig(db=os.environ["DIR"] + "/d.db"))
    ds.create_namespace(NamespaceSpec("ns", 1000))
    rng = np.random.default_rng(0)
    ds.ingest("ns", [Document(f"d{i}", rng.integers(0, 1000, 100).astype(np.int32)) for i in range(200)])
    ds.close()
    PY
    dd if=/dev/zero of="$DIR/filler" bs=4k 2>/dev/null || true
    set +e
    "$PY" -m sssd.cli serve --db "$DIR/d.db" --port 0 2>"$DIR/../err"
    echo "exit=$?"
    set -e
    rm "$DIR/filler"
    "$PY" -c "
    import os
    from datastore_service.datastore import Datastore, DatastoreConfig
    ds = Datastore(DatastoreConfig(db=os.environ['DIR'] + '/d.db'))
    print('documents=%d' % ds.stats()[0].counts.documents)
    ds.close()"
""")


def _unshare_works() -> bool:
    """Whether this kernel lets an unprivileged user mount a tmpfs in a private namespace."""
    import tempfile

    exe = shutil.which("unshare")
    if not exe:
        return False
    with tempfile.TemporaryDirectory() as where:
        probe = subprocess.run([exe, "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", where],
                               capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user+mount namespaces and tmpfs mounts (unshare -rm)")
def test_a_restart_on_a_full_disk_is_one_line_and_loses_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    out = subprocess.run([shutil.which("unshare"), "-rm", "bash", "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300, env={"DIR": str(disk), "PY": sys.executable, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    err = (tmp_path / "err").read_text().strip().splitlines()
    assert "exit=1" in out.stdout
    assert len(err) == 1 and err[0].startswith("sssd: error: cannot open") and "the disk is full" in err[0], err
    assert "documents=200" in out.stdout  # every acknowledged document is still there


FEEDBACK = textwrap.dedent("""
    set -eu
    mount -t tmpfs -o size=3m tmpfs "$DIR"
    "$PY" - <<'PY'
    import os, subprocess
    from client_sdk.transport.feedback import FeedbackSink
    from client_sdk.transport.remote import DatastoreClient
    from datastore_service.embedded import EmbeddedServer
    from datastore_service.server import ServerConfig
    d = os.environ["DIR"]
    with EmbeddedServer(ServerConfig.of(db=d + "/d.db", port=0, grace_s=0.5)) as server:
        client = DatastoreClient(server.address, timeout_s=5)
        client.create_namespace("ns", 1000)
        subprocess.run(["dd", "if=/dev/zero", "of=" + d + "/filler", "bs=4k"], capture_output=True)
        sink = FeedbackSink(client, "ns", "w", batch=8, interval_s=3600, min_tokens=1)  # (6 < 8: no wake)
        for i in range(6):
            sink.submit(str(i), [(i * 7 + j) % 1000 for j in range(20000)])
        print("while full: flushed=%s failed=%d resends=%d kept=%d"
              % (sink.flush(), sink.failed, sink.resends, len(sink._queue) + sink.sent))
        os.remove(d + "/filler")
        print("with room: flushed=%s sent=%d documents=%d"
              % (sink.flush(), sink.sent, client.stats("ns").namespaces[0].documents))
        sink.close()
        client.close()
    PY
""")


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user+mount namespaces and tmpfs mounts (unshare -rm)")
def test_feedback_keeps_its_generations_while_the_datastores_disk_is_full(tmp_path):
    """The service answers RESOURCE_EXHAUSTED while its disk is full: the sink keeps what it holds
    (within its bounds) and sends it once there is room (it dropped every batch meanwhile)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    out = subprocess.run([shutil.which("unshare"), "-rm", "bash", "-c", FEEDBACK], capture_output=True, text=True,
                         timeout=300, env={"DIR": str(disk), "PY": sys.executable, "PATH": "/usr/bin:/bin"},
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr[-2000:]
    # every generation kept or stored (SQLite's free pages may take one or two), none dropped
    assert re.search(r"while full: flushed=False failed=0 resends=[1-9]\d* kept=6", out.stdout), out.stdout
    assert "with room: flushed=True sent=6 documents=6" in out.stdout, out.stdout

"""Child process for the SIGKILL tests: ingests forever, printing each acknowledged id.

Usage: python -m tests.crash_child DB_PATH START_ID. Maintenance runs every 10 ms with a
fan-out of 2, so flushes and compactions overlap the ingests and the kill.
"""

import sys

import numpy as np

from datastore_service.core import Document, NamespaceSpec
from datastore_service.datastore import Datastore, DatastoreConfig
from sssd_wire.errors import AlreadyExists


def tokens_for(doc_id: int) -> np.ndarray:
    rng = np.random.default_rng(doc_id)
    return rng.integers(0, 50, int(rng.integers(1, 200))).astype(np.int32)


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    ds = Datastore(DatastoreConfig(db=path, maintenance_interval_s=0.01, compaction_fanout=2))
    try:
        ds.create_namespace(NamespaceSpec("crash", 50))
    except AlreadyExists:
        pass
    ds.start_maintenance()
    print("ready", flush=True)
    i = start
    while True:
        batch = list(range(i, i + 8))
        ds.ingest("crash", [Document(f"doc{j}", tokens_for(j)) for j in batch])
        if i % 64 == 0:
            # announced first: a kill between the durable delete and its "deleted" line must
            # not read as a lost document
            print(f"deleting doc{i - 3}", flush=True)
            ds.delete("crash", [f"doc{i - 3}"])
            print(f"deleted doc{i - 3}", flush=True)
        print("acked " + " ".join(map(str, batch)), flush=True)
        i += 8


if __name__ == "__main__":
    main()

"""Reproducible codegen for proto/ -> sssd_wire/v1/*_pb2*.py (the wire contract's package).

``python -m sssd.codegen`` regenerates; ``python -m sssd.codegen --check`` regenerates into
a temporary folder and exits 1 when the committed files differ (stale or hand-edited).
Generated modules use absolute imports (``from sssd_wire.v1 import ...``), matching the proto
file's path, so they import unchanged from the service and the SDK. The proto *package* is
``sssd.datastore.v1`` (what travels on the wire); only the file's location names the module.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTOS = ["sssd_wire/v1/datastore.proto"]
OUTPUTS = ["datastore_pb2.py", "datastore_pb2.pyi", "datastore_pb2_grpc.py"]
GEN_DIR = "sssd_wire/v1"


def generate(out: Path) -> None:
    from grpc_tools import protoc

    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + [str(PROTO_ROOT / p) for p in PROTOS]) != 0:
        raise SystemExit("protoc failed")


def stale() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return [
            name for name in OUTPUTS
            if not (ROOT / GEN_DIR / name).exists()
            or not filecmp.cmp(Path(tmp) / GEN_DIR / name, ROOT / GEN_DIR / name, shallow=False)
        ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        if bad:
            print(f"generated code is stale: {', '.join(bad)}; run python -m sssd.codegen", file=sys.stderr)
            return 1
        print("generated code is up to date")
        return 0
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

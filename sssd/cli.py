"""The ``sssd`` command line. Each subcommand lives in its own module and registers here.

A failed command prints one line ``sssd: error: <reason>`` to stderr and exits 1 (argparse's
usage errors exit 2).
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import logging
import os
import sys
from collections.abc import Callable

from sssd_wire.errors import DatastoreError, one_line

# gRPC's C core prints INFO lines of its own on stderr (a TLS handshake that failed: one per
# connection attempt, each retry of a misconfigured client), beside the one line an error is
# said in; read when grpc is first imported (the subcommands' modules, below). GRPC_VERBOSITY=INFO
# shows them.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from sssd.commands import register_all

    parser = argparse.ArgumentParser(prog="sssd", description="Simply-Scalable Speculative Decoding")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"sssd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    register_all(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sssd")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    if not faulthandler.is_enabled():  # a crash in native code (numba kernels, gRPC) prints every thread's stack
        try:
            faulthandler.enable()
        except (AttributeError, ValueError, io.UnsupportedOperation):  # a stderr without a file descriptor
            pass  # (embedded in a host that replaced sys.stderr): nothing to write the stacks to
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except (DatastoreError, OSError, ValueError) as exc:
        print(f"sssd: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a datastore call outside the client commands (e.g. bench replay --address)
        import grpc

        if not isinstance(exc, grpc.RpcError):
            raise
        print(f"sssd: error: datastore {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

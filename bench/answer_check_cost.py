"""What checking a datastore answer as it is decoded adds (``sssd_wire.codec.check_tries``): one
``tries_from_proto`` call with the check and with it replaced by nothing, for answers of 1 trie of
8 nodes, 16 of 64 and 64 of 64; and what a decode step's batch and width check costs
(``client_sdk.drafting.config.step_shape``). Best of 7 repeats of 3,000 calls (the step check:
100,000), µs per call; prints JSON.

    .venv/bin/python bench/answer_check_cost.py
"""

from __future__ import annotations

import json
import timeit

import numpy as np

from client_sdk.drafting.config import step_shape
from sssd.bench.provenance import stamped
from sssd_wire import codec
from sssd_wire.v1 import datastore_pb2 as pb


def answer(tries: int, nodes: int) -> pb.LookupResponse:
    """An answer of ``tries`` chains of ``nodes`` nodes each."""
    n = tries * nodes
    return pb.LookupResponse(tokens=np.ones(n, "<i4").tobytes(), counts=np.ones(n, "<i4").tobytes(),
                             parents=np.tile(np.arange(-1, nodes - 1, dtype="<i4"), tries).tobytes(),
                             node_offsets=np.arange(0, n + 1, nodes, dtype="<i8").tobytes(),
                             match_lengths=np.ones(tries, "<i4").tobytes(), occurrences=np.ones(tries, "<i8").tobytes(),
                             sampled=np.ones(tries, "<i4").tobytes())


def best_us(call, number: int) -> float:
    return round(min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6, 2)


def main() -> None:
    rows, check = [], codec.check_tries
    for tries, nodes in ((1, 8), (16, 64), (64, 64)):
        r = answer(tries, nodes)
        codec.tries_from_proto(r)  # (compiles or loads the check)
        checked = best_us(lambda: codec.tries_from_proto(r), 3000)
        codec.check_tries = lambda batch: None
        try:
            bare = best_us(lambda: codec.tries_from_proto(r), 3000)
        finally:
            codec.check_tries = check
        rows.append({"tries": tries, "nodes": nodes, "decode_us": bare, "decode_and_check_us": checked})
    print(json.dumps(stamped({"rows": rows, "step_shape_us": best_us(lambda: step_shape(32, 17), 100_000)})))


if __name__ == "__main__":
    main()

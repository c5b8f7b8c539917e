"""Brute-force reference for datastore lookups: scans the raw documents."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def occurrences(docs: Iterable[Sequence[int]], pat: Sequence[int]) -> list[tuple[int, ...]]:
    """For each occurrence of pat inside a document, the tokens that follow it in that document."""
    out = []
    k = len(pat)
    pat = list(pat)
    for doc in docs:
        doc = list(doc)
        for i in range(len(doc) - k + 1):
            if doc[i : i + k] == pat:
                out.append(tuple(doc[i + k :]))
    return out


def expected(docs: list[Sequence[int]], context: Sequence[int], max_match: int, min_match: int,
             min_occurrences: int, depth: int) -> tuple[int, int, dict[tuple[int, ...], int]]:
    """(match_length, occurrences, {path: count}) the index must return with no sampling."""
    tail = list(context)[-max_match:]
    for k in range(len(tail), min_match - 1, -1):
        follows = occurrences(docs, tail[len(tail) - k :])
        if len(follows) >= min_occurrences:
            paths: dict[tuple[int, ...], int] = {}
            for f in follows:
                for d in range(1, min(depth, len(f)) + 1):
                    paths[f[:d]] = paths.get(f[:d], 0) + 1
            return k, len(follows), paths
    return 0, 0, {}

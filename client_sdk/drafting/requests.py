"""One running request as the Speculator keeps it: its own-text index (built in a background
thread for long prompts), and what the last step prepared for the next one."""

from __future__ import annotations

import itertools
import numbers
from concurrent.futures import Future

import numpy as np

from client_sdk.drafting.cache import pad_tail
from client_sdk.drafting.local import IndexBatch, LocalIndex
from client_sdk.types import SMALL_BATCH, DraftTree
from sssd_wire.types import MAX_TOKEN_ID, listed, token_array


def ints(tokens, request_id) -> list[int]:
    """Committed tokens as a list of Python ints: a list as it is (an engine's ``tolist()``;
    ``check_tokens`` checks its values), anything else (a numpy array, a torch tensor, a tuple)
    through ``token_array``, which refuses floats and nesting with a one-line ValueError naming
    the request (a float array was truncated into the request's text)."""
    if isinstance(tokens, list):
        return tokens
    return token_array(tokens, f"the tokens committed for request {request_id!r}").tolist()


def check_tokens(request_ids, tokens: list[list[int]]) -> None:
    """A one-line ValueError naming the first request whose committed tokens are not token ids,
    before any is committed: a negative one (an engine's -1 pad, say) went into the request's
    text and came back in its drafts, which the model then took as an embedding index; one past
    int32 failed a step's commit halfway; a float was truncated into the text, a string or None
    failed in Python's words."""
    for rid, toks in zip(request_ids, tokens):
        if not toks:
            continue
        try:  # (one float anywhere makes the sum one; numpy's integers sum to theirs)
            whole = type(total := sum(toks)) is int or isinstance(total, numbers.Integral)
        except TypeError:
            whole = False
        if not whole:
            bad = next((t for t in toks if isinstance(t, bool) or not isinstance(t, numbers.Integral)), toks)
            raise ValueError(f"the tokens committed for request {rid!r} hold {bad!r}, not a token id")
        if min(toks) < 0 or max(toks) > MAX_TOKEN_ID:
            low = min(toks)
            raise ValueError(f"the tokens committed for request {rid!r} hold {low if low < 0 else max(toks)}, "
                             "not a token id")


def packed_tokens(request_ids, tokens: list[list[int]], total: int) -> np.ndarray:
    """A step's committed tokens back to back (int32 [total]), checked as ``check_tokens`` checks them
    (one pass over the packed array; the lists are read only when it fails) but for floats, which
    the packing truncates: checking every list costs several times the packing at batch 64
    (BENCHMARKS.md, "What checking the committed tokens adds to a step")."""
    try:
        flat = np.fromiter(itertools.chain.from_iterable(tokens), dtype=np.int32, count=total)
    except (OverflowError, TypeError, ValueError):  # (None: int()'s words; "x": numpy's)
        flat = None
    if flat is None or (total and flat.min() < 0):
        check_tokens(request_ids, tokens)
    return flat


class UnknownRequest(KeyError):
    """A request id the Speculator does not hold."""

    def __str__(self) -> str:
        return f"request {self.args[0]!r} is not in flight here: never started (Speculator.start), or finished"


def states(requests: dict, request_ids) -> list:
    """The RequestState of each id, in order; UnknownRequest (a KeyError) for the first unknown one,
    a one-line ValueError for one string given as the ids (it was read as one id per character:
    ``draft("r")`` drafted for "r", ``draft("ab")`` for "a" and "b", when they ran)."""
    listed(request_ids, "request ids")
    try:
        return [requests[rid] for rid in request_ids]
    except KeyError as exc:
        raise UnknownRequest(exc.args[0]) from None


def committing(requests: dict, request_ids, **given) -> list:
    """``states`` of a step's committed requests, checked before anything changes: no id twice, and
    each of ``given`` (tokens=, trees=, ...; None: not given) one entry per id (zip dropped the
    extra entries, or the last ids)."""
    reqs = states(requests, request_ids)
    if len(set(request_ids)) != len(request_ids):
        raise ValueError(f"a request appears twice among the {len(request_ids)} committed at once")
    for name, values in given.items():
        if values is not None and len(values) != len(request_ids):
            raise ValueError(f"{len(request_ids)} request ids committed with {len(values)} {name}")
    return reqs


def check_paths(request_ids, trees, accepted, tokens) -> None:
    """A one-line ValueError naming the first request whose accepted nodes (accepted[i], with its
    draft trees[i]; None: not given) are not a path of its draft from the root, or are not the
    first of the tokens committed with them (tokens[i]; a step cut at its EOS or token limit
    commits fewer): the calibration learned a node past the draft as an IndexError at the next
    prefetch, away from the call that gave it, and a negative one, one off the path, or one the
    model did not say, as another node accepted."""
    for rid, tree, path, toks in zip(request_ids, trees, accepted, tokens):
        if tree is None or path is None:
            continue
        parents, above, toks = tree.parents, -1, ints(toks, rid)
        for i, node in enumerate(path):
            if not 0 <= node < parents.shape[0] or parents[node] != above:
                raise ValueError(f"the accepted nodes {list(path)} of request {rid!r} are not a path from the root "
                                 f"of its {parents.shape[0]}-node draft (node {node})")
            if i < len(toks) and toks[i] != tree.tokens[node]:
                raise ValueError(f"the accepted nodes {list(path)} of request {rid!r} are not its committed tokens "
                                 f"{toks[: len(path)]}: node {node} is token {tree.tokens[node]}")
            above = node


def history_of(reqs: list, indexes: IndexBatch, width: int) -> tuple[IndexBatch, np.ndarray]:
    """``tails_of``, for a few requests one tail each (cheaper than the arrays)."""
    if len(reqs) < SMALL_BATCH:
        hist = np.full((len(reqs), width), -1, dtype=np.int32)
        for i, r in enumerate(reqs):
            tail = r.tail(width)
            hist[i, width - tail.shape[0] :] = tail
        return indexes, hist
    return tails_of(reqs, indexes, width)


def tails_of(reqs: list, indexes: IndexBatch, width: int) -> tuple[IndexBatch, np.ndarray]:
    """(indexes with their slots, [len(reqs), width] int32: each request's last ``width`` tokens,
    -1 before a shorter text): the longest suffix the datastore is asked for."""
    indexes, ends = indexes.tails(width)
    if None in indexes.indexes:  # not indexed yet: the request keeps its end
        for i, x in enumerate(indexes.indexes):
            if x is None:
                ends[i] = pad_tail(reqs[i].tail(width), width)
    return indexes, ends


NO_TREE = DraftTree.empty()  # the tree of a request not drafted for (shared: trees are never modified in place)


class RequestState:
    """Not thread-safe (the scheduler thread), except that the index may be built in another."""

    __slots__ = ("prompt_len", "_local", "_building", "_queued", "_tail", "tree", "pick", "bonus", "last")

    def __init__(self, tokens: np.ndarray, prompt_len: int, ngram: int, builder=None) -> None:
        """builder: an executor to build the index in (None: here and now)."""
        self.prompt_len = prompt_len
        self._local: LocalIndex | None = None
        self._building: Future | None = None
        self._queued: list[np.ndarray] = []  # committed while the index was being built
        self._tail = tokens[-64:].copy()  # the context's end, readable while the index is built
        self.last = int(tokens[-1]) if tokens.shape[0] else -1  # the last committed token
        if builder is None:
            self._local = LocalIndex(tokens, ngram)
        else:
            self._building = builder.submit(LocalIndex, tokens, ngram)
        self.tree = NO_TREE  # the tree of the step being verified
        self.pick: list[int] | None = None  # the prefetched context slots of the end its last commit was
        self.bonus = -1

    def index(self, wait: bool = False) -> LocalIndex | None:
        """The own-text index, or None while it is still being built (``wait``: block until it is)."""
        if self._local is None and (wait or self._building.done()):
            self._local = self._building.result()
            self._building = None
            if self._queued:
                self._local.extend(np.concatenate(self._queued))
                self._queued = []
        return self._local

    def extend(self, tokens: np.ndarray) -> None:
        if tokens.shape[0]:
            self.last = int(tokens[-1])
        local = self.index()
        if local is None:
            self._queued.append(tokens)
            self._tail = np.concatenate([self._tail, tokens])[-64:]
        else:
            local.extend(tokens)

    def tail(self, n: int) -> np.ndarray:
        """The last n committed tokens (n <= 64)."""
        local = self._local
        return local.tokens[-n:] if local is not None else self._tail[-n:]

    def generated(self) -> np.ndarray:
        return self.index(wait=True).tokens[self.prompt_len :].copy()

"""Outcome-speculative prefetch: ask the datastore, while a step verifies, for every context
the step is likely to end in, so that the next step's tries are at hand when it starts.

A step that verifies draft tree T ends with the deepest accepted node v of T (or nothing
accepted: the root) followed by the bonus token b, which only verification reveals. The
datastore is therefore asked for the context ending at v, one level deeper than drafting
needs; once verification says (v, b), the trie's root-level node of token b and its subtree
is the trie of the committed context (step_kernels.descend_tries): one match token longer, its
occurrences those that continue with b.

Candidates are ranked by the probability that each is the deepest accepted node: with node
scores read as acceptance probabilities, P(v deepest) = score(v) - sum of its children's
scores, and P(root) = 1 - sum of the root-level scores.
"""

from __future__ import annotations

import logging

import numpy as np

from client_sdk.drafting import resolve_kernels, step_kernels
from client_sdk.drafting.cache import NO_CACHE as _NO_CACHE, TrieCache, tail_keys, unpad
from client_sdk.drafting.unigrams import UnigramTable
from client_sdk.types import SMALL_BATCH, DraftBatch, DraftTree
from sssd_wire.types import TrieBatch

ROOT = -1
ON_TIME = 8  # prefetches in time before one more end per request is asked for (Pacing)
log = logging.getLogger(__name__)


class Pacing:
    """How much a prefetch asks for: ``now`` likely ends per request, each context sampled from
    ``samples`` occurrences. An answer back late makes the next ask smaller (it arrives sooner):
    first the samples fall to ``fewest_samples``, then the ends halve. After every ON_TIME
    answers in time it grows by a step: one more end up to ``most``, then the samples back to
    ``most_samples`` (additive increase, multiplicative decrease): a datastore that falls behind
    is asked for less, not given up on."""

    def __init__(self, most: int, samples: int = 64, fewest_samples: int | None = None) -> None:
        self.most = self.now = most
        self.most_samples = self.samples = samples
        self.fewest_samples = samples if fewest_samples is None else min(samples, fewest_samples)
        self._on_time = 0
        self.capped = 0  # prefetches cut to fit the service's cap on contexts (``within``)

    def within(self, drafted: list, lengths: int, cap: int) -> tuple[list, int]:
        """The requests that ask and the ends each asks so that a prefetch asks at most ``cap``
        contexts (``lengths`` per end; the service refuses a larger Lookup): ``now`` ends each
        while they fit, else fewer, else one each for the first requests only (the rest ask
        none). A cut one is counted in ``capped``, the first said in the log."""
        ends = min(self.now, cap // max(len(drafted) * lengths, 1))
        if ends == self.now:
            return drafted, ends
        self.capped += 1
        if self.capped == 1:
            log.warning("a prefetch for %d requests asks %d ends each at most, to stay within %d contexts per "
                        "lookup (SSSD_MAX_LOOKUP_CONTEXTS, at most the service's --max-lookup-contexts); "
                        "counted in Pacing.capped", len(drafted), max(ends, 1), cap)
        return (drafted, ends) if ends else (drafted[: cap // lengths], 1)

    def arrived(self, in_time: bool) -> None:
        if not in_time:
            if self.samples > self.fewest_samples:
                self.samples = self.fewest_samples
            else:
                self.now = max(1, self.now // 2)
            self._on_time = 0
            return
        self._on_time += 1
        if self._on_time < ON_TIME:
            return
        if self.now < self.most:
            self.now, self._on_time = self.now + 1, 0
        elif self.samples < self.most_samples:
            self.samples, self._on_time = self.most_samples, 0


def deepest_probabilities(tree: DraftTree) -> tuple[float, np.ndarray]:
    """(P(nothing accepted), P(node i is the deepest accepted) per node)."""
    if len(tree) == 0:
        return 1.0, np.zeros(0)
    under = np.zeros(len(tree))
    inner = tree.parents >= 0
    np.add.at(under, tree.parents[inner], tree.scores[inner])
    root = float(max(0.0, 1.0 - tree.scores[~inner].sum()))
    return root, np.maximum(tree.scores - under, 0.0)


def candidates(tree: DraftTree, k: int) -> list[int]:
    """The k likeliest ends of verifying ``tree``, best first: node indices, ROOT for none accepted.
    (The definition that ``step_kernels.likely_ends`` computes for a whole step; tests compare them.)"""
    root, p = deepest_probabilities(tree)
    order = np.argsort(-p, kind="stable")[:k].tolist()
    pos = int(np.searchsorted(-p[order], -root, side="right")) if order else 0  # ties: nodes first
    return (order[:pos] + [ROOT] + order[pos:])[:k] if k > 0 else []


def path_tokens(tree: DraftTree, node: int) -> list[int]:
    """The tokens from the root down to ``node`` (empty for ROOT)."""
    out = []
    while node >= 0:
        out.append(int(tree.tokens[node]))
        node = int(tree.parents[node])
    return out[::-1]


def ask_for_ends(batch: DraftBatch, rows: np.ndarray, history: np.ndarray, per_request: int,
                 lengths: tuple[int, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """What to ask the datastore while ``batch`` verifies: the contexts of the ``per_request``
    likeliest ends of each draft rows[i] (``candidates``' order), each cut to every suffix length
    in ``lengths``, deduplicated in that order; and the table of where each end's answers will
    be: row offsets[b] + v for node v of draft b, row N + b for "nothing accepted" (N: the
    batch's nodes), one column per suffix length, -1 for an end not asked. history[i]: the
    request's last max(lengths) tokens, -1 before a shorter text (``cache.pad_tail``)."""
    width = history.shape[1]
    ends = np.full((batch.tokens.shape[0] + len(batch), len(lengths)), -1, dtype=np.int64)
    if not rows.shape[0] or per_request <= 0:
        return [], ends
    owner, node, ctx = step_kernels.likely_ends(batch.tokens, batch.parents, batch.scores, batch.offsets, rows,
                                                history, per_request)
    cut = np.arange(width) < width - np.asarray(lengths)[:, None]  # [S, W]: the positions each length drops
    asked = np.where(cut[None], np.int32(-1), ctx[:, None, :]).reshape(-1, width)  # end by end, length by length
    index: dict[bytes, int] = {}
    slots = [index.setdefault(key, len(index)) for key in tail_keys(asked)]
    row = rows[owner]
    at = np.where(node >= 0, batch.offsets[row] + node, batch.tokens.shape[0] + row)
    ends[at] = np.asarray(slots, dtype=np.int64).reshape(-1, len(lengths))
    first = np.full(len(index), -1, dtype=np.int64)
    first[np.asarray(slots)[::-1]] = np.arange(len(slots) - 1, -1, -1)  # each context's first asking row
    return [unpad(asked[j]) for j in first.tolist()], ends


def pick_ends(ends: np.ndarray, batch: DraftBatch, rows, end, valid) -> list[list[int] | None]:
    """Each committed request's row of ``ends`` (``ask_for_ends``; None: its end was not asked):
    rows[i] is its draft's row in ``batch`` (-1: none), end[i] the last node of the path it
    accepted (-1: nothing accepted), valid[i] whether its committed tokens are that path and a
    bonus token (else the answers are for another context)."""
    if len(rows) < SMALL_BATCH:  # a few requests: Python ints are cheaper than numpy calls
        offsets, nodes, out = batch.offsets.tolist(), batch.tokens.shape[0], []
        for row, e, ok in zip(rows, end, valid):
            got = ends[offsets[row] + e if e >= 0 else nodes + row] if row >= 0 and ok else None
            out.append(got.tolist() if got is not None and got[0] >= 0 else None)
        return out
    rows, end = np.asarray(rows, dtype=np.int64), np.asarray(end, dtype=np.int64)
    ok = (rows >= 0) & np.asarray(valid, dtype=bool)
    if not ok.any():  # (also: an empty step's table has no row to read)
        return [None] * rows.shape[0]
    at = np.where(end >= 0, batch.offsets[np.maximum(rows, 0)] + end, batch.tokens.shape[0] + rows)
    got = ends[np.where(ok, at, 0)]
    ok &= got[:, 0] >= 0
    return [g if k else None for g, k in zip(got.tolist(), ok.tolist())]


def descend(batch: TrieBatch, src: np.ndarray, bonus: np.ndarray) -> TrieBatch:
    """Trie j of the result: trie src[j] of ``batch`` descended by bonus[j] (see the module
    docstring; src[j] = -1 or no such child: empty; bonus[j] = -1: the trie as it is). A src
    beyond the batch is a ValueError: the compiled kernel does not check its reads."""
    src = np.asarray(src, np.int64)
    if src.shape[0] and int(src.max()) >= len(batch):
        raise ValueError(f"trie {int(src.max())} asked of a batch of {len(batch)}")
    tok, par, cnt, offs, meta = step_kernels.descend_tries(batch.tokens, batch.parents, batch.counts, batch.node_offsets,
                                                      batch.meta, src, np.asarray(bonus, np.int64))
    return TrieBatch(tok, par, cnt, offs, meta)


NO_HISTORY = np.zeros((0, 1), dtype=np.int32)
_NO_TABLE = TrieBatch.empty()


def _picks(reqs, per: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """(src [n * per], bonus [n * per], requests that picked an end, those whose longest suffix
    has an answer, the largest trie picked) of ``reqs``: Python lists, then one array each
    (cheaper than numpy calls per request at every batch size)."""
    src: list[int] = []
    bonus: list[int] = []
    none = [-1] * per
    picked = answered = 0
    top = -1
    for r in reqs:
        p = r.pick
        if p is None:
            src += none
            bonus += none
            continue
        src += p
        bonus += [r.bonus] * per
        picked += 1
        answered += p[0] >= 0
        top = max(top, max(p))
    return np.array(src, dtype=np.int64), np.array(bonus, dtype=np.int64), picked, answered, top


def resolve_picks(got: TrieBatch | None, reqs, lengths: tuple[int, ...], counts: dict, last: np.ndarray,
                  history: np.ndarray = NO_HISTORY, unigrams: UnigramTable | None = None, settled: int = -1,
                  cache: TrieCache | None = None, limit: int = 0,
                  rows_asked: int = -1) -> tuple[TrieBatch, np.ndarray, np.ndarray]:
    """The committed contexts' tries of ``reqs`` (RequestState: ``pick``, a request's prefetched
    slots, one per suffix length in ``lengths``, or None; ``bonus``), from the prefetch answer
    ``got`` (None: nothing arrived), then the single-token table (the 1-token slots, by the
    requests' ``last`` tokens), then ``cache`` (but for the ``settled`` length's slots), in one
    compiled pass (resolve_kernels). Returns (the batch, the slots still empty but the settled
    length's, their padded tails [m, W]): with ``history`` (each request's last W tokens, -1
    before a shorter text), else no slot is reported missed.

    Counts 'prefetched' and 'arrived'; an answer that does not hold a pick (another prefetch's)
    is counted in 'misaligned', warned about once and not read. A table before its first
    complete pass fills its slots after the cache (one ``get`` per slot; a slot it fills may
    still be reported missed: its tail is then asked for once more, harmlessly).

    ``limit`` > 0 leaves out the nodes deeper than it (a draft at most that deep never reads them;
    the trie cache keeps whole tries). ``rows_asked`` >= 0: the answer's first this many tries are
    the prefetched contexts' (the cache fills asked with them follow)."""
    per = len(lengths)
    src, bonus, picked, answered, top = _picks(reqs, per)
    counts["prefetched"] += picked
    held = len(got) if got is not None else 0
    held = held if rows_asked < 0 else min(held, rows_asked)  # the tries a pick may read
    if got is not None and top >= held:  # the picks are another prefetch's
        counts["misaligned"] += 1
        if counts["misaligned"] == 1:
            log.warning("a prefetch answer not used (trie %d asked of %d; counted in "
                        "Speculator.counts['misaligned'])", top, held)
        got = None
    if got is None:
        got, src = _NO_TABLE, np.full_like(src, -1)
    else:
        counts["arrived"] += answered
    whole = unigrams.whole if unigrams is not None else None
    table = whole if whole is not None else _NO_TABLE
    single = lengths.index(1) if 1 in lengths else -1
    hist = history if history.shape[0] else np.full((len(reqs), max(lengths)), -1, dtype=np.int32)
    arrays = cache.table() if cache is not None else _NO_CACHE
    tok, par, cnt, offs, meta, missed, tails, from_table, looked, hits = resolve_kernels.resolve(
        got.tokens, got.parents, got.counts, got.node_offsets, got.meta, src, bonus,
        table.tokens, table.parents, table.counts, table.node_offsets, table.meta, single if whole is not None else -1,
        last, settled, hist, np.asarray(lengths, dtype=np.int64), cache is not None, *arrays,
        cache.clock() if cache is not None else 0.0, cache.ttl_s if cache is not None else 0.0,
        cache.tick if cache is not None else 0, limit)
    batch = TrieBatch(tok, par, cnt, offs, meta)
    if cache is not None:
        cache.looked_up(looked, hits)
    if whole is not None:
        unigrams.hits += from_table
    elif unigrams is not None and single >= 0:
        batch = unigrams.fill(batch, np.arange(len(reqs), dtype=np.int64) * per + single, last)
    if not history.shape[0]:
        missed, tails = missed[:0], tails[:0]
    return batch, missed, tails

"""Draft trees: merging scored source tries and choosing the best nodes within a budget.

Vocabulary (used the same way by metrics): a *draft* is the tree of proposed tokens; a node
is *tested* when its parent was accepted (or it hangs off the root); it is *accepted* when
it is on the verified path; the *bonus* token is the target's own next token after the
last accepted node.
"""

from __future__ import annotations

import functools
import logging
import numbers
from types import SimpleNamespace
from pathlib import Path

import numpy as np

from client_sdk.drafting import merge_kernels, parallel, step_kernels
from client_sdk.drafting.cache import TrieCache
from client_sdk.drafting.outcomes import resolve_picks
from client_sdk.drafting.unigrams import UnigramTable
from client_sdk.drafting.local import SMALL_APPEND, IndexBatch, LocalArena, LocalIndex, index_many, write_many
from client_sdk.types import DraftBatch, DraftConfig, DraftTree
from sssd_wire.codec import check_tries
from sssd_wire.types import TrieBatch

log = logging.getLogger(__name__)

MAX_SLOTS = merge_kernels.SLOTS  # calibration slots: 0 = the request's own text, 1.. = datastore suffix lengths
K_BUCKETS = 8  # match lengths 1..7, 8+
# initial P(accepted | parent accepted) per (frequency bucket, support bucket); learned online
PRIOR = np.outer([0.05, 0.2, 0.4, 0.6, 0.8], [0.7, 0.85, 0.95, 1.0])
PRIOR_WEIGHT = 20.0
# a node is scored by how many sources propose it too: 1, 2, or 3 and more (a layer each)
AGREEMENT = 3
# a layer's factor starts at 1 with this weight, in predicted accepted nodes, before what it realised
FACTOR_WEIGHT = 50.0
# the highest score a cell gives: a cell is a probability, and a layer's factor above 1 could lift a
# near-certain one past 1 (the drafting kernels also cap each node's conditional at 1)
MAX_SCORE = 0.999
COMBINE = {"noisy-or": 0, "max": 1}
LEARNED_PRIOR = Path(__file__).with_name("calibration_prior.npy")  # python -m sssd.bench.learn_prior
SMALL_DRAFT = 3  # draft_batch drafts fewer rows one call each (bench/batch_crossover.py: 1 row 8 vs 15 µs, 4 rows 31 vs 24)


def default_prior() -> np.ndarray:
    """[MAX_SLOTS, K_BUCKETS, 5, 4]: the shipped learned table, else (warned once) PRIOR everywhere."""
    table = learned_prior(LEARNED_PRIOR)
    return table.copy() if table is not None else np.broadcast_to(PRIOR, (MAX_SLOTS, K_BUCKETS) + PRIOR.shape).copy()


@functools.cache
def learned_prior(path: Path) -> np.ndarray | None:
    """The learned table at ``path`` (clipped to [0.01, 0.99]), or None when the file is missing or
    holds a table of another shape (the slots or buckets changed since it was learned): logged once
    per process as a warning, since drafts then start from the flat prior and accept less."""
    shape = (MAX_SLOTS, K_BUCKETS) + PRIOR.shape
    if not path.exists():
        log.warning("%s is missing: drafting starts from a flat calibration prior (reinstall sssd, or "
                    "python -m sssd.bench.learn_prior writes it)", path)
        return None
    table = np.load(path).astype(np.float64)
    if table.shape != shape:
        log.warning("%s holds a %s calibration table, not %s: drafting starts from a flat prior "
                    "(python -m sssd.bench.learn_prior learns it again)", path, table.shape, shape)
        return None
    return np.clip(table, 0.01, 0.99)


class Calibration:
    """P(node accepted | parent accepted) per source slot and cell, learned from verification.

    base[slot, k, f, support] is a Beta posterior mean with the given prior, weight PRIOR_WEIGHT,
    learned from every tested node that the slot proposed, alone or with other sources. A node
    that several sources propose is accepted more often than one that a single source proposes,
    whose cells then over-promise (``bench/calibration_by_sources.py``). So the drafting kernels
    read ``table`` [AGREEMENT * MAX_SLOTS, ...]: layer a - 1 holds base scaled, slot by slot, by
    what nodes that a sources proposed realised over what base predicted for them (a factor that
    starts at 1 with weight FACTOR_WEIGHT), and a node that a sources propose is scored from it.
    """

    def __init__(self, prior: np.ndarray | None = None) -> None:
        """prior: [MAX_SLOTS, K_BUCKETS, 5, 4] initial table (default: default_prior())."""
        prior = default_prior() if prior is None else prior
        self.hits = prior * PRIOR_WEIGHT
        self.tests = np.full(prior.shape, PRIOR_WEIGHT)
        self.realised = np.zeros((AGREEMENT, MAX_SLOTS))  # accepted nodes per (layer, slot) ...
        self.predicted = np.zeros((AGREEMENT, MAX_SLOTS))  # ... and what base predicted for them
        self.refresh()

    def refresh(self) -> None:
        """``table`` from the counts so far (``update`` and ``update_rows`` call it unless told not to)."""
        self.base = self.hits / self.tests
        factor = (self.realised + FACTOR_WEIGHT) / (self.predicted + FACTOR_WEIGHT)
        table = (self.base[None] * factor[:, :, None, None, None]).reshape((-1,) + self.base.shape[1:])
        self.table = np.minimum(table, MAX_SCORE)

    def update(self, tree: DraftTree, accepted: list[int], refresh: bool = True) -> None:
        """Record which tested nodes were accepted (accepted = node indices of the path)."""
        if len(tree):
            on_path = np.zeros(len(tree), dtype=bool)
            on_path[accepted] = True
            tested = np.where(tree.parents < 0, True, on_path[np.maximum(tree.parents, 0)])
            self._count(tree.cells[tested], on_path[tested])
        if refresh:
            self.refresh()

    def update_rows(self, batch: DraftBatch, rows: np.ndarray, ends: np.ndarray, refresh: bool = True) -> None:
        """``update`` for a step's drafts at once: row rows[i] of ``batch`` accepted the root path
        ending at its node ends[i] (-1: nothing); one count over all their tested nodes."""
        if rows.shape[0]:
            tested, hit = step_kernels.tested_rows(batch.parents, batch.offsets, rows, ends)
            self._count(batch.cells[tested], hit[tested])
        if refresh:
            self.refresh()

    @staticmethod
    def layers_of(node_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(which sources propose each node [n, S], the table layer it is scored from [n], its cells
        as indexes [n, S, 4], those of absent sources 0) of nodes with cells [n, S, 4]."""
        proposes = node_cells[:, :, 0] >= 0
        layer = np.clip(proposes.sum(axis=1), 1, AGREEMENT) - 1
        return proposes, layer, np.maximum(node_cells, 0).astype(np.intp)

    def _count(self, node_cells: np.ndarray, accepted: np.ndarray) -> None:
        """Add tested nodes (cells [n, S, 4], whether each was accepted) to the counts."""
        proposes, layer, cell = self.layers_of(node_cells)
        predicted = self.base[cell[..., 0], cell[..., 1], cell[..., 2], cell[..., 3]]
        for s in range(node_cells.shape[1]):  # each source's factor, by the layer of the nodes it proposed
            on = proposes[:, s]
            np.add.at(self.predicted, (layer[on], cell[on, s, 0]), predicted[on, s])
            np.add.at(self.realised, (layer[on], cell[on, s, 0]), accepted[on].astype(np.float64))
        cells = node_cells.reshape(-1, 4)
        hit = np.repeat(accepted, node_cells.shape[1])
        present = cells[:, 0] >= 0
        idx = tuple(cells[present].T.astype(np.intp))
        np.add.at(self.tests, idx, 1.0)
        np.add.at(self.hits, idx, hit[present].astype(np.float64))


def learn_verified(entries, calibration: Calibration, planner=None) -> None:
    """What verified drafts say (beside the GPU): the calibration's counts, and what each of the
    planner's widths' nodes realised (``StepPlanner.record_drafts``; drafts best first only).
    An entry is (a step's drafts, the rows verified, their accepted paths' last nodes, the draft
    size verified) or (one request's draft, the nodes it accepted, the draft size verified).
    The calibration's table is refreshed once, after all of them: a step learned request by
    request learns what the same step learned as a batch does."""
    for entry in entries:
        if isinstance(entry[0], DraftBatch):
            batch, rows, ends, k = entry
            calibration.update_rows(batch, rows, ends, refresh=False)
        else:
            tree, path, k = entry
            calibration.update(tree, path, refresh=False)
            batch, rows = DraftBatch.of([tree]), np.zeros(1, np.int64)
            ends = np.asarray(list(path[-1:]) or [-1], np.int64)
        if planner is not None and batch.ranked:
            planner.record_drafts(batch.parents, batch.scores, batch.offsets, rows, ends, k)
    if entries:
        calibration.refresh()


NO_TRIES = TrieBatch.empty()


def draft_tree(local: LocalIndex, remote: TrieBatch, first: int, count: int, cal: Calibration, budget: int,
               max_depth: int = 8, max_children: int = DraftConfig.max_children, local_occ: int = 8,
               use_local: bool = True, combine: str = "max", keep: int | None = None) -> DraftTree:
    """The best ``budget`` nodes of the merged tries: the request's own text and the datastore's.

    ``remote`` tries first .. first + count - 1 belong to this request (one per suffix length;
    count 0 when the datastore was not asked or did not answer in time). One compiled call.
    keep: only the best ``keep`` of them (<= budget): the first ``keep`` nodes of the draft of
    ``budget``, built for less (nodes deeper than ``keep`` are not merged).
    """
    if budget <= 0:
        return DraftTree.empty()
    if count + 1 > MAX_SLOTS:
        raise ValueError(f"at most {MAX_SLOTS - 1} datastore tries per draft, got {count}")
    tok, par, score, cells = merge_kernels.draft(
        *local.state(use_local), remote.tokens, remote.parents, remote.counts,
        remote.node_offsets[first : first + count + 1], remote.match_lengths[first : first + count],
        _shape(budget, keep, max_depth, max_children, local_occ, combine), cal.table, K_BUCKETS,
    )
    return DraftTree(tok, par, score, cells, ranked=True)


def kept_nodes(budget: int, keep: int | None) -> int:
    """How many nodes a draft built for ``budget`` keeps when asked to keep ``keep`` (None: all)."""
    return budget if keep is None else max(1, min(keep, budget))


def _shape(budget: int, keep: int | None, max_depth: int, max_children: int, local_occ: int,
           combine: str) -> tuple[int, ...]:
    """The kernels' DraftShape, as the plain tuple they take: the request's own trie sized for
    ``budget`` nodes, ``keep`` kept."""
    kept = kept_nodes(budget, keep)
    shape = merge_kernels.DraftShape(max_depth, local_occ, 4 * budget + 8, kept, max_depth, max_children, COMBINE[combine])
    return tuple(shape)


def draft_batch(arena: LocalArena, indexes: list[LocalIndex | None], remote: TrieBatch, per: int, cal: Calibration,
                budget: int, max_depth: int = 8, max_children: int = DraftConfig.max_children, local_occ: int = 8,
                use_local: bool = True, combine: str = "max", slots: np.ndarray | None = None, keep: int | None = None,
                threads: int = 1) -> DraftBatch:
    """``draft_tree`` for a batch in one compiled call, the drafts back to back: request b
    drafts from indexes[b] (None: not indexed yet, an empty draft) and remote tries
    b * per .. b * per + per - 1 (per 0: the datastore did not answer). Row b is what
    ``draft_tree`` gives for that request alone (``keep`` as there). slots: ``arena.slots(indexes)``,
    if already asked; threads: the rows spread over that many cores (client_sdk.drafting.parallel)."""
    if budget <= 0 or not indexes:
        return DraftBatch.empty(len(indexes))
    if per + 1 > MAX_SLOTS:
        raise ValueError(f"at most {MAX_SLOTS - 1} datastore tries per draft, got {per}")
    if per and len(remote) != per * len(indexes):
        raise ValueError(f"{len(remote)} datastore tries for {len(indexes)} requests x {per}")
    if len(indexes) < SMALL_DRAFT:  # cheaper one by one (the same drafts: the same kernel per row)
        none = None if all(x is not None for x in indexes) else DraftTree(
            np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0), np.zeros((0, per + 1, 4), np.int8))
        return DraftBatch.of([draft_tree(x, remote, b * per, per, cal, budget, max_depth, max_children, local_occ,
                                         use_local, combine, keep) if x is not None else none
                              for b, x in enumerate(indexes)])
    slots = arena.slots(indexes) if slots is None else slots
    ns = np.fromiter((x.n if x is not None and use_local else 0 for x in indexes), dtype=np.int64, count=len(indexes))
    indexed = np.fromiter((x.indexed if x is not None else 0 for x in indexes), dtype=np.int64, count=len(indexes))
    masks = np.fromiter((x.mask if x is not None else 0 for x in indexes), dtype=np.int64, count=len(indexes))
    tok, par, score, cells, offs = parallel.draft_rows(
        threads, arena.table, slots, ns, indexed, masks,
        remote.tokens, remote.parents, remote.counts, remote.node_offsets, remote.match_lengths,
        per, _shape(budget, keep, max_depth, max_children, local_occ, combine), cal.table, K_BUCKETS,
    )
    return DraftBatch(tok, par, score, cells, offs, True)


def cut_batch(batch: DraftBatch, k: int) -> DraftBatch:
    """``batch.cut(k)``; a ranked batch of several rows in one compiled call (the cut is on the
    decode step's critical path, where a dozen numpy calls cost more than the copy). A ``k`` that
    is no node count is refused (-1 cut one row to a batch of offsets [0, -1], several rows failed
    in numpy's words; 2.5 kept 2)."""
    if type(k) is not int and (isinstance(k, bool) or not isinstance(k, numbers.Integral)) or k < 0:
        raise ValueError(f"max_nodes {k!r} must be an integer >= 0")
    if not batch.ranked or len(batch) < 2:
        return batch.cut(k)
    return DraftBatch(*step_kernels.cut_rows(batch.tokens, batch.parents, batch.scores, batch.cells, batch.offsets, k),
                      True)


@functools.cache
def warm_up_parallel() -> None:
    """Compile (or load) the parallel drafting kernel and start numba's thread pool: once per
    process that drafts with ``draft_threads`` > 1, before its first step."""
    arena = LocalArena()
    rows = [LocalIndex([1, 2, 3, 1, 2], max_ngram=3) for _ in range(parallel.MIN_ROWS)]
    draft_batch(arena, rows, NO_TRIES, 0, Calibration(), budget=4, threads=2)


@functools.cache
def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) every drafting kernel once per process, so
    that the first request's first step does not pay for it (seconds in a fresh environment)."""
    local = LocalIndex([1, 2, 3, 1, 2], max_ngram=3)
    draft_tree(local, NO_TRIES, 0, 0, Calibration(), budget=4)
    arena = LocalArena()
    rows = [LocalIndex([1, 2, 3, 1, 2], max_ngram=3, capacity=4) for _ in range(SMALL_APPEND)]  # the batched kernels' size
    draft_batch(arena, rows, NO_TRIES, 0, Calibration(), budget=4)
    write_many(arena, rows, [[1, 2] * 64] * len(rows))  # reallocates: the arena re-reads (typed lists' setitem)
    draft_batch(arena, rows, NO_TRIES, 0, Calibration(), budget=4)  # with positions pending
    index_many(arena, rows)
    local.continuation(depth=2)
    local.write([1])  # a pending position: matched by scanning, then indexed on its own
    local.continuation(depth=2)
    local.index_pending()
    IndexBatch(arena, rows).tails(4)
    # the kernels around drafting: the single-token table, the verify layout, what it accepted
    # (a step's outcome descent is resolve_picks', below; outcomes.descend is the tests' definition)
    one, z = TrieBatch.empty(1), np.zeros(1, dtype=np.int64)
    check_tries(one)  # (each datastore answer's, as it is decoded)
    step_kernels.fill_tries(one.tokens, one.parents, one.counts, one.node_offsets, one.meta, z, z,
                            one.tokens, one.parents, one.counts, one.node_offsets, one.meta, True)
    step_kernels.fixed_width_rows(z, one.tokens, one.parents, np.zeros(2, dtype=np.int64), 2)
    cache = TrieCache(4, 60.0, 4)  # the trie cache's store, lookup and count
    cache.put(np.full((1, 4), -1, dtype=np.int32), one)
    cache.fill(one, z, np.full((1, 4), -1, dtype=np.int32))
    # a zero-wait step's tries in one pass, without a cache and with one (a published single-token table either way)
    unigrams = UnigramTable(1, chunk=1)
    unigrams.store(0, one)
    unigrams.publish()
    nobody = [SimpleNamespace(pick=None, bonus=-1)]
    for c in (None, cache):
        counts = {"prefetched": 0, "arrived": 0, "misaligned": 0}
        resolve_picks(one, nobody, (1,), counts, z, np.full((1, 1), -1, np.int32), unigrams, 0, c)
    len(cache)
    # a drafted step's commit (accepted_picks and drafted_outcomes compile with it)
    step_kernels.commit_outcomes(one.tokens, one.parents, np.zeros(2, dtype=np.int64), np.zeros(0), z, one.tokens,
                                 z, np.full((2, 3), -1, dtype=np.int64))
    cut_batch(DraftBatch.empty(2), 1)
    step_kernels.tested_rows(one.parents, np.zeros(2, dtype=np.int64), z, z - 1)
    step_kernels.width_records(one.parents, np.zeros(0), np.zeros(2, dtype=np.int64), z, z - 1, z)  # the planner's
    step_kernels.ranked_gains(np.zeros(0), np.zeros(2, dtype=np.int64), 4)  # the planner's choice, large batches
    step_kernels.likely_ends(one.tokens, one.parents, np.zeros(0), np.zeros(2, dtype=np.int64), z,
                             np.full((1, 4), -1, dtype=np.int32), 4)

"""The facade a decode worker embeds: request lifecycle, batched drafting, feedback.

Per decode step the worker calls ``draft(ids)`` (one tree per running request), hands the
trees to verification and, while they verify, calls ``prefetch(ids)``: it asks the datastore
for every likely end of this step (outcome-speculative prefetch, client_sdk.drafting.outcomes),
then learns from the previous step while the lookup runs. After verification it reports the
step's time with ``observe_step`` and calls ``commit(id, tokens, tree, accepted)`` per request.
The next ``draft`` then takes the prefetched trie of the outcome that happened, waiting for it at most
``lookup_deadline_s`` (0 by default: what has not arrived is not used, the step drafts from
the request's own text). ``finish(id)`` hands the generation back to the datastore.

With ``prefetch_outcomes`` off, ``draft`` asks for the committed contexts themselves and waits
up to ``lookup_deadline_s`` (the blocking mode the serving simulation compares against).
With a planner, a step that is not worth speculating drafts nothing and asks the datastore
nothing. Not thread-safe: one scheduler thread drives it (the remote source and feedback
sink are thread-safe themselves; long prompts are indexed in a background thread).
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from client_sdk.drafting import step_kernels
from client_sdk.drafting.cache import CacheFills, TrieCache, distinct_rows, pad_tail, store_and_fill, unpad
from client_sdk.drafting.config import SpeculatorConfig, draft_budget, step_shape
from client_sdk.drafting.drafters import NO_TRIES, CalibratedMerge, Drafter
from client_sdk.drafting.outcomes import NO_HISTORY, Pacing, ask_for_ends, pick_ends, resolve_picks
from client_sdk.drafting.local import IndexBatch, LocalArena, index_many, write_many
from client_sdk.drafting.planner import StepPlanner
from client_sdk.drafting.requests import (NO_TREE, RequestState, check_paths, check_tokens, committing, history_of,
                                          ints, packed_tokens, states, tails_of)
from client_sdk.drafting.tree import Calibration, cut_batch, kept_nodes, learn_verified
from client_sdk.drafting.unigrams import UnigramLoader, UnigramTable
from client_sdk.types import SMALL_BATCH, DraftBatch, DraftTree, GenerationSink, StepTimes, TrieSource
from sssd_wire.types import TrieBatch, token_array, vocabulary

STEP_KEY = "next-step"
FRESH_KEY = "missed-now"


class Speculator:
    def __init__(self, config: SpeculatorConfig = SpeculatorConfig(), remote: TrieSource | None = None,
                 planner: StepPlanner | None = None, feedback: GenerationSink | None = None,
                 drafter: Drafter | None = None, calibration: Calibration | None = None,
                 vocab_size: int | None = None) -> None:
        """drafter: how a request's tree is built (default: SSSD's CalibratedMerge of
        config.draft); calibration: the node-score table to start from (default: the shipped prior);
        vocab_size: the model's, for the single-token table (zero-wait with a datastore)."""
        vocab_size = vocabulary(vocab_size)
        self.config = config
        self.remote = remote
        self.planner = planner
        self.feedback = feedback
        self.drafter = drafter if drafter is not None else CalibratedMerge(config.draft)
        self.calibration = calibration if calibration is not None else Calibration()
        self.last = StepTimes()
        self.counts = {"asked": 0, "prefetched": 0, "arrived": 0, "contexts": 0, "not_indexed": 0, "misaligned": 0}
        self._requests: dict[object, RequestState] = {}
        self.arena = LocalArena()  # the requests' own-text indexes, as the compiled kernels read them
        self._unindexed: list = []  # own-text indexes the last commit wrote to, their n-grams not yet indexed
        self._lengths = (config.draft.remote_match,) + tuple(config.draft.remote_suffixes)
        self._outstanding = False  # a prefetch for the next step is in flight
        # ends prefetched per request now, and the occurrences each of their contexts samples
        self.pacing = Pacing(config.outcomes, config.draft.prefetch_samples, config.draft.remote_samples)
        # (tree, accepted path), or a step's (drafts, rows, the last node each row's accepted path ends in)
        self._to_learn: list[tuple] = []
        self._prefetching = False  # prefetch is called: learning happens there, off the critical path
        self._planned: int | None = None  # the budget plan() decided for the coming draft
        self._look_at, self._plan_batch = 0, 0  # the next sampled look's first request; the last plan's batch
        self._look: tuple[int, int] | None = None  # the planned step's sampled look: (first request, count)
        self._unassigned: tuple[list[RequestState], DraftBatch] | None = None  # drafts not yet made trees
        self._step: tuple[DraftBatch, dict] = (DraftBatch.empty(0), {})  # the last drafts, and each id's row
        # the prefetched context slots of the last drafts' likely ends: row offsets[b] + v for node v
        # of draft b, row N + b for "nothing accepted" (N: the drafts' nodes); -1: not asked
        self._ends: np.ndarray | None = None
        self._no_ends = np.full((0, len(self._lengths)), -1, dtype=np.int64)  # no end asked: no picks
        self._unreported = 0  # the batch of a drafted step whose drafting time the caller reports
        self._indexer: ThreadPoolExecutor | None = None
        self._closed = False  # close() was called: nothing is admitted, drafted or asked any more
        self._width = max(self._lengths)  # the cache's keys: tails padded to this many tokens (cache.pad_tail)
        self.cache = (TrieCache(config.trie_cache, config.trie_cache_ttl_s, self._width)
                      if config.trie_cache and config.prefetch_outcomes else None)
        self.fills = CacheFills(self._width)  # the tails a step missed, asked with the next prefetch
        self._fresh_tails = np.zeros((0, self._width), dtype=np.int32)  # committed() asked these, padded, in order
        self.unigrams: UnigramTable | None = None
        self.unigram_loader: UnigramLoader | None = None
        if (vocab_size and config.unigram_table and config.prefetch_outcomes and remote is not None
                and self.drafter.asks_datastore and 1 in self._lengths):
            self.unigrams = UnigramTable(vocab_size)
            self.unigram_loader = UnigramLoader(self.unigrams, remote.fetch, refresh_s=config.unigram_refresh_s)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, request_id, prompt, output=()) -> None:
        """Register a request with its prompt (and any output it already has, e.g. from prefill).
        A long prompt is indexed in a background thread; until it is, the request drafts nothing.
        An id already in flight is refused (its state, text and step would be silently replaced)."""
        self._check_open()
        if request_id in self._requests:
            raise ValueError(f"request {request_id!r} is already in flight here: finish it before starting it again")
        # through the buffer protocol where there is one (numpy, sglang's array("q")), not Python ints: 10x
        # faster for a 32K-token prompt (bench/admit_cost.py; BENCHMARKS.md, "A request's admission")
        tokens = np.concatenate([token_array(prompt, f"the prompt of request {request_id!r}"),
                                 token_array(output, f"the output of request {request_id!r}")])
        builder = None
        if 0 < self.config.background_index_tokens <= tokens.shape[0]:
            self._indexer = self._indexer or ThreadPoolExecutor(1, thread_name_prefix="sssd-index")
            builder = self._indexer
        req = self._requests[request_id] = RequestState(tokens, len(prompt), self.drafter.ngram, builder)
        if builder is None:  # indexed now: its arrays join the kernels' arena at admission, not at its first step
            self.arena.register(req.index())

    def finish(self, request_id, feed_back: bool = True) -> None:
        """Forget a request; its output goes back to the datastore (when feedback is on and
        ``feed_back``: a caller that knows the exact output gives it to ``submit_generation``)."""
        req = self._requests.pop(request_id, None)
        if req is not None and feed_back and self.feedback is not None:
            self.submit_generation(request_id, req.generated())

    def submit_generation(self, request_id, tokens) -> None:
        """Send one finished generation (its output tokens) to the datastore, if feedback is on."""
        if self.feedback is not None and len(tokens):  # (the sink checks and copies them: one copy)
            self.feedback.submit(str(request_id), tokens)

    def __contains__(self, request_id) -> bool:
        return request_id in self._requests

    # -- per step: the critical path --------------------------------------------------------

    def draft(self, request_ids, budget: int | None = None, caller_reports: bool = False) -> list[DraftTree]:
        """One draft tree per request (empty trees when speculation does not pay).

        caller_reports: the caller times the step's whole drafting (what the GPU waits for:
        feeding committed tokens, drafting, emitting its arrays) and hands it to
        ``drafting_took``; otherwise the planner is told the time of this call alone.

        With a planner and no explicit budget the planner first decides whether to draft at
        all (nothing is drafted or looked up when it says no); drafts are then built at its
        maximum and cut to the size that maximises expected tokens/s given their node scores.
        """
        self.draft_batch(request_ids, budget, caller_reports)
        return self._assign_trees()

    def draft_batch(self, request_ids, budget: int | None = None, caller_reports: bool = False,
                    max_nodes: int | None = None) -> DraftBatch:
        """``draft``'s drafts back to back (row b: request_ids[b]'s), cut to at most ``max_nodes``
        nodes each: what a caller on the decode step's critical path emits its arrays from. The
        requests' DraftTree objects are made later, at ``prefetch`` (beside the GPU) or when
        first asked for (``tree``)."""
        self._check_open()
        if not self._prefetching:
            self._learn()  # a caller that never calls prefetch learns here, on the critical path
        self._assign_trees()  # the last step's, if nothing asked for them
        reqs = states(self._requests, request_ids)
        budget = None if budget is None else draft_budget(budget)
        if budget is not None or self.planner is None:
            batch = self._draft(reqs, self.config.fixed_budget if budget is None else budget)
        else:
            if self._planned is None:
                self.plan(len(reqs))
            budget, look = self._planned, self._look
            self._planned = self._look = None
            if budget == 0:
                self._drop_prefetch()
                batch = DraftBatch.empty(len(reqs))
            else:
                start = time.perf_counter()
                keep = self.planner.build_size()  # what this step may verify: the rest is not merged
                if look is not None:  # a look at a few of the requests
                    first, n = look
                    batch = self._draft(reqs[first : first + n], budget, keep).placed(first, len(reqs))
                else:
                    batch = self._draft(reqs, budget, keep)
                k = self.planner.choose_for_drafts(batch.scores, batch.ranked, batch.offsets)
                if caller_reports:
                    self._unreported = len(reqs)
                else:
                    self.planner.observe_drafting(len(reqs), time.perf_counter() - start)
                max_nodes = k if max_nodes is None else min(k, max_nodes)
        if max_nodes is not None:
            batch = cut_batch(batch, max_nodes)
        self._unassigned = (reqs, batch)
        self._step = (batch, dict(zip(request_ids, range(len(reqs)))))
        self._ends = None  # prefetch fills it for these drafts
        return batch

    def _assign_trees(self) -> list[DraftTree]:
        """Give the requests of the last ``draft_batch`` their trees (NO_TREE for a plain step's)."""
        if self._unassigned is None:
            return []
        reqs, batch = self._unassigned
        self._unassigned = None
        trees = batch.trees() if batch.tokens.shape[0] else [NO_TREE] * len(reqs)
        for r, t in zip(reqs, trees):
            r.tree = t
        return trees

    def tree(self, request_id) -> DraftTree | None:
        """The draft the request was given at its last step (None: none, or a plain step's)."""
        self._assign_trees()
        t = states(self._requests, [request_id])[0].tree
        return None if t is NO_TREE else t

    def drafting_took(self, seconds: float) -> None:
        """What the device waited for on the step just planned: the whole drafting time of a step
        drafted with ``caller_reports`` (the planner weighs it against what drafting saves), or a
        plain step's own upkeep (what drafting would replace)."""
        if self.planner is not None and self._unreported:
            self.planner.observe_drafting(self._unreported, seconds)
        elif self.planner is not None and self._planned == 0:
            self.planner.observe_plain(self._plan_batch, seconds)
        self._unreported = 0

    @property
    def blank_width(self) -> int:
        """The verify width of a step planned without drafts: 1, or a wider width whose cost the
        planner probes, filled with tokens that are not drafts (nothing is learned from them)."""
        return self.planner.blank if self.planner is not None else 1

    def plan(self, batch: int) -> int:
        """The draft budget of the coming step (0: a plain step, nothing drafted or looked up),
        decided now so that a caller can skip its own preparation of a plain step; the next
        ``draft`` call without a budget uses it."""
        self._plan_batch = batch = step_shape(batch, least_batch=0)[0]  # (a draft of no requests plans 0)
        self._planned = self.planner.plan(batch) if self.planner is not None else self.config.fixed_budget
        self._look = None
        n = self.planner.look_rows if self.planner is not None and self._planned else None
        if n is not None and n < batch:  # the planner looks at n requests: the next n, in turn
            first = self._look_at if self._look_at + n <= batch else 0
            self._look_at = first + n
            self._look = (first, n)
        return self._planned

    @property
    def look(self) -> tuple[int, int] | None:
        """(first, n) when the planned step is a look at requests first .. first + n - 1 of its
        batch only (the others get no drafts: a caller may leave their upkeep until ``prefetch``)."""
        return self._look

    def _draft(self, reqs: list[RequestState], budget: int, keep: int | None = None) -> DraftBatch:
        if budget <= 0:
            self.last = StepTimes()
            return DraftBatch.empty(len(reqs))
        indexes = IndexBatch(self.arena, [r.index() for r in reqs])
        t0 = time.perf_counter()
        remote = NO_TRIES
        depth = min(self.config.draft.max_depth, budget)
        if self.drafter.asks_datastore:  # the draft reads no trie node deeper than it keeps nodes or levels
            remote, indexes = self._remote_tries(reqs, indexes, min(depth, kept_nodes(budget, keep)))
        t1 = time.perf_counter()
        per = len(self._lengths) if len(remote) else 0
        self.counts["not_indexed"] += sum(1 for x in indexes.indexes if x is None)
        batch = self.drafter.draft(indexes, remote, per, self.calibration, budget, depth, keep)
        matches = remote.match_lengths[::per].tolist() if per else [0] * len(reqs)
        self.last = StepTimes(t1 - t0, time.perf_counter() - t1, matches)
        return batch

    def _remote_tries(self, reqs: list[RequestState], indexes: IndexBatch, limit: int) -> tuple[TrieBatch, IndexBatch]:
        if self.remote is None:
            return TrieBatch.empty(), indexes
        self.counts["asked"] += len(reqs)
        if self.config.prefetch_outcomes:
            return self._prefetched_tries(reqs, indexes, limit=limit)
        start = time.perf_counter()
        contexts = [r.tail(k) for r in reqs for k in self._lengths]
        padded = np.stack([pad_tail(c, self._width) for c in contexts]) if contexts else self._fresh_tails[:0]
        if not np.array_equal(self._fresh_tails, padded):  # committed() asked for others
            self.remote.request(FRESH_KEY, contexts)
        self._fresh_tails = self._fresh_tails[:0]
        got = self.remote.collect(FRESH_KEY, contexts, self.config.lookup_deadline_s - (time.perf_counter() - start))
        if got is not None and len(got) == len(contexts):
            self.counts["arrived"] += len(reqs)
            return got, indexes
        return TrieBatch.empty(), indexes

    def _prefetched_tries(self, reqs: list[RequestState], indexes: IndexBatch,
                          limit: int = 0) -> tuple[TrieBatch, IndexBatch]:
        """The tries of the outcomes that happened, from the prefetch the last step started; then
        what it missed from the cache, then (deadline > 0) from a lookup of the committed
        contexts themselves, waited for until the deadline; the rest drafts from own text.
        limit > 0: the prefetched, table and cached tries without their nodes deeper than it."""
        start = time.perf_counter()
        got = self.remote.collect(STEP_KEY, None, self.config.lookup_deadline_s) if self._outstanding else None
        if self._outstanding:
            self.pacing.arrived(got is not None)
            self.fills.arrived(got)
        self._outstanding = False
        settled = -1  # the suffix length whose empty tries are final (no cache or lookup can add to them)
        if self.unigrams is not None and self.unigrams.published:  # a token without a trie has no continuation
            settled = self._lengths.index(1)
        history = NO_HISTORY  # the requests' ends: the cache's keys, and what is asked for later
        if self.cache is not None or self.config.lookup_deadline_s > 0:
            indexes, history = history_of(reqs, indexes, self._width)
            last = history[:, -1].astype(np.int64)  # each request's last token (-1: no text)
        else:
            last = np.fromiter((r.last for r in reqs), dtype=np.int64, count=len(reqs))
        batch, empty, tails = resolve_picks(got, reqs, self._lengths, self.counts, last, history, self.unigrams,
                                            settled, self.cache, limit, rows_asked=self.fills.first)
        if self.cache is None and self.config.lookup_deadline_s <= 0:
            return batch, indexes
        if self._fresh_tails.shape[0] and empty.shape[0]:  # the committed contexts' own lookups (see committed())
            left = self.config.lookup_deadline_s - (time.perf_counter() - start)
            fresh = self.remote.collect(FRESH_KEY, None, max(left, 0.0))
            if fresh is not None and len(fresh) == self._fresh_tails.shape[0]:
                batch, empty, tails = store_and_fill(self.cache, self._fresh_tails, fresh, batch, empty, tails)
        self._fresh_tails = self._fresh_tails[:0]
        if self.cache is not None:
            self.fills.missed = tails  # asked at prefetch, for later steps
        left = self.config.lookup_deadline_s - (time.perf_counter() - start)
        if left > 0 and empty.shape[0]:
            asked = distinct_rows(tails)
            contexts = [unpad(t) for t in asked]
            self.remote.request(FRESH_KEY, contexts)
            got = self.remote.collect(FRESH_KEY, contexts, left)
            if got is not None and len(got) == asked.shape[0]:
                batch = store_and_fill(self.cache, asked, got, batch, empty, tails)[0]
        return batch, indexes

    def wait_for_unigrams(self, timeout_s: float) -> bool:
        """Until the single-token table's first load is in (True; also without a table), or
        timeout_s passed (False). Benchmarks measure the steady state this way."""
        return self.unigram_loader is None or self.unigram_loader.complete.wait(timeout_s)

    def committed(self, request_ids) -> None:
        """Call once the step's ``commit`` calls are done, with the requests that go on. With a
        deadline (CPU decoding, where the upkeep after a step leaves time), start the lookups of
        the committed contexts now: the next ``draft`` uses them, within its deadline (blocking
        mode: for every request; with outcome prefetch: for the tries it missed). Without a
        deadline (zero-wait) this does nothing."""
        self._check_open()
        if (self.remote is None or self.config.lookup_deadline_s <= 0 or not self.drafter.asks_datastore
                or (self.planner is not None and not self.planner.may_draft_next())):
            return
        padded, contexts = [], []
        for rid in request_ids:
            r = self._requests[rid]
            for k in self._lengths:
                tail = r.tail(k)
                padded.append(pad_tail(tail, self._width))
                contexts.append(tail)
        self.remote.request(FRESH_KEY, contexts)
        self._fresh_tails = np.stack(padded) if padded else self._fresh_tails[:0]

    def commit(self, request_id, tokens, tree: DraftTree | None = None, accepted: list[int] | None = None) -> None:
        """Append the step's committed tokens (accepted + bonus); learning waits for ``prefetch``."""
        self.commit_many([request_id], [tokens], [tree], [accepted])

    def commit_many(self, request_ids, tokens, trees=None, accepted=None) -> None:
        """``commit`` for a step's requests at once: tokens[i] (ints), trees[i] and accepted[i]
        (or None; a path of trees[i] from its root) are request_ids[i]'s. The own-text indexes grow
        in one compiled call."""
        reqs = self._committing(request_ids, tokens=tokens, trees=trees, accepted=accepted)
        if trees is not None and accepted is not None:  # (commit_drafted's own paths skip this)
            check_paths(request_ids, trees, accepted, tokens)
        self._commit_many(reqs, request_ids, tokens, trees, accepted)

    def _commit_many(self, reqs, request_ids, tokens, trees, accepted) -> None:
        tokens = [ints(t, rid) for rid, t in zip(request_ids, tokens)]
        check_tokens(request_ids, tokens)
        trees = trees if trees is not None else [None] * len(reqs)
        accepted = accepted if accepted is not None else [None] * len(reqs)
        picks = None
        if self._ends is not None:  # which prefetched end each request's tokens are: the path it accepted
            rows = [self._step[1].get(rid, -1) for rid in request_ids]
            paths = [(a if t is r.tree and a is not None else r.tree.longest_match(tok[:-1])) if row >= 0 and tok else []
                     for r, row, tok, t, a in zip(reqs, rows, tokens, trees, accepted)]
            picks = pick_ends(self._ends, self._step[0], rows, [p[-1] if p else -1 for p in paths],
                              [len(p) == len(tok) - 1 for p, tok in zip(paths, tokens)])
        self._commit(reqs, tokens, picks)
        k = self.planner.chosen_k if self.planner is not None else 0  # the draft size verified
        learn = [(t, a, k) for t, a in zip(trees, accepted) if t is not None and a is not None and t.tokens.shape[0]]
        self._to_learn.extend(learn)
        if learn and self.planner is not None:
            self.planner.record_many([t.expected_accepted() for t, _, _ in learn], [len(a) for _, a, _ in learn])

    def commit_drafted(self, request_ids, tokens: list[list[int]]) -> None:
        """``commit_many`` for requests verified against the drafts the last ``draft_batch`` gave
        them: what each draft had accepted is read from its committed tokens (tokens[i], a list:
        the accepted path, then the bonus token), for the whole step in one compiled pass."""
        batch, row_of = self._step
        if len(request_ids) < SMALL_BATCH:  # a few requests: a tree walk each is cheaper than the batched call's numpy
            self._assign_trees()
            trees = [self._requests[rid].tree if rid in row_of else None for rid in request_ids]
            paths = [t.longest_match(toks[:-1]) if t is not None else None for t, toks in zip(trees, tokens)]
            self._commit_many(self._committing(request_ids, tokens=tokens), request_ids, tokens, trees, paths)
            return
        reqs = self._committing(request_ids, tokens=tokens)
        tokens = [t if type(t) is list else ints(t, rid) for rid, t in zip(request_ids, tokens)]
        rows = np.fromiter((row_of.get(rid, -1) for rid in request_ids), dtype=np.int64, count=len(reqs))
        counts = list(map(len, tokens))
        flat = packed_tokens(request_ids, tokens, sum(counts))
        # what each draft accepted, which prefetched end that is (with ends asked) and what the step's
        # learning and the planner's record take, in one compiled call
        offs, table, has, r, r_end, r_len, expected = step_kernels.commit_outcomes(
            batch.tokens, batch.parents, batch.offsets, batch.scores, rows, flat, np.array(counts, dtype=np.int64),
            self._ends if self._ends is not None else self._no_ends)
        picks = None if self._ends is None else [p if h else None for p, h in zip(table.tolist(), has.tolist())]
        self._commit(reqs, tokens, picks, (flat, offs))
        if r.shape[0]:  # learning (beside the GPU, in prefetch) and the planner's record, for the whole step
            self._to_learn.append((batch, r, r_end, self.planner.chosen_k if self.planner is not None else 0))
            if self.planner is not None:
                self.planner.record_many(expected.tolist(), r_len.tolist())

    def _committing(self, request_ids, **given) -> list[RequestState]:
        self._assign_trees()
        return committing(self._requests, request_ids, **given)  # (a bad call fails before anything changes)

    def _commit(self, reqs: list[RequestState], tokens: list[list[int]], picks: list | None,
                packed: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Append the committed tokens; picks[i]: the prefetched slots of request i's end (None: none);
        packed: the tokens back to back and their offsets, if the caller has them already."""
        ready, ready_tokens = [], []
        for req, toks, pick in zip(reqs, tokens, picks if picks is not None else itertools.repeat(None)):
            if not toks:
                req.pick = None
                continue
            req.pick, req.bonus = pick, toks[-1]
            local = req.index()
            if local is None:
                req.extend(np.asarray(toks, dtype=np.int32))  # queued until the index is built
            else:
                ready.append(local)
                ready_tokens.append(toks)
                req.last = toks[-1]
        if ready:  # their n-grams are indexed in prefetch, beside the GPU (drafts meanwhile are the same)
            write_many(self.arena, ready, ready_tokens, packed if len(ready) == len(reqs) else None)
            self._unindexed.extend(ready)

    def observe_step(self, batch: int, width: int, seconds: float) -> None:
        """The measured time of a step of this verify width (1 + draft tokens), drafting excluded:
        verification forward, acceptance and cache upkeep. Feeds the planner's cost table."""
        batch, width = step_shape(batch, width)
        if self.planner is not None:
            self.planner.observe_step(batch, width, seconds)

    # -- per step: while the step verifies --------------------------------------------------

    def prefetch(self, request_ids) -> None:
        """Call while the step just drafted verifies: ask the datastore for this step's likeliest
        ends (zero-wait; not while the next step would not draft), then, beside that lookup
        rather than before it, learn from the last verified step."""
        self._check_open()
        self._prefetching = True
        if (self.remote is None or not self.config.prefetch_outcomes or not self.drafter.asks_datastore
                or (self.planner is not None and not self.planner.may_draft_next())):
            self._drop_prefetch()
        else:
            batch, row_of = self._step
            drafted = [rid for rid in request_ids if rid in row_of]  # the others have no end to expect
            cap = self.config.max_lookup_contexts
            drafted, per_request = self.pacing.within(drafted, len(self._lengths), cap)
            reqs = [self._requests[rid] for rid in drafted]
            history = tails_of(reqs, IndexBatch(self.arena, [r.index() for r in reqs]), self._width)[1]
            contexts, self._ends = ask_for_ends(
                batch, np.fromiter((row_of[rid] for rid in drafted), dtype=np.int64, count=len(drafted)),
                history, per_request, self._lengths)
            if self.cache is not None:  # the answers to the last fills, then this step's after its ends
                self.fills.store(self.cache)
            contexts += self.fills.ask(len(contexts), cap - len(contexts))
            self.remote.request(STEP_KEY, contexts, samples=self.pacing.samples)
            self._outstanding = True
            self.counts["contexts"] += len(contexts)
        self._assign_trees()
        self._learn()

    def _drop_prefetch(self) -> None:
        self._ends = None
        self._outstanding = False

    def _learn(self) -> None:
        """What the last verified step says: its tokens' n-grams indexed, its calibration counted."""
        index_many(self.arena, self._unindexed)
        self._unindexed.clear()
        learn_verified(self._to_learn, self.calibration, self.planner)
        self._to_learn.clear()

    def _check_open(self) -> None:
        if self._closed:  # (a start after close made a new indexing thread that nothing stopped)
            raise RuntimeError("this Speculator is closed (Speculator.close was called): build a new one")

    def close(self) -> None:
        """Stop the background work and close the sources: the feedback sink (what it holds is sent
        first), then the datastore source where it has a ``close`` (RemoteSource: its own client).
        Then start, draft and prefetch refuse; a second close does nothing."""
        if self._closed:
            return
        self._closed = True
        if self.unigram_loader is not None:
            self.unigram_loader.close()
        if self.feedback is not None:
            self.feedback.close()
        close_remote = getattr(self.remote, "close", None)  # (TrieSource asks for none: in-process ones hold nothing)
        if close_remote is not None:
            close_remote()
        if self._indexer is not None:
            self._indexer.shutdown(wait=True)

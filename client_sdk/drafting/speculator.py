"""The facade a decode worker embeds: request lifecycle, batched drafting, feedback.

Per decode step the worker calls ``draft(ids)`` (one tree per running request), verifies the
trees, reports the step's time with ``observe_step``, calls ``commit(id, tokens, tree,
accepted)`` for each request, then ``prefetch(ids)`` so the datastore lookup of the next step
can overlap the rest of the step. ``finish(id)`` hands the generation back to the datastore.
With a planner, a step that is not worth speculating drafts nothing and asks the datastore
nothing. Not thread-safe: one scheduler thread drives it (the remote source and feedback
sink are thread-safe themselves).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import time

import numpy as np

from client_sdk.drafting.drafters import NO_TRIES, CalibratedMerge, Drafter
from client_sdk.drafting.local import LocalIndex
from client_sdk.drafting.planner import PlannerConfig, StepPlanner
from client_sdk.drafting.tree import Calibration
from client_sdk.types import DraftConfig, DraftTree, GenerationSink, TrieSource
from sssd_wire.types import TrieBatch

STEP_KEY = "next-step"


@dataclasses.dataclass(frozen=True)
class SpeculatorConfig:
    """Knobs of the decode side: drafting and the step planner in their own dataclasses."""

    draft: DraftConfig = DraftConfig()
    planner: PlannerConfig = PlannerConfig()
    fixed_budget: int = 16  # draft tokens per sequence when no planner is given
    lookup_deadline_s: float = 0.002  # the longest a step waits for the datastore
    # names this process's fed-back documents: host, pid and a random part (a pid comes again)
    worker_id: str = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclasses.dataclass
class _Request:
    local: LocalIndex
    prompt_len: int


@dataclasses.dataclass
class StepTimes:
    """What the last ``draft`` call spent: the datastore wait and the drafting itself (seconds),
    and per request the match length of its longest datastore suffix (0: none or no answer)."""

    lookup_s: float = 0.0
    draft_s: float = 0.0
    match_lengths: list[int] = dataclasses.field(default_factory=list)


class Speculator:
    def __init__(self, config: SpeculatorConfig = SpeculatorConfig(), remote: TrieSource | None = None,
                 planner: StepPlanner | None = None, feedback: GenerationSink | None = None,
                 drafter: Drafter | None = None, calibration: Calibration | None = None) -> None:
        """drafter: how a request's tree is built (default: SSSD's CalibratedMerge of
        config.draft); calibration: the node-score table to start from (default: the shipped prior)."""
        self.config = config
        self.remote = remote
        self.planner = planner
        self.feedback = feedback
        self.drafter = drafter if drafter is not None else CalibratedMerge(config.draft)
        self.calibration = calibration if calibration is not None else Calibration()
        self.last = StepTimes()
        self._requests: dict[object, _Request] = {}
        self._lengths = (config.draft.remote_match,) + tuple(config.draft.remote_suffixes)
        self._drafting = True  # whether the last step drafted (only then is a prefetch useful)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, request_id, prompt, output=()) -> None:
        """Register a request with its prompt (and any output it already has, e.g. from prefill)."""
        local = LocalIndex(list(prompt) + list(output), self.drafter.ngram)
        self._requests[request_id] = _Request(local, len(prompt))

    def finish(self, request_id) -> None:
        """Forget a request; its output goes back to the datastore (when feedback is on)."""
        req = self._requests.pop(request_id, None)
        if req is not None and self.feedback is not None:
            self.feedback.submit(str(request_id), req.local.tokens[req.prompt_len :].copy())

    def __contains__(self, request_id) -> bool:
        return request_id in self._requests

    # -- per step ---------------------------------------------------------------------------

    def draft(self, request_ids, budget: int | None = None) -> list[DraftTree]:
        """One draft tree per request (empty trees when speculation does not pay).

        With a planner and no explicit budget the planner first decides whether to draft at
        all (nothing is drafted or looked up when it says no); drafts are then built at its
        maximum and cut to the size that maximises expected tokens/s given their node scores.
        """
        reqs = [self._requests[r] for r in request_ids]
        if budget is not None or self.planner is None:
            self._drafting = True
            return self._draft(reqs, self.config.fixed_budget if budget is None else budget)
        budget = self.planner.plan(len(reqs))
        self._drafting = budget > 0
        if budget == 0:
            return [DraftTree.empty() for _ in reqs]
        start = time.perf_counter()
        trees = self._draft(reqs, budget)
        k = self.planner.choose_for_drafts([t.scores for t in trees])
        self.planner.observe_drafting(len(reqs), time.perf_counter() - start)
        return [t.best(k) for t in trees]

    def _draft(self, reqs: list[_Request], budget: int) -> list[DraftTree]:
        if budget <= 0:
            self.last = StepTimes()
            return [DraftTree.empty() for _ in reqs]
        t0 = time.perf_counter()
        remote = self._remote_tries(reqs) if self.drafter.asks_datastore else NO_TRIES
        t1 = time.perf_counter()
        per = len(self._lengths) if len(remote) else 0
        depth = min(self.config.draft.max_depth, budget)
        trees = [self.drafter.draft(r.local, remote, i * per, per, self.calibration, budget, depth)
                 for i, r in enumerate(reqs)]
        matches = remote.match_lengths[::per].tolist() if per else [0] * len(reqs)
        self.last = StepTimes(t1 - t0, time.perf_counter() - t1, matches)
        return trees

    def _contexts(self, reqs: list[_Request]) -> list[np.ndarray]:
        return [r.local.tokens[-k:] for r in reqs for k in self._lengths]

    def _remote_tries(self, reqs: list[_Request]) -> TrieBatch:
        if self.remote is None:
            return TrieBatch.empty()
        start = time.perf_counter()
        contexts = self._contexts(reqs)
        got = self.remote.collect(STEP_KEY, contexts, self.config.lookup_deadline_s)
        if got is None:  # nothing prefetched for exactly this batch: ask now, within what is left
            self.remote.request(STEP_KEY, contexts)
            left = self.config.lookup_deadline_s - (time.perf_counter() - start)
            got = self.remote.collect(STEP_KEY, contexts, left)
        return got if got is not None and len(got) == len(contexts) else TrieBatch.empty()

    def commit(self, request_id, tokens, tree: DraftTree | None = None, accepted: list[int] | None = None) -> None:
        """Append the step's committed tokens (accepted + bonus) and learn from the outcome."""
        req = self._requests[request_id]
        req.local.extend(tokens)
        if tree is not None and accepted is not None and len(tree):
            self.calibration.update(tree, accepted)
            if self.planner is not None:
                self.planner.record(float(tree.scores.sum()), len(accepted))

    def observe_step(self, batch: int, width: int, seconds: float) -> None:
        """The measured time of a step of this verify width (1 + draft tokens), drafting excluded:
        verification forward, acceptance and cache upkeep. Feeds the planner's cost table."""
        if self.planner is not None:
            self.planner.observe_step(batch, width, seconds)

    def prefetch(self, request_ids) -> None:
        """Start the datastore lookup for the next step of these requests (skipped while the
        planner is not drafting: the answer would go unused)."""
        if self.remote is not None and self._drafting:
            self.remote.request(STEP_KEY, self._contexts([self._requests[r] for r in request_ids]))

    def close(self) -> None:
        if self.feedback is not None:
            self.feedback.close()

"""SSSD drafts in the exact layout SGLang's NGRAM verification consumes. No SGLang imports.

For a decode batch of bs requests and width N (``speculative_num_draft_tokens``):
- ``req_drafts`` [bs * N] int64: row b = [root, d1, ..., d_{N-1}], root = last committed token;
- ``mask`` [bs * N * N] bool: mask[b, i, j] = node j is node i or one of its ancestors.
Parents precede children. Unused slots are padded with extra children of the root whose
tokens differ from every other root child: SGLang's sampling kernel sums acceptance over
siblings, so a duplicated token (NGRAM pads with 0s) would bias sampled outputs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from client_sdk.drafting import step_kernels
from client_sdk.drafting.speculator import Speculator
from client_sdk.types import DraftTree
from sglang_integration.widths import round_up


class RequestView(NamedTuple):
    """What the drafter needs of an SGLang Req (duck-typed from the real object). A named tuple:
    one is built per request per step, on the critical path (~0.2 µs against ~1 µs for a frozen
    dataclass). The request's output is ``output`` then ``relayed``: SGLang's own output_ids is
    read where it is, never copied (copying sglang 0.5.23's array("q") per request per step cost
    O(output length): 24 µs per request at 1,024 tokens, the median of 3 runs of
    bench/relay_views.py on the 2-core Intel Xeon VM; BENCHMARKS.md, "The relayed tokens without a
    copy of the output"). So the sequences must not change from the ``drafts`` call that is given
    the view to the ``prefetch`` after it (in SGLang both run inside one ``run_batch``, before
    result processing appends to output_ids)."""

    rid: str
    prompt: Sequence[int]  # req.origin_input_ids_unpadded
    output: Sequence[int]  # req.output_ids
    relayed: Sequence[int] = ()  # overlap mode: the last step's accepted tokens that output lacks yet


def missing_relayed(output_ids: Sequence[int], prev_tokens: list[int], prev_lens: list[int], row: int,
                    stride: int, committed: int | None = None) -> tuple[list[int], bool]:
    """Overlap mode: which of the last step's accepted tokens the request's output_ids lack.
    Result processing runs one step behind, so usually all of them; a prefill batch run between
    two decode steps lets it catch up, so then some or none: the missing ones are the last
    ``committed - len(output_ids)`` (committed: the output length the batch's sequence length
    implies; None: unknown, all are missing).

    prev_tokens is SGLang's flat accept_tokens ([bs * stride]) and prev_lens its accept_lens.
    Returns (the tokens to append, aligned): aligned False when ``committed`` contradicts both
    (then all relayed tokens are appended, as without it; the caller warns).
    """
    relayed = prev_tokens[row * stride : row * stride + prev_lens[row]]
    if committed is None:
        return relayed, True
    missing = committed - len(output_ids)
    if 0 <= missing <= len(relayed):
        return relayed[len(relayed) - missing :], True
    return relayed, False


def relayed_views(views: Sequence[RequestView], prev_tokens: list[int], prev_lens: list[int], stride: int,
                  committed: Sequence[int] | None) -> tuple[list[RequestView], list[int]]:
    """Overlap mode: each view with the relayed tokens its output lacks (``missing_relayed``;
    committed[i]: view i's output length that the batch's sequence lengths imply, None: unknown).
    Returns (the views, the rows whose committed length contradicted their output and relay)."""
    out, misaligned = [], []
    for i, (rid, prompt, output, _) in enumerate(views):
        relayed, aligned = missing_relayed(output, prev_tokens, prev_lens, i, stride,
                                           committed[i] if committed is not None else None)
        if not aligned:
            misaligned.append(i)
        out.append(RequestView(rid, prompt, output, relayed))  # (cheaper than _replace)
    return out, misaligned


@dataclasses.dataclass
class _State:
    seen: int  # tokens of prompt + output already in the request's local index


class BatchDrafter:
    """Keeps one Speculator request per SGLang rid in sync and emits fixed-width drafts."""

    def __init__(self, speculator: Speculator, width: int, vocab_size: int, adaptive: bool = False,
                 menu: Sequence[int] | None = None) -> None:
        """width: the widest verify (root included); adaptive: the Speculator's planner sizes
        each step's drafts (a plain step has width 1), else every step is ``width`` wide;
        menu: the widths a step may have (the SGLang worker's, each with its CUDA graphs): a
        step's arrays are padded to the narrowest that holds its drafts (None: any width)."""
        if width < 2:
            raise ValueError(f"draft width {width} must be at least 2 (the root and one draft token)")
        if menu is not None and (list(menu) != sorted(set(menu)) or menu[0] != 1 or menu[-1] != width):
            raise ValueError(f"width menu {tuple(menu)} must increase from 1 to the widest width {width}")
        self.spec = speculator
        self.width = width
        self.adaptive = adaptive
        self.menu = tuple(menu) if menu is not None else None
        self.last_width = width  # the width of the arrays the last ``drafts`` emitted
        self._last_batch = 0
        self._deferred: list[RequestView] = []  # a plain step's requests, synced in prefetch
        self._plain = False  # the last ``drafts`` was a planned plain step, not yet booked (prefetch does)
        self.vocab_size = vocab_size
        self._state: dict[str, _State] = {}

    def admit(self, req: RequestView) -> None:
        """A request enters decoding (after its prefill): index its prompt now, off the decode
        step (a request first seen in ``drafts`` is admitted there)."""
        if req.rid not in self._state:
            output = req.output  # (start converts it; joined with the relayed tokens only if there are any)
            if len(req.relayed):
                output = np.concatenate([np.asarray(output, dtype=np.int32), np.asarray(req.relayed, dtype=np.int32)])
            self.spec.start(req.rid, req.prompt, output)
            self._state[req.rid] = _State(len(req.prompt) + len(output))

    def last_tree(self, rid: str) -> DraftTree | None:
        """The draft the last ``drafts`` emitted for this request (None: none yet, or a plain step)."""
        return self.spec.tree(rid) if rid in self._state else None

    def drafts(self, reqs: Sequence[RequestView], last_step_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The step's [bs * width] tokens and [bs * width * width] mask (width: ``last_width``).

        last_step_s: how long the previous step's verification took (the planner learns its cost
        table from it, after that step's outcomes were committed, as it requires). Adaptive: a
        plain step (the planner's budget 0: width 1, or a wider width whose cost it probes,
        padded with the layout's filler tokens) drafts nothing, and the requests' new tokens are fed
        to their indexes in ``prefetch``, beside the GPU, instead of here."""
        start = time.perf_counter()
        self._book_plain()
        synced = self._deferred or self.last_width > 1 or not self.adaptive
        if synced:
            self._sync_all(reqs)  # the last step's outcomes: its records precede observe_step
        if last_step_s is not None and self._last_batch:
            self.spec.observe_step(self._last_batch, self.last_width, last_step_s)
        self._last_batch = len(reqs)
        roots = np.fromiter((req.relayed[-1] if req.relayed else req.output[-1] if len(req.output) else req.prompt[-1]
                             for req in reqs), dtype=np.int64, count=len(reqs))
        if self.adaptive and self.spec.plan(len(reqs)) == 0:
            # a plain step: the GPU waits for nothing but the roots; the requests' bookkeeping
            # (empty trees, no prefetch) and their new tokens are taken care of in prefetch
            self._deferred = list(reqs)
            self._plain = True
            n = self.spec.blank_width  # > 1: a width's cost probed with padding alone
            self.last_width = round_up(n, self.menu) if self.menu is not None and n > 1 else n
            if n == 1:
                tokens, mask = roots, np.ones(len(reqs), dtype=bool)
            else:
                empty = np.zeros(0, dtype=np.int32)
                tokens, mask = step_kernels.fixed_width_rows(roots, empty, empty, np.zeros(len(reqs) + 1, np.int64),
                                                             self.last_width)
            if not synced:  # the upkeep of plain decoding itself (a sync here pays for the last drafts)
                self.spec.drafting_took(time.perf_counter() - start)
            return tokens.reshape(-1), mask.reshape(-1)
        if not synced:
            look = self.spec.look
            if look is None:
                self._sync_all(reqs)
            else:  # a look drafts a few requests: only they need their new tokens now, the rest in prefetch
                first, n = look
                self._sync_all(reqs[first : first + n])
                self._deferred = list(reqs[:first]) + list(reqs[first + n :])
        batch = self.spec.draft_batch([r.rid for r in reqs], budget=None if self.adaptive else self.width - 1,
                                      caller_reports=True, max_nodes=self.width - 1)
        n = 1 + batch.longest() if self.adaptive else self.width  # rows are at most width - 1 long
        if self.menu is not None:
            n = round_up(n, self.menu)
        self.last_width = n
        if n == 1:  # every draft came out empty
            self.spec.drafting_took(time.perf_counter() - start)
            return roots, np.ones(len(reqs), dtype=bool)
        tokens, mask = step_kernels.fixed_width_rows(roots, batch.tokens, batch.parents, batch.offsets, n)
        self.spec.drafting_took(time.perf_counter() - start)  # all the GPU waited for, arrays included
        return tokens.reshape(-1), mask.reshape(-1)

    def prefetch(self, rids: Sequence[str]) -> None:
        """While the step just drafted verifies (the worker's ``_update_ngram_corpus``, which runs
        right after the verify launch): ask the datastore for the step's likely ends, so the next
        ``drafts`` finds them without waiting."""
        self._book_plain()
        if self._deferred:
            self._sync_all(self._deferred)
        self.spec.prefetch([rid for rid in rids if rid in self._state])

    def _book_plain(self) -> None:
        """A planned plain step's bookkeeping (in prefetch, beside the GPU; or at the next
        ``drafts`` for a caller that does not call prefetch): its requests' empty trees."""
        if not self._plain:
            return
        self._plain = False
        known = [r.rid for r in self._deferred if r.rid in self._state]  # the others are admitted at their sync
        self.spec.draft(known)  # the plan said 0: empty trees, and the datastore is not asked

    def _sync_all(self, reqs: Sequence[RequestView]) -> None:
        """Feed the requests' newly committed tokens (and what they say about their last drafts)
        to the Speculator, in one batch; a request seen for the first time is admitted."""
        rids, tokens = [], []
        for req in reqs:
            st = self._state.get(req.rid)
            if st is None:
                self.admit(req)
                continue
            k = st.seen - len(req.prompt) - len(req.output)  # fed beyond output (seen >= len(prompt) since start())
            if k >= 0:  # the new tokens are all relayed (overlap mode: output_ids is a step behind)
                new = list(req.relayed[k:])
            else:
                new = req.output[k:]
                if not isinstance(new, list):
                    new = list(new)
                if req.relayed:
                    new += req.relayed
            if not new:
                continue
            rids.append(req.rid)
            tokens.append(new)
            st.seen += len(new)
        if rids:
            self.spec.commit_drafted(rids, tokens)  # what each draft had accepted is read from the tokens
        self._deferred = []

    def forget(self, rids) -> None:
        """Requests that left the batch: their generations go back to the datastore (the
        reference path; the SGLang worker uses ``drop`` and ``finished`` instead)."""
        for rid in rids:
            if self._state.pop(rid, None) is not None:
                self.spec.finish(rid)

    def drop(self, rids) -> None:
        """Requests that left the decode batch (finished, retracted, or waiting): forget their
        drafting state, feed nothing back (a retracted request comes back and is admitted again)."""
        for rid in rids:
            if self._state.pop(rid, None) is not None:
                self.spec.finish(rid, feed_back=False)

    def clear(self) -> None:
        """Drop every request, feeding nothing back (``drop``; a request that comes back is
        admitted again), and any plain step's requests still to sync (which would admit them)."""
        self.drop(list(self._state))
        self._deferred = []

    def finished(self, rid: str, output) -> None:
        """A request finished with exactly ``output`` (through its stop token): its drafting state
        goes and its generation goes back to the datastore. Once per finished request: the SGLang
        worker calls it for the Req it held, which the first finish notice takes (a later request
        that reuses the rid, as a client-chosen rid may once the first has finished, is fed back too)."""
        self.drop([rid])
        self.spec.submit_generation(rid, output)  # (SGLang's array("q") is copied there to int32, no Python ints)

"""How one request's draft tree is built: a protocol with one method, and its implementations.

The Speculator owns the request's own-text index and, when the drafter asks for it, the
datastore's tries for the step; the drafter turns them into a DraftTree. A new kind of
drafting is a new class here, handed to the Speculator (and so to the replay benchmark,
which drives the same Speculator).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from client_sdk.drafting.local import IndexBatch, LocalIndex
from client_sdk.drafting.tree import Calibration, draft_batch, kept_nodes
from client_sdk.types import DraftBatch, DraftConfig, DraftTree
from sssd_wire.types import TrieBatch

NO_TRIES = TrieBatch.empty()


class Drafter(Protocol):
    """Builds a step's drafts, one per request, from their own text and the datastore's tries.

    Attributes: ``asks_datastore`` (whether the Speculator looks anything up for it) and
    ``ngram`` (the longest n-gram its own-text index keeps).
    """

    asks_datastore: bool
    ngram: int

    def draft(self, requests: IndexBatch, tries: TrieBatch, per: int, calibration: Calibration,
              budget: int, depth: int, keep: int | None = None) -> DraftBatch:
        """Row b of the result is request b's draft. requests.indexes[b]: its own-text index (None:
        not built yet, an empty draft); tries[b * per : (b + 1) * per] are its datastore tries
        (per 0: the datastore did not answer). keep: only each draft's best ``keep`` nodes, the
        first ``keep`` of its draft of ``budget`` (None: budget), built for less."""


@dataclasses.dataclass(frozen=True)
class CalibratedMerge:
    """SSSD's drafter: the request's own text and the datastore's suffix tries, scored by the
    learned calibration, merged, and the best ``budget`` nodes kept (one compiled call for the
    whole batch). own_text / datastore switch a side off (the replay's ablations)."""

    config: DraftConfig = DraftConfig()
    own_text: bool = True
    datastore: bool = True

    @property
    def asks_datastore(self) -> bool:
        return self.datastore

    @property
    def ngram(self) -> int:
        return self.config.local_ngram

    def draft(self, requests, tries, per, calibration, budget, depth, keep=None) -> DraftBatch:
        c = self.config
        if not self.datastore:
            tries, per = NO_TRIES, 0
        return draft_batch(requests.arena, requests.indexes, tries, per, calibration, budget, depth, c.max_children,
                           c.local_occurrences, use_local=self.own_text, combine=c.combine, slots=requests.slots,
                           keep=keep, threads=c.draft_threads)


@dataclasses.dataclass(frozen=True)
class PromptLookup:
    """Prompt lookup decoding: the tokens after the latest earlier occurrence of the last 3..1
    tokens of the request's own text, as one chain (the baseline every drafter must beat)."""

    asks_datastore: bool = False
    ngram: int = 3

    def draft(self, requests, tries, per, calibration, budget, depth, keep=None) -> DraftBatch:
        n = kept_nodes(budget, keep)  # a chain's first ``keep`` tokens
        return DraftBatch.of([self._chain(x, n) if x is not None else DraftTree.empty() for x in requests.indexes])

    @staticmethod
    def _chain(local: LocalIndex, budget: int) -> DraftTree:
        c = local.continuation(depth=budget, max_occ=1, max_nodes=budget)
        n = len(c)
        return DraftTree(c.tokens, c.parents, np.ones(n), np.full((n, 1, 4), -1, np.int8), ranked=True)  # a chain


@dataclasses.dataclass(frozen=True)
class NoDrafts:
    """Plain decoding through the same loop: never drafts anything."""

    asks_datastore: bool = False
    ngram: int = 1

    def draft(self, requests, tries, per, calibration, budget, depth, keep=None) -> DraftBatch:
        return DraftBatch.empty(len(requests.indexes))

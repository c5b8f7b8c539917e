"""The decode side's knobs (``SpeculatorConfig``): drafting's and the step planner's in their own
dataclasses, and what the Speculator itself needs (prefetch, deadline, cache, feedback name)."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import secrets
import socket

from client_sdk.drafting.planner import PlannerConfig
from client_sdk.types import DraftConfig
from sssd_wire.settings import require_at_least
from sssd_wire.types import whole_numbers, worker_name


MAX_DRAFT_BUDGET = 4096  # draft tokens one request's tree may hold (a verify of more is no step)


MAX_STEP_BATCH = 1 << 16  # requests in one decode step (SGLang's running batch is a few thousand at most)


def whole_in(value, what: str, low: int, high: int, hint: str = "") -> int:
    """``value`` as an int in [low, high] (numpy's integers too); else a one-line ValueError."""
    if type(value) is int and low <= value <= high:  # (at once: a decode step's plan checks its batch)
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{what} {value!r} must be an integer in [{low}, {high}]{hint}")
    return int(value)


def draft_budget(value, what: str = "budget") -> int:
    """``value`` as a draft budget: an integer in [0, MAX_DRAFT_BUDGET] (numpy's too); else a
    one-line ValueError (a float or a bool reached the compiled drafting kernels: a numba typing
    error, screens long; 10**9 failed their allocation as a MemoryError)."""
    return whole_in(value, what, 0, MAX_DRAFT_BUDGET, " (0: no drafts)")


def step_shape(batch, width=1, least_batch: int = 1) -> tuple[int, int]:
    """A decode step's batch (its requests) and verify width (1 + its draft tokens) as ints; else a
    one-line ValueError (the planner divided by a batch of 0, and failed on -1 as "math domain error")."""
    return (whole_in(batch, "batch", least_batch, MAX_STEP_BATCH, " (the step's requests)"),
            whole_in(width, "width", 1, MAX_DRAFT_BUDGET + 1, " (1 + the step's draft tokens)"))


MAX_TRIE_CACHE = 1 << 22  # SpeculatorConfig.trie_cache's largest: about 460 bytes an entry


@dataclasses.dataclass(frozen=True)
class SpeculatorConfig:
    """Knobs of the decode side: drafting and the step planner in their own dataclasses."""

    draft: DraftConfig = DraftConfig()
    planner: PlannerConfig = PlannerConfig()
    fixed_budget: int = 16  # draft tokens per sequence when no planner is given
    prefetch_outcomes: bool = True  # zero-wait: while a step verifies, ask for the contexts it may end in
    outcomes: int = 4  # likeliest ends of a step prefetched per request ("nothing accepted" included)
    lookup_deadline_s: float = 0.0  # the longest a step waits for the datastore (0: use what has arrived)
    # the most contexts one prefetch asks for (the service's --max-lookup-contexts, 4096 by default:
    # it refuses a larger Lookup, and ~480 drafted requests at 4 ends each asked more): fewer ends per
    # request first, then the cache's fills, then requests beyond it ask nothing; a blocking lookup
    # (deadline > 0) of more goes in parts within it (build_speculator's DatastoreClient; it lowers
    # this to the server's own cap where that is smaller)
    max_lookup_contexts: int = 4096
    # lookups over one LookupStream instead of unary calls: ~10-20 % less server CPU and latency
    # at low load (BENCHMARKS: fleet), but the worker stays on one server (no spreading over replicas)
    lookup_stream: bool = False
    background_index_tokens: int = 4096  # prompts this long are indexed in a background thread
    # datastore answers kept by query tail for what prefetch missed (0 = off); rounded up to a power
    # of two: 65,536 entries and a ring of 32 nodes each, about 30 MB
    trie_cache: int = 50_000
    trie_cache_ttl_s: float = 60.0  # ... each for at most this long (the datastore keeps learning)
    # zero-wait: the datastore's trie of every single token, fetched in the background and held
    # (given the vocabulary size), so a step's bonus token always has one (replay: +4 to +9 % tau)
    unigram_table: bool = True
    unigram_refresh_s: float = 600.0  # the table is fetched again this often (inf: never)
    # names this process's fed-back documents: host, pid and a random part (a pid comes again)
    worker_id: str = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

    def __post_init__(self) -> None:
        if not self.prefetch_outcomes and self.lookup_deadline_s <= 0:
            raise ValueError("without prefetch_outcomes a step must wait for its lookup: set lookup_deadline_s > 0")
        if not 0 <= self.lookup_deadline_s < math.inf:  # (inf: a step waited as long as the datastore took)
            raise ValueError(f"lookup_deadline_s {self.lookup_deadline_s} must be a finite number >= 0")
        if self.outcomes < 1:
            raise ValueError(f"outcomes {self.outcomes} must be >= 1")
        require_at_least(self, 4, ("max_lookup_contexts",))  # (one end of one request at every suffix length)
        draft_budget(self.fixed_budget, "fixed_budget")
        require_at_least(self, 0, ("background_index_tokens", "trie_cache"))  # (0: never, off)
        if self.trie_cache > MAX_TRIE_CACHE:  # (10**12 failed as "Unable to allocate 8.00 TiB")
            raise ValueError(f"trie_cache {self.trie_cache} must be at most {MAX_TRIE_CACHE} entries (about 2 GB)")
        if not self.trie_cache_ttl_s > 0:
            raise ValueError(f"trie_cache_ttl_s {self.trie_cache_ttl_s} must be > 0 (trie_cache 0 turns the cache off)")
        worker_name(self.worker_id)  # (it begins every fed-back id)
        if not self.unigram_refresh_s >= 1:  # a smaller one fetches the whole vocabulary's tries back to back
            raise ValueError(f"unigram_refresh_s {self.unigram_refresh_s} must be >= 1 (unigram_table False turns it off)")
        whole_numbers(self, error=ValueError)  # the other int knobs (a float trie_cache sized a table in fractions)

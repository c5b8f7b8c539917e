"""The scheduler's Req objects that the SGLang worker holds for their outputs at finish, bounded.

The worker reads a finished request's output (``output_ids_through_stop``) when SGLang's result
processing calls ``note_request_finished``, which can come a step or two after the request left
the decode batch (overlap mode processes results one step late). Most requests that leave do
finish that way. A request that never does (retracted, then aborted while it waited: SGLang's
``abort_request`` answers waiting requests without result processing) would otherwise keep its
Req, prompt and output, in the worker for the life of the server. No SGLang imports.
"""

from __future__ import annotations

from collections.abc import Iterable

# decode steps a request that left the batch stays here, waiting for its finish notice (result
# processing runs at most a step or two behind the batch that dropped it; a retracted request
# that comes back later is simply added again)
GRACE_STEPS = 64


class LiveRequests:
    """rid -> Req of the requests in the decode batch and of those that left it less than
    ``grace_steps`` decode steps ago; ``forgotten`` counts the Reqs dropped without a finish."""

    def __init__(self, grace_steps: int = GRACE_STEPS) -> None:
        if grace_steps < 1:
            raise ValueError(f"grace_steps {grace_steps} must be at least 1")
        self.grace_steps = grace_steps
        self.forgotten = 0
        self._reqs: dict = {}
        self._left: dict[str, int] = {}  # rid -> the decode step it left at (insertion order = step order)
        self._step = 0

    def update(self, reqs: Iterable) -> None:
        """The decode batch's requests (each step, before drafting: one dict write per request)."""
        self._reqs.update((req.rid, req) for req in reqs)

    def departed(self, current: set, left: Iterable[str]) -> None:
        """One decode step's bookkeeping, beside the GPU: ``left`` are the rids that left the
        batch since the last step, ``current`` the batch's rids now. Reqs that left ``grace_steps``
        steps ago (counting this one) and are not back in the batch are dropped."""
        self._step += 1
        for rid in left:
            self._left.pop(rid, None)  # (a rid that left before, came back and left again: its newest step)
            self._left[rid] = self._step
        while self._left:
            rid, at = next(iter(self._left.items()))
            if self._step - at < self.grace_steps:
                break
            del self._left[rid]
            if rid not in current and self._reqs.pop(rid, None) is not None:
                self.forgotten += 1

    def pop(self, rid: str):
        """The request's Req (None: not held), no longer held: it finished."""
        self._left.pop(rid, None)
        return self._reqs.pop(rid, None)

    def clear(self) -> None:
        """Drop every Req (the engine flushed its caches while idle; nothing is decoding), each
        counted in ``forgotten``."""
        self.forgotten += len(self._reqs)
        self._reqs.clear()
        self._left.clear()

    def __len__(self) -> int:
        return len(self._reqs)

    def __contains__(self, rid) -> bool:
        return rid in self._reqs

"""Concurrent Lookup calls answered by one kernel call.

Every Lookup of a namespace with the same parameters joins a queue; one drain per (namespace,
parameters) takes everything queued, looks it up in one ``lookup_packed`` call and hands each
call its part. The drain first yields to the event loop once, so that calls whose messages
arrived together queue together; calls that arrive while a batch is being looked up form the
next batch. An idle server answers a lone call as before: a small one on the event loop (a
thread hop costs more than the kernel), a large one in the thread pool. Answers are exactly
those of one call each: the lookup of a context depends on nothing else in its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from sssd_wire.types import LookupParams, TrieBatch

# (namespace, flat context tails, offsets, params) -> the tries, run in the thread pool
PoolCall = Callable[[str, np.ndarray, np.ndarray, LookupParams], Awaitable[TrieBatch]]
InlineCall = Callable[[str, np.ndarray, np.ndarray, LookupParams], TrieBatch]


def split(batch: TrieBatch, counts: list[int]) -> list[TrieBatch]:
    """``batch`` cut into consecutive parts of counts[i] tries each (views, no copies)."""
    parts, first = [], 0
    offs = batch.node_offsets
    for n in counts:
        a, b = int(offs[first]), int(offs[first + n])
        parts.append(TrieBatch(batch.tokens[a:b], batch.parents[a:b], batch.counts[a:b],
                               offs[first : first + n + 1] - a, batch.meta[first : first + n]))
        first += n
    return parts


def merge(tails: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Calls' (flat tails, offsets) as one call's."""
    if len(tails) == 1:
        return tails[0]
    ctx = np.concatenate([c for c, _ in tails])
    offs = np.zeros(sum(o.shape[0] - 1 for _, o in tails) + 1, dtype=np.int64)
    at, base = 0, 0
    for c, o in tails:
        n = o.shape[0] - 1
        offs[at + 1 : at + n + 1] = o[1:] + base
        at, base = at + n, base + c.shape[0]
    return ctx, offs


class LookupBatcher:
    """One per servicer, used from the event loop's thread only."""

    def __init__(self, run_in_pool: PoolCall, run_inline: InlineCall, inline_work: int,
                 on_batch: Callable[[int], None] = lambda calls: None) -> None:
        """inline_work: a batch of contexts x sample budget up to this runs on the event loop;
        on_batch(calls): told after each kernel call how many Lookup calls it answered."""
        self._pool = run_in_pool
        self._inline = run_inline
        self.inline_work = inline_work
        self._on_batch = on_batch
        self._queues: dict[tuple[str, LookupParams], list] = {}

    async def lookup(self, namespace: str, ctx: np.ndarray, offs: np.ndarray, params: LookupParams) -> TrieBatch:
        key = (namespace, params)
        fut = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = queue = []
            asyncio.ensure_future(self._drain(key))
        queue.append((ctx, offs, fut))
        return await fut

    async def _drain(self, key: tuple[str, LookupParams]) -> None:
        namespace, params = key
        try:
            while True:
                await asyncio.sleep(0)  # calls that arrived together queue together
                queue = self._queues[key]
                pending = [p for p in queue if not p[2].done()]  # a cancelled call is dropped
                queue.clear()
                if not pending:
                    return
                ctx, offs = merge([(c, o) for c, o, _ in pending])
                try:
                    if (offs.shape[0] - 1) * params.sample_budget <= self.inline_work:
                        batch = self._inline(namespace, ctx, offs, params)  # cheaper than a thread hop
                    else:
                        batch = await self._pool(namespace, ctx, offs, params)
                except Exception as exc:  # every call of the batch gets the error (mapped by the interceptor)
                    for _, _, fut in pending:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self._on_batch(len(pending))
                for (_, _, fut), part in zip(pending, split(batch, [o.shape[0] - 1 for _, o, _ in pending])):
                    if not fut.done():
                        fut.set_result(part)
        finally:
            queue = self._queues.pop(key, [])
            for _, _, fut in queue:  # only if the drain itself failed: nothing waits forever
                if not fut.done():
                    fut.set_exception(RuntimeError("lookup batch abandoned"))

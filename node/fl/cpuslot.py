"""A one-at-a-time CPU slot whose waiters are served by priority, then in arrival order.

The verifier runs PoL replays and round aggregations in worker threads, one at a time (on a
small machine two at once only slow each other down). A plain FIFO lock made the aggregation
that the next block needs wait behind background re-checks of submissions the round result
already has a verdict for; with priorities the aggregation goes first.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

URGENT = 0  # work a block proposal or a prevote waits for
NORMAL = 1  # first checks of submissions
BACKGROUND = 2  # re-checks whose old verdict still stands meanwhile


class _Waiter:
    __slots__ = ("event", "cancelled")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.cancelled = False


class PrioritySlot:
    """One holder at a time; among waiters the lowest ``priority`` value goes first."""

    def __init__(self) -> None:
        self._held = False
        self._queue: list[tuple[int, int, _Waiter]] = []
        self._seq = itertools.count()

    @property
    def held(self) -> bool:
        return self._held

    def waiting(self) -> int:
        return sum(not w.cancelled for _, _, w in self._queue)

    @asynccontextmanager
    async def hold(self, priority: int = NORMAL) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._held and not self.waiting():
            self._held = True
            await trio.lowlevel.cancel_shielded_checkpoint()  # yield, as trio's locks do
            return
        waiter = _Waiter()
        heapq.heappush(self._queue, (priority, next(self._seq), waiter))
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.event.is_set():
                self._release()  # the slot was handed to us as we were cancelled: pass it on
            else:
                waiter.cancelled = True
            raise

    def _release(self) -> None:
        while self._queue:
            _, _, waiter = heapq.heappop(self._queue)
            if not waiter.cancelled:
                waiter.event.set()  # hand over: the slot stays held
                return
        self._held = False

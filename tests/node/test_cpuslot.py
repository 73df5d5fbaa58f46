"""The verifier's CPU slot: one holder, waiters served by priority then arrival."""

from __future__ import annotations

import trio
from trio.testing import wait_all_tasks_blocked

from node.fl.cpuslot import BACKGROUND, NORMAL, URGENT, PrioritySlot


async def test_waiters_are_served_by_priority_then_in_arrival_order() -> None:
    # Prepare: the slot is held; five waiters queue in this order
    slot = PrioritySlot()
    served: list[str] = []
    release = trio.Event()

    async def holder() -> None:
        async with slot.hold(NORMAL):
            await release.wait()

    async def waiter(name: str, priority: int) -> None:
        async with slot.hold(priority):
            served.append(name)
            await trio.lowlevel.checkpoint()  # hold it across a scheduling point

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await wait_all_tasks_blocked()
        for name, prio in [("bg1", BACKGROUND), ("n1", NORMAL), ("bg2", BACKGROUND),
                           ("urgent", URGENT), ("n2", NORMAL)]:
            nursery.start_soon(waiter, name, prio)
            await wait_all_tasks_blocked()
        assert slot.held and slot.waiting() == 5 and served == []

        # Execute
        release.set()

    # Assert
    assert served == ["urgent", "n1", "n2", "bg1", "bg2"]
    assert not slot.held and slot.waiting() == 0


async def test_a_cancelled_waiter_is_skipped_and_the_slot_is_not_lost() -> None:
    # Prepare
    slot = PrioritySlot()
    served: list[str] = []
    release = trio.Event()

    async def holder() -> None:
        async with slot.hold():
            await release.wait()

    async def waiter(name: str) -> None:
        async with slot.hold(URGENT):
            served.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await wait_all_tasks_blocked()
        gone = trio.CancelScope()

        async def cancelled() -> None:
            with gone:
                await waiter("cancelled")

        nursery.start_soon(cancelled)
        await wait_all_tasks_blocked()
        nursery.start_soon(waiter, "later")
        await wait_all_tasks_blocked()
        assert slot.waiting() == 2

        # Execute: the first waiter is cancelled while it waits, then the holder lets go
        gone.cancel()
        await wait_all_tasks_blocked()
        assert slot.waiting() == 1
        release.set()

    # Assert: the live waiter got the slot, and it was free afterwards
    assert served == ["later"]
    assert not slot.held
    async with slot.hold():
        assert slot.held


async def test_cancelled_before_taking_a_free_slot_leaves_it_free() -> None:
    slot = PrioritySlot()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with slot.hold():
            raise AssertionError("a cancelled task must not get the slot")  # pragma: no cover
    assert not slot.held

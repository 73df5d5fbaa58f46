"""Tx gossip batching: a congested network gets fewer, larger batches."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio

from ledger.txbatch import decode_tx_batch
from node.chain import ChainService
from node.config import MempoolConfig
from node.logs import get_logger


def service(backlog: list[int]) -> Any:
    """Just what ``gossip_loop`` touches, with a publish that records batch sizes."""
    sent: list[int] = []

    async def publish(topic: str, msg: bytes) -> None:
        sent.append(len(decode_tx_batch(msg)))

    svc = SimpleNamespace(cfg=SimpleNamespace(mempool=MempoolConfig()), _outbox=[],
                          _outbox_ready=trio.Event(), publish=publish,
                          gossip_backlog=lambda: backlog[0], log=get_logger("test"), sent=sent)
    return svc


async def submit_for(svc: Any, count: int, every: float = 0.01) -> None:
    """A client submitting a 100-byte tx every ``every`` seconds."""
    for _ in range(count):
        svc._outbox.append(b"t" * 100)
        svc._outbox_ready.set()
        await trio.sleep(every)


async def test_batches_grow_while_peers_are_behind(autojump_clock: Any) -> None:
    for backlog, most in ((0, 10_000), (1000, 3)):
        # Prepare: peers' queues hold ``backlog`` RPCs
        svc = service([backlog])
        async with trio.open_nursery() as n:
            n.start_soon(ChainService.gossip_loop, svc)
            # Execute: 2 s of submissions (200 txs)
            await submit_for(svc, 200)
            await trio.sleep(2.0)
            n.cancel_scope.cancel()
        # Assert: all gossiped; ~40 batches of 50 ms when idle, one per second when congested
        assert sum(svc.sent) == 200
        if backlog:
            assert len(svc.sent) <= most
        else:
            assert len(svc.sent) >= 20


async def test_own_pending_txs_are_gossiped_again_until_they_leave_the_mempool(
        autojump_clock: Any) -> None:
    # Prepare: one tx of ours, still pending; the first gossip of it went nowhere
    svc = service([0])
    svc.mempool = {b"h1"}
    svc._local = {b"h1": (b"tx-1", trio.current_time())}
    async with trio.open_nursery() as n:
        n.start_soon(ChainService.regossip_loop, svc)
        # Execute / Assert: not before the interval, then once per interval
        await trio.sleep(4.0)
        assert svc._outbox == []
        await trio.sleep(1.5)
        assert svc._outbox == [b"tx-1"]
        await trio.sleep(5.0)
        assert svc._outbox == [b"tx-1", b"tx-1"]
        # committed (out of the mempool): forgotten, never sent again
        svc.mempool.clear()
        await trio.sleep(20.0)
        n.cancel_scope.cancel()
    assert svc._outbox == [b"tx-1", b"tx-1"] and svc._local == {}

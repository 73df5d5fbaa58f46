"""Helpers to run real in-process libp2p nodes on loopback for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
import trio

from node.config import P2PConfig
from node.keys import NodeKey
from node.p2p import P2PNode, Validation, Workarounds

CHAIN = "test-chain"


def accept_all(origin: str, data: bytes) -> Validation:
    return Validation.accept(data)


class Inbox:
    """Collects (origin, value) deliveries of a topic; waits on conditions, never sleeps."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self._changed = trio.Event()

    async def handler(self, origin: str, value: Any) -> None:
        self.items.append((origin, value))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pred: Callable[[list[tuple[str, Any]]], bool],
                       timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            while not pred(self.items):
                await self._changed.wait()


def p2p_config(bootstrap: list[str] | None = None, **kw: Any) -> P2PConfig:
    cfg = P2PConfig(listen=["/ip4/127.0.0.1/tcp/0"], bootstrap=bootstrap or [],
                    redial_initial_ms=100, redial_max_ms=1000)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@asynccontextmanager
async def running_node(
    nursery: trio.Nursery,
    topics: dict[str, tuple[Any, Any]] | None = None,
    bootstrap: list[str] | None = None,
    key: NodeKey | None = None,
    workarounds: Workarounds | None = None,
    **cfg_kw: Any,
) -> AsyncIterator[P2PNode]:
    node = P2PNode(key or NodeKey.generate(), p2p_config(bootstrap, **cfg_kw), CHAIN,
                   structlog.get_logger("test"), workarounds=workarounds)
    for name, (validator, handler) in (topics or {}).items():
        node.add_topic(name, validator, handler)
    cancel = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with cancel:
                await node.run(task_status=task_status)
        finally:
            stopped.set()

    await nursery.start(run)
    try:
        yield node
    finally:
        cancel.cancel()
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await stopped.wait()  # the host has closed its sockets


async def wait_until(pred: Callable[[], bool], timeout: float = 10, poll: float = 0.02) -> None:
    """Poll a condition on real time with a deadline (for library state without events)."""
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(poll)


async def wait_mesh(a: P2PNode, b: P2PNode, topic: str, timeout: float = 10) -> None:
    from libp2p.peer.id import ID

    await a.pubsub.wait_for_mesh(ID.from_base58(b.peer_id), a.topic_name(topic), timeout=timeout)

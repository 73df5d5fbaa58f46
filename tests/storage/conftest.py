"""Fixtures for storage tests: temporary stores and real loopback libp2p hosts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from storage.store import ContentStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContentStore]:
    s = ContentStore(tmp_path / "content", chunk_size=4096)
    yield s
    s.close()


def new_loopback_host() -> Any:
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.config import ConnectionConfig

    # max_connections_per_peer=1 avoids a ~250 ms happy-eyeballs delay per dial
    return new_host(
        key_pair=create_new_key_pair(),
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


@asynccontextmanager
async def running_hosts(n: int, *, connect: bool = True) -> AsyncIterator[list[Any]]:
    """``n`` real py-libp2p hosts (Noise + yamux) on 127.0.0.1, fully meshed when ``connect``."""
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    hosts = [new_loopback_host() for _ in range(n)]
    async with AsyncExitStack() as stack:
        for h in hosts:
            await stack.enter_async_context(h.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]))
        try:
            if connect:
                for i, a in enumerate(hosts):
                    for b in hosts[i + 1 :]:
                        await b.connect(info_from_p2p_addr(a.get_addrs()[0]))
            yield hosts
        finally:
            # leaving run() does not close sockets (LIBP2P_NOTES trap 5); close all at once
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as nursery:
                    for h in hosts:
                        nursery.start_soon(h.close)

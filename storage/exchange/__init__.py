"""Block exchange over libp2p streams: `Exchange` = server handler + fetching client on one host."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from storage.cid import Cid
from storage.exchange.client import ClientStats, ExchangeClient, FetchLimits, Progress
from storage.exchange.server import ExchangeServer, Penalize, Policy, ServerLimits, ServerStats
from storage.exchange.wire import PROTOCOL_ID
from storage.store import ContentStore

__all__ = [
    "PROTOCOL_ID",
    "ClientStats",
    "Exchange",
    "ExchangeClient",
    "ExchangeServer",
    "FetchLimits",
    "Penalize",
    "Policy",
    "Progress",
    "ServerLimits",
    "ServerStats",
]


class Exchange:
    """The content exchange of one node, on an already-running libp2p host.

    ``policy(peer_id, cid) -> bool`` decides what this node serves to whom
    (judged on the manifest a chunk belongs to); ``penalize(peer_id, reason)``
    reports misbehaving peers to the node's scoring (reasons start with
    ``exchange-``). The exchange never creates or closes hosts.
    """

    def __init__(
        self,
        host: Any,
        store: ContentStore,
        *,
        policy: Policy | None = None,
        penalize: Penalize | None = None,
        server_limits: ServerLimits = ServerLimits(),
        fetch_limits: FetchLimits = FetchLimits(),
    ) -> None:
        self.host = host
        self.store = store
        self.server = ExchangeServer(store, policy=policy, penalize=penalize, limits=server_limits)
        self.client = ExchangeClient(host, store, penalize=penalize, limits=fetch_limits)
        self._started = False

    def start(self) -> None:
        """Register the stream handler (call once the host exists; before or after `run`)."""
        from libp2p.custom_types import TProtocol

        self.host.set_stream_handler(TProtocol(PROTOCOL_ID), self.server.handle)
        self._started = True

    def stop(self) -> None:
        if self._started:
            from libp2p.custom_types import TProtocol

            self.host.remove_stream_handler(TProtocol(PROTOCOL_ID))
            self._started = False

    async def fetch(
        self,
        cid: Cid | str | bytes,
        *,
        peers: Iterable[Any] | None = None,
        pin: str | None = None,
        progress: Progress | None = None,
        prefer: Iterable[Any] | None = None,
    ) -> Cid:
        return await self.client.fetch(cid, peers=peers, pin=pin, progress=progress,
                                       prefer=prefer)

    def providers_of(self, cid: Cid | str | bytes) -> list[Any]:
        return self.client.providers_of(cid)

    async def find_providers(
        self, cid: Cid | str | bytes, peers: Iterable[Any] | None = None
    ) -> list[Any]:
        return await self.client.find_providers(cid, peers)

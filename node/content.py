"""The node's content service: the LevelDB content store plus the block exchange on the p2p host.

The store opens with the node (``data/content.db``) so RPC reads work from the
first request; the :class:`~storage.exchange.Exchange` needs the running libp2p
host, so it is built by a node service once the host is up, and its stream
handler goes through :meth:`P2PNode.add_stream_protocol` (the node's per-peer
stream guard and ban list). The store closes in a node closer, i.e. after the
host and every fetch have stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from node.config import ConfigError, StorageConfig
from storage.cid import Cid
from storage.errors import FetchError
from storage.exchange import PROTOCOL_ID, Exchange, FetchLimits, Progress, ServerLimits
from storage.store import ContentStore

if TYPE_CHECKING:
    from node.daemon import Node

__all__ = [
    "EXCHANGE_PENALTIES",
    "METRICS_SYNC_S",
    "ContentService",
    "ExchangeNotReady",
    "FetchTimeout",
    "fetch_limits",
    "open_store",
]

# Points per exchange fault, on the scale of node.p2p's PENALTY_* (ban at -100).
# A bad block is proof of a lying or broken peer; a malformed frame is a broken peer;
# a stall can happen to an honest but overloaded peer, so it costs little.
EXCHANGE_PENALTIES: dict[str, int] = {
    "exchange-bad-block": 50,
    "exchange-malformed": 20,
    "exchange-stall": 5,
}
_UNKNOWN_FAULT_POINTS = 20  # a reason added to the exchange later: treat as malformed

# How often exchange byte counters are copied into the Prometheus counters.
METRICS_SYNC_S = 1.0
# The exchange's own per-peer cap answers "busy"; the node's guard (which resets the
# stream and penalises) must sit above it so an honest peer hits the polite answer first.
_GUARD_SLACK = 2
_READY_WAIT_S = 5.0


class FetchTimeout(FetchError):
    """A fetch did not finish within its deadline (``storage.fetch_timeout_s`` by default)."""


class ExchangeNotReady(FetchError):
    """The exchange is not running (the p2p host has not started or has stopped)."""


def _allow_all(peer: Any, cid: Cid) -> bool:
    return True


def open_store(path: Any, cfg: StorageConfig) -> ContentStore:
    """Open the content store with the limits of ``[storage]``; a bad setting is a ConfigError."""
    try:
        return ContentStore(
            path,
            quota_bytes=cfg.quota_bytes or None,  # 0 = no quota
            chunk_size=cfg.chunk_size,
            max_content_bytes=cfg.max_object_bytes,
        )
    except ValueError as e:
        raise ConfigError(f"storage: {e}") from None
    except Exception as e:  # plyvel.IOError (lock held by another process), plyvel.Error
        raise ConfigError(f"cannot open the content store at {path}: {e}") from None


def fetch_limits(cfg: StorageConfig) -> FetchLimits:
    if cfg.per_peer_concurrency < 1:
        raise ConfigError("storage.per_peer_concurrency must be >= 1")
    return FetchLimits(per_peer_concurrency=cfg.per_peer_concurrency)


class ContentService:
    """Owns the node's content store and exchange; other services call :meth:`fetch`.

    ``policy(peer_id, cid) -> bool`` decides what this node serves to which peer
    (judged on the manifest a chunk belongs to); it may be replaced at any time,
    e.g. by the HE mode to serve encrypted updates to the task's validators only.
    It is also asked with ``peer_id=None`` for public RPC reads (``content_read``),
    so a restrictive policy must answer False for None.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.cfg.storage
        if cfg.fetch_timeout_s < 1:
            raise ConfigError("storage.fetch_timeout_s must be >= 1")
        self.fetch_limits = fetch_limits(cfg)
        self.server_limits = ServerLimits()
        self.fetch_timeout_s: float = float(cfg.fetch_timeout_s)
        self.policy: Callable[[Any, Cid], bool] = _allow_all
        self.store = open_store(node.home.data_dir / "content.db", cfg)
        self.exchange: Exchange | None = None
        self.ready = trio.Event()
        self._synced = {"sent": 0, "received": 0}
        node.add_service("content", self.run)
        node.add_closer(self.close)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Node service: start the exchange on the running host, then keep metrics current."""
        p2p = self.node.p2p
        self.exchange = Exchange(
            p2p.host,
            self.store,
            policy=self._serve,
            penalize=self._penalize,
            server_limits=self.server_limits,
            fetch_limits=self.fetch_limits,
        )
        p2p.add_stream_protocol(
            PROTOCOL_ID,
            self.exchange.server.handle,
            max_per_peer=self.server_limits.max_streams_per_peer + _GUARD_SLACK,
        )
        self.ready.set()
        try:
            while True:
                self.sync_metrics()
                await trio.sleep(METRICS_SYNC_S)
        finally:
            self.sync_metrics()

    def close(self) -> None:
        """Node closer: runs after the host and every task (fetches included) have ended."""
        self.store.close()

    # ------------------------------------------------------------ hooks

    def _serve(self, peer: Any, cid: Cid) -> bool:
        return bool(self.policy(peer, cid))

    def may_read(self, cid: Cid) -> bool:
        """May an unauthenticated RPC client read ``cid``? The policy is asked with peer None.

        As on the wire, a chunk is judged by the objects that list it, so a restricted
        object cannot be read chunk by chunk; a broken policy denies.
        """
        try:
            if not self.policy(None, cid):
                return False
            if cid.is_manifest:
                return True
            users = self.store.manifests_using(cid)
            return not users or any(self.policy(None, m) for m in users)
        except Exception as e:
            self.node.log.warning("content policy failed", cid=str(cid), error=repr(e))
            return False

    def _penalize(self, peer: Any, reason: str) -> None:
        points = EXCHANGE_PENALTIES.get(reason, _UNKNOWN_FAULT_POINTS)
        self.node.p2p.penalize(str(peer), points, reason)

    def sync_metrics(self) -> None:
        """Add the exchange's byte counts since the last call to ``fedledger_exchange_bytes``."""
        ex = self.exchange
        if ex is None:
            return
        now = {"sent": ex.server.stats.bytes_served, "received": ex.client.stats.bytes_fetched}
        for direction, total in now.items():
            delta = total - self._synced[direction]
            if delta > 0:
                self.node.metrics.bytes_exchanged.labels(direction=direction).inc(delta)
                self._synced[direction] = total

    # ------------------------------------------------------------ API for other services

    async def wait_ready(self, timeout: float = _READY_WAIT_S) -> Exchange:
        with trio.move_on_after(timeout):
            await self.ready.wait()
        if self.exchange is None:
            raise ExchangeNotReady("the content exchange is not running (p2p host not up)")
        return self.exchange

    async def fetch(
        self,
        cid: Cid | str | bytes,
        *,
        pin: str | None = None,
        peers: Iterable[Any] | None = None,
        progress: Progress | None = None,
        timeout_s: float | None = None,
        prefer: Iterable[Any] | None = None,
    ) -> Cid:
        """Fetch ``cid`` from peers into the store (see `Exchange.fetch`) within a deadline."""
        exchange = await self.wait_ready()
        deadline = timeout_s if timeout_s is not None else self.fetch_timeout_s
        try:
            with trio.fail_after(deadline):
                return await exchange.fetch(cid, peers=peers, pin=pin, progress=progress,
                                            prefer=prefer)
        except trio.TooSlowError:
            name = cid.hex() if isinstance(cid, bytes) else str(cid)
            raise FetchTimeout(f"fetch of {name} did not finish within {deadline:g} s") from None
        finally:
            self.sync_metrics()

    def providers_of(self, cid: Cid | str | bytes) -> list[Any]:
        """The peers that served ``cid`` when this node last fetched it (see `fetch`'s prefer)."""
        return [] if self.exchange is None else self.exchange.providers_of(cid)

    def stats(self) -> dict[str, Any]:
        """Counters for status pages: store usage and exchange traffic."""
        out: dict[str, Any] = {
            "used_bytes": self.store.used_bytes,
            "quota_bytes": self.store.quota_bytes,
            "corrupt_blocks_found": self.store.corrupt_blocks_found,
        }
        if self.exchange is not None:
            out["server"] = vars(self.exchange.server.stats).copy()
            out["client"] = vars(self.exchange.client.stats).copy()
        return out

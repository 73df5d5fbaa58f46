"""Exchange server: answers want-have / want-block on inbound streams, with per-peer limits.

py-libp2p has no resource manager (LIBP2P_NOTES.md trap 10), so the server
bounds what a peer can cost it: concurrent streams per peer and in total
(excess streams get an ``ErrorMsg("busy")`` and are closed), one request in
flight per stream, a 64 KiB request frame limit, an idle timeout per stream,
and a penalty for every protocol violation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from storage.cid import Cid, parse_cid
from storage.errors import CorruptContent, InvalidCID, NotFound, StorageError
from storage.exchange.wire import (
    REQUEST_FRAME_LIMIT,
    DontHave,
    ErrorMsg,
    FramedStream,
    Have,
    Message,
    PeerClosed,
    ProtocolError,
    Stalled,
    WantBlock,
    WantHave,
    encode_block_frame,
    encode_frame,
)
from storage.store import ContentStore

__all__ = ["ExchangeServer", "Penalize", "Policy", "ServerLimits"]

log = structlog.get_logger("fedledger.storage.exchange")

Policy = Callable[[Any, Cid], bool]  # (peer_id, cid) -> may this peer have it?
Penalize = Callable[[Any, str], None]  # (peer_id, reason)


@dataclass(frozen=True)
class ServerLimits:
    max_streams_per_peer: int = 8
    max_streams_total: int = 64
    idle_timeout: float = 30.0  # close a stream with no request for this long
    stall_timeout: float = 10.0  # give up on a peer that stops reading our reply


@dataclass
class ServerStats:
    streams: int = 0
    refused_busy: int = 0
    blocks_served: int = 0
    bytes_served: int = 0
    denied: int = 0
    protocol_errors: int = 0


def _allow_all(peer_id: Any, cid: Cid) -> bool:
    return True


class ExchangeServer:
    """Serves blocks of ``store`` to peers; install with ``host.set_stream_handler``."""

    def __init__(
        self,
        store: ContentStore,
        *,
        policy: Policy | None = None,
        penalize: Penalize | None = None,
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        self.store = store
        self.policy = policy or _allow_all
        self.penalize = penalize or (lambda peer, reason: None)
        self.limits = limits
        self.stats = ServerStats()
        self._per_peer: Counter[Any] = Counter()
        self._total = 0

    # ------------------------------------------------------------ policy

    def _policy(self, peer: Any, cid: Cid) -> bool:
        try:
            return bool(self.policy(peer, cid))
        except Exception as e:  # a broken policy must deny, not crash the handler
            log.warning("exchange.policy_error", peer=str(peer), cid=str(cid), error=repr(e))
            return False

    def allowed(self, peer: Any, cid: Cid, root: Cid | None) -> bool:
        """May ``peer`` get ``cid``? Decided on the object (manifest) the chunk belongs to.

        With a ``root`` the chunk must be part of that manifest and the policy
        judges the root. Without one, a chunk that belongs to stored manifests is
        served only if the policy allows at least one of them, so a restricted
        object (an encrypted update) cannot be pulled chunk by chunk.
        """
        if root is not None:
            if root != cid and not self.store.chunk_in_manifest(cid, root):
                return False
            return self._policy(peer, root)
        if not self._policy(peer, cid):
            return False
        users = self.store.manifests_using(cid)
        return not users or any(self._policy(peer, m) for m in users)

    def _load_block(self, cid: Cid) -> bytes:
        """The verified bytes to send (tests override this to play a misbehaving peer)."""
        return self.store.get_block(cid)

    # ------------------------------------------------------------ handler

    async def handle(self, stream: Any) -> None:
        """The libp2p stream handler. Never raises (except cancellation)."""
        peer = _peer_of(stream)
        fs = FramedStream(
            stream, stall_timeout=self.limits.stall_timeout, read_timeout=self.limits.idle_timeout
        )
        if (
            self._per_peer[peer] >= self.limits.max_streams_per_peer
            or self._total >= self.limits.max_streams_total
        ):
            self.stats.refused_busy += 1
            try:
                with trio.move_on_after(1):
                    await fs.write_message(ErrorMsg("busy", "too many concurrent streams"))
            except StorageError:
                pass
            await fs.close()
            return
        self._per_peer[peer] += 1
        self._total += 1
        self.stats.streams += 1
        try:
            await self._serve(peer, fs)
        except (PeerClosed, Stalled):
            await fs.reset()
        except ProtocolError as e:
            self.stats.protocol_errors += 1
            self.penalize(peer, "exchange-malformed")
            log.info("exchange.protocol_error", peer=str(peer), error=str(e))
            try:
                with trio.move_on_after(1):
                    await fs.write_message(ErrorMsg("malformed", str(e)[:200]))
            except StorageError:
                pass
            await fs.reset()
        except Exception as e:  # a bug here must not take the host down
            log.error("exchange.server_error", peer=str(peer), error=repr(e))
            await fs.reset()
        else:
            await fs.close()
        finally:
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]
            self._total -= 1

    async def _serve(self, peer: Any, fs: FramedStream) -> None:
        while True:
            try:
                msg = await fs.read_message(REQUEST_FRAME_LIMIT)
            except (PeerClosed, Stalled):
                return  # the client closed its side, or sat idle past idle_timeout
            await self._answer(peer, fs, msg)

    async def _answer(self, peer: Any, fs: FramedStream, msg: Message) -> None:
        if isinstance(msg, WantHave):
            root = _parse(msg.root) if msg.root is not None else None
            have: list[bytes] = []
            dont: list[bytes] = []
            for raw in msg.cids:
                cid = _parse(raw)
                present = self.store.has_block(cid) and self.allowed(peer, cid, root)
                (have if present else dont).append(raw)
            await fs.write_raw(
                encode_frame(Have(tuple(have))) + encode_frame(DontHave(tuple(dont)))
            )
        elif isinstance(msg, WantBlock):
            cid = _parse(msg.cid)
            root = _parse(msg.root) if msg.root is not None else None
            if not self.allowed(peer, cid, root):
                self.stats.denied += 1
                await fs.write_message(ErrorMsg("forbidden", f"{cid} is not served to this peer"))
                return
            try:
                data = self._load_block(cid)
            except (NotFound, CorruptContent):
                await fs.write_message(DontHave((msg.cid,)))
                return
            await fs.write_raw(encode_block_frame(msg.cid, data))
            self.stats.blocks_served += 1
            self.stats.bytes_served += len(data)
        else:
            raise ProtocolError(f"unexpected request {type(msg).__name__}")


def _parse(raw: bytes) -> Cid:
    try:
        return parse_cid(raw)
    except InvalidCID as e:
        raise ProtocolError(f"bad CID in request: {e}") from e


def _peer_of(stream: Any) -> Any:
    try:
        return stream.muxed_conn.peer_id
    except AttributeError:  # pragma: no cover - every libp2p stream has one
        return None

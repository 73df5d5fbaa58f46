"""Block sync: a node that is behind fetches committed blocks with their commits from peers.

Protocol ``/fedledger/blocksync/1.0.0`` over a libp2p stream: length-prefixed canonical
msgpack frames; the client sends ``StatusRequest``, ``BlockRequest(h)`` or
``RoundMessagesRequest(h, r)``, the server answers ``Status(base, height)``,
``BlockResponse(block, commit)``, ``NoBlock(h)`` or ``RoundMessages(h, payloads)`` (the
consensus messages it holds for a peer whose round stalled; see consensus/driver.py).
The commit served for the latest height is the server's seen commit; for older heights
the canonical one (the next block's last commit).

The syncer polls connected peers' heights. When a peer is two or more blocks ahead, or
one block ahead while this node's height has not moved for a while, it fetches the
missing blocks in order, from the peers that have them, and hands each to the consensus
driver, which verifies the commit against the validator set of that height and commits
it through the application. Any bad answer costs the peer points and the block is
fetched elsewhere. Then consensus continues live at the new height.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ledger.block import Block
from ledger.codec import CodecError, decode_record, encode, record
from ledger.store import ChainStore
from ledger.votes import Commit

PROTOCOL = "/fedledger/blocksync/1.0.0"
MAX_FRAME = 8 * 1024 * 1024
# One request per stream: the client opens a stream per request anyway, and a server that
# waited for a second request kept every stream whose close got lost under load open for
# the read timeout, until the per-peer stream limit refused (and penalised) a lagging peer.
MAX_REQUESTS_PER_STREAM = 1
READ_TIMEOUT_S = 10
PENALTY_BAD_BLOCK = 50
PENALTY_TIMEOUT = 5


class SyncMessage:
    """Base of the block sync frames."""


@record(260)
@dataclass(frozen=True)
class StatusRequest(SyncMessage):
    pass


@record(261)
@dataclass(frozen=True)
class Status(SyncMessage):
    base: int
    height: int


@record(262)
@dataclass(frozen=True)
class BlockRequest(SyncMessage):
    height: int


@record(263)
@dataclass(frozen=True)
class BlockResponse(SyncMessage):
    block: Block
    commit: Commit


@record(264)
@dataclass(frozen=True)
class NoBlock(SyncMessage):
    height: int


@record(265)
@dataclass(frozen=True)
class RoundMessagesRequest(SyncMessage):
    """A stalled node asks for the consensus messages of its height and round (and for
    the proposals too when it has none for its round)."""

    height: int
    round: int
    proposals: bool


@record(266)
@dataclass(frozen=True)
class RoundMessages(SyncMessage):
    """Consensus gossip payloads (votes, proposals) the server holds; verified as gossip."""

    height: int
    messages: tuple[bytes, ...]


class SyncError(Exception):
    pass


async def read_frame(stream: Any) -> SyncMessage | None:
    head = await _read_exact(stream, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise SyncError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    body = await _read_exact(stream, n)
    if body is None:
        raise SyncError("stream ended inside a frame")
    try:
        return decode_record(body, SyncMessage, max_size=MAX_FRAME)  # type: ignore[type-abstract]
    except CodecError as e:
        raise SyncError(f"malformed frame: {e}") from None


async def write_frame(stream: Any, msg: SyncMessage) -> None:
    body = encode(msg)
    await stream.write(struct.pack(">I", len(body)) + body)


async def _read_exact(stream: Any, n: int) -> bytes | None:
    """Exactly ``n`` bytes; None on a clean end of stream before the first byte."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            if not buf:
                return None
            raise SyncError("stream ended inside a frame")
        buf += chunk
    return bytes(buf)


class Network(Protocol):
    def connected_peers(self) -> list[str]: ...

    async def new_stream(self, peer_id: str, protocol: str) -> Any: ...

    def penalize(self, peer: str, points: int, reason: str) -> None: ...


# ---------------------------------------------------------------- server


class BlockSyncServer:
    def __init__(
        self,
        store: ChainStore,
        height: Callable[[], int],
        round_messages: Callable[[int, int, bool], list[bytes]] | None = None,
    ):
        self.store = store
        self.height = height
        self.round_messages = round_messages

    async def handle(self, stream: Any) -> None:
        try:
            for _ in range(MAX_REQUESTS_PER_STREAM):
                with trio.fail_after(READ_TIMEOUT_S):
                    req = await read_frame(stream)
                if req is None:
                    break
                await write_frame(stream, self.answer(req))
        except (SyncError, trio.TooSlowError):
            await stream.reset()
            return
        try:
            await stream.close()
        except Exception:  # the client reset the stream once it had the answer
            pass

    def answer(self, req: SyncMessage) -> SyncMessage:
        top = self.height()
        if isinstance(req, StatusRequest):
            return Status(self.store.base if top else 0, top)
        if isinstance(req, BlockRequest):
            h = req.height
            block = self.store.block(h) if 0 < h <= top else None
            commit = None
            if block is not None:
                commit = self.store.commit(h) if h < top else self.store.seen_commit(h)
                if commit is None:
                    commit = self.store.seen_commit(h)
            if block is None or commit is None:
                return NoBlock(h)
            return BlockResponse(block, commit)
        if isinstance(req, RoundMessagesRequest):
            held = (
                self.round_messages(req.height, req.round, req.proposals)
                if self.round_messages
                else []
            )
            return RoundMessages(req.height, tuple(held))
        raise SyncError(f"unexpected request {type(req).__name__}")


# ---------------------------------------------------------------- client


class BlockSyncer:
    """Keeps this node's chain up with its peers when consensus alone cannot."""

    def __init__(
        self,
        network: Network,
        committed_height: Callable[[], int],
        apply: Callable[[Block, Commit], Awaitable[str]],
        log: Any,
        poll_s: float = 1.0,
        stall_s: float = 4.0,
        request_timeout_s: float = 10.0,
    ):
        self.network = network
        self.committed_height = committed_height
        self.apply = apply
        self.log = log
        self.poll_s = poll_s
        self.stall_s = stall_s
        self.request_timeout_s = request_timeout_s
        self.catching_up = False
        self.peer_heights: dict[str, int] = {}
        self.synced_blocks = 0
        self._wake = trio.Event()
        self._last_height = -1
        self._last_change = 0.0

    def poke(self, height: int = 0) -> None:
        """Something suggests we are behind (a message from a future height): look now."""
        self._wake.set()

    async def run(self) -> None:
        """Poll peers' heights at start, when poked, and while this node's height is stuck
        (backing off up to 8 s when nobody is ahead: a halted chain needs no traffic)."""
        backoff = self.poll_s
        next_poll = 0.0
        first = True
        while True:
            with trio.move_on_after(self.poll_s):
                await self._wake.wait()
            woke = self._wake.is_set()
            self._wake = trio.Event()
            now = trio.current_time()
            ours = self.committed_height()
            if ours != self._last_height:
                self._last_height, self._last_change = ours, now
                backoff = self.poll_s
            stalled = now - self._last_change >= self.stall_s
            if not (first or woke or (stalled and now >= next_poll)):
                continue
            first = False
            ahead = await self.poll_once()
            backoff = self.poll_s if ahead else min(8.0, backoff * 2)
            next_poll = trio.current_time() + backoff

    async def poll_once(self) -> bool:
        """Ask peers for their heights and catch up if needed; True if a peer was ahead."""
        now = trio.current_time()
        ours = self.committed_height()
        if ours != self._last_height:
            self._last_height, self._last_change = ours, now
        await self._refresh_heights()
        best = max(self.peer_heights.values(), default=0)
        stalled = now - self._last_change >= self.stall_s
        if best >= ours + 2 or (best >= ours + 1 and stalled):
            await self.catch_up(best)
            return True
        return False

    async def _refresh_heights(self) -> None:
        peers = self.network.connected_peers()
        heights: dict[str, int] = {}

        async def ask(peer: str) -> None:
            try:
                with trio.fail_after(2):
                    st = await self._request(peer, StatusRequest())
                if isinstance(st, Status):
                    heights[peer] = st.height
            except Exception:
                pass

        async with trio.open_nursery() as n:
            for p in peers[:16]:
                n.start_soon(ask, p)
        self.peer_heights = heights

    async def fetch_round_messages(
        self,
        height: int,
        round_: int,
        proposals: bool,
        take: Callable[[str, bytes], Awaitable[bool]],
        timeout_s: float = 5.0,
        max_peers: int = 16,
    ) -> int:
        """Ask connected peers at once for their messages of (height, round); hand each
        payload to ``take(peer, payload)``, which returns False to stop reading that peer's
        answer (a bad message). Returns how many payloads were taken."""
        taken = 0

        async def ask(peer: str) -> None:
            nonlocal taken
            with trio.move_on_after(timeout_s):
                try:
                    res = await self._request(peer, RoundMessagesRequest(height, round_, proposals))
                except Exception:  # unreachable or slow peer: gossip may still deliver
                    return
                if not isinstance(res, RoundMessages) or res.height != height:
                    return
                for payload in res.messages:
                    taken += 1
                    if not await take(peer, payload):
                        return

        async with trio.open_nursery() as n:
            for p in self.network.connected_peers()[:max_peers]:
                n.start_soon(ask, p)
        return taken

    async def _request(self, peer: str, req: SyncMessage) -> SyncMessage | None:
        stream = await self.network.new_stream(peer, PROTOCOL)
        try:
            await write_frame(stream, req)
            return await read_frame(stream)
        finally:
            # the answer is in (or we gave up): a reset frees both ends at once, where a
            # close waits for the peer's side under load
            with trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:  # already closed by the server: nothing to free
                    pass

    async def catch_up(self, target: int) -> None:
        self.catching_up = True
        start = self.committed_height()
        self.log.info("block sync: catching up", from_height=start, to_height=target)
        try:
            while self.committed_height() < target:
                h = self.committed_height() + 1
                if not await self._fetch_and_apply(h):
                    break
            self.log.info(
                "block sync: caught up",
                height=self.committed_height(),
                blocks=self.committed_height() - start,
            )
        finally:
            self.catching_up = False

    async def _fetch_and_apply(self, h: int) -> bool:
        candidates = sorted(
            (p for p, ph in self.peer_heights.items() if ph >= h),
            key=lambda p: -self.peer_heights[p],
        )
        for peer in candidates:
            try:
                with trio.fail_after(self.request_timeout_s):
                    resp = await self._request(peer, BlockRequest(h))
            except trio.TooSlowError:
                self.network.penalize(peer, PENALTY_TIMEOUT, "block sync timeout")
                continue
            except Exception as e:
                self.log.debug("block sync request failed", peer=peer, error=repr(e))
                continue
            if not isinstance(resp, BlockResponse) or resp.block.height != h:
                continue
            if self.committed_height() >= h:
                return True  # consensus committed it meanwhile
            err = await self.apply(resp.block, resp.commit)
            if not err:
                self.synced_blocks += 1
                return True
            if self.committed_height() >= h:
                return True
            self.network.penalize(peer, PENALTY_BAD_BLOCK, f"bad synced block {h}: {err}")
            self.log.warning("block sync: peer served a bad block", peer=peer, height=h, error=err)
        return False

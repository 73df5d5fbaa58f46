"""Exchange client: resolve a CID's manifest, then pull its chunks from several peers at once.

How a fetch runs (ADR 0303):

1. *Announcement by asking*: send ``WantHave([cid])`` to the connected peers
   (or the peers given); those answering ``Have`` are the providers. With ``prefer``,
   those peers are asked first and nobody else when one has it (a fetch that they then
   fail to serve starts again with everyone).
2. Fetch the manifest block from the first provider that serves bytes hashing to
   the CID; decode it strictly; refuse objects over ``store.max_content_bytes``
   and check the quota before any chunk moves.
3. ``WantHave(root=cid, chunks)`` to the providers gives per-chunk availability.
4. Workers, ``per_peer_concurrency`` per provider, each on its own stream,
   take the next pending chunk that their peer has, request it with
   ``WantBlock``, and hand the bytes to ``store.put_block`` which hashes them
   before writing. Memory is bounded by ``peers x concurrency x block size``.
5. Any fault (bad bytes, malformed frame, stall, reset) excludes that peer for
   the rest of the fetch, penalises it through the node's callback, and puts
   the chunk back for another provider. ``DontHave`` just prunes availability.
6. When every chunk is stored, the manifest (and the pin) is committed in one
   synced batch, so a crash mid-fetch leaves only unpinned chunks for GC.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
import trio

from storage.cid import Cid, parse_cid
from storage.errors import (
    ChunkUnavailable,
    ContentTooLarge,
    CorruptContent,
    FetchError,
    InvalidManifest,
    QuotaExceeded,
)
from storage.exchange.wire import (
    BLOCK_FRAME_LIMIT,
    MAX_WANT,
    PROTOCOL_ID,
    REQUEST_FRAME_LIMIT,
    Block,
    DontHave,
    ErrorMsg,
    FramedStream,
    FrameTooLarge,
    Have,
    Message,
    PeerClosed,
    ProtocolError,
    Stalled,
    WantBlock,
    WantHave,
    decode_message,
    parse_block,
)
from storage.manifest import Manifest, decode_manifest
from storage.store import ContentStore, Hold

__all__ = ["ClientStats", "ExchangeClient", "FetchLimits", "Progress"]

log = structlog.get_logger("fedledger.storage.exchange")

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
_FRAME_SLACK = 128  # Block record overhead around the data
SERVED_BY_ENTRIES = 1024  # objects whose providers `providers_of` remembers


@dataclass(frozen=True)
class FetchLimits:
    per_peer_concurrency: int = 4  # streams (and so outstanding requests) per provider
    max_peers: int = 8  # providers used by one fetch
    stall_timeout: float = 10.0  # no byte for this long on a stream = the peer stalled
    min_rate: int = 64 * 1024  # bytes/s; a block slower than this times out (trickling peers)
    discovery_timeout: float = 10.0  # for a WantHave round trip
    # open streams to one peer across all of this node's fetches: at most the serving
    # side's default cap (ServerLimits.max_streams_per_peer), so that a burst of fetches
    # waits here instead of being refused "busy"
    streams_per_peer: int = 8
    busy_retries: int = 4  # a peer that still says "busy": ask again after a short backoff


@dataclass
class ClientStats:
    fetches: int = 0
    blocks_fetched: int = 0
    bytes_fetched: int = 0
    bad_blocks: int = 0
    stalls: int = 0
    peer_faults: int = 0


class _NoBlock(Exception):
    """The peer answered DontHave or forbidden: not a fault, just not from this peer."""


class _Busy(Exception):
    """The peer refused the stream (its per-peer stream limit): try fewer streams, no fault."""


class _PeerFault(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _PeerSlots:
    """The node's budget of open exchange streams per peer, shared by all its fetches.

    Without it every fetch opened its own streams: a verifier fetching a dozen objects of
    three submissions from one trainer went over the trainer's per-peer cap, the refused
    WantHaves read as "not here", and content the trainer had came back "unavailable"."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"streams_per_peer must be >= 1, got {limit}")
        self.limit = limit
        self._sems: dict[Any, trio.Semaphore] = {}
        self._users: dict[Any, int] = {}  # holders and waiters; the entry goes at zero

    async def acquire(self, peer: Any) -> None:
        sem = self._sems.get(peer)
        if sem is None:
            sem = self._sems[peer] = trio.Semaphore(self.limit)
        self._users[peer] = self._users.get(peer, 0) + 1
        try:
            await sem.acquire()
        except BaseException:
            self._drop(peer)
            raise

    def release(self, peer: Any) -> None:
        self._sems[peer].release()
        self._drop(peer)

    def in_use(self, peer: Any) -> int:
        sem = self._sems.get(peer)
        return 0 if sem is None else self.limit - sem.value

    def _drop(self, peer: Any) -> None:
        self._users[peer] -= 1
        if not self._users[peer]:
            del self._users[peer], self._sems[peer]


class _StreamPool:
    """Streams to each peer, reused across requests of one fetch, all closed at the end.

    Each open stream holds one of the node's per-peer slots until it is closed."""

    def __init__(self, host: Any, stall_timeout: float, slots: _PeerSlots) -> None:
        self._host = host
        self._stall = stall_timeout
        self._slots = slots
        self._idle: dict[Any, list[FramedStream]] = {}
        self._open: dict[FramedStream, Any] = {}  # stream -> its peer

    async def get(self, peer: Any) -> FramedStream:
        idle = self._idle.get(peer)
        if idle:
            return idle.pop()
        await self._slots.acquire(peer)
        try:
            with trio.fail_after(self._stall):
                stream = await self._host.new_stream(peer, [PROTOCOL_ID])
        except BaseException as e:
            self._slots.release(peer)
            if isinstance(e, trio.TooSlowError):
                raise Stalled("opening an exchange stream timed out") from e
            if isinstance(e, Exception):  # libp2p: StreamFailure, SwarmException, ...
                raise PeerClosed(f"cannot open exchange stream: {type(e).__name__}: {e}") from e
            raise
        fs = FramedStream(stream, stall_timeout=self._stall)
        self._open[fs] = peer
        return fs

    def put(self, peer: Any, fs: FramedStream) -> None:
        self._idle.setdefault(peer, []).append(fs)

    def _forget(self, fs: FramedStream) -> bool:
        peer = self._open.pop(fs, None)
        if peer is None:
            return False
        idle = self._idle.get(peer)
        if idle and fs in idle:
            idle.remove(fs)
        self._slots.release(peer)
        return True

    async def discard(self, fs: FramedStream) -> None:
        """Reset a stream that is out of sync or whose peer failed."""
        if self._forget(fs):
            with trio.CancelScope(shield=True):
                await fs.reset()

    async def retire(self, fs: FramedStream) -> None:
        """Close a stream between requests that this fetch needs no more (frees its slot)."""
        if self._forget(fs):
            with trio.CancelScope(shield=True):
                await fs.close()

    async def keep_only(self, peers: Iterable[Any]) -> None:
        """Close the idle streams to every peer not in ``peers`` (after discovery)."""
        keep = set(peers)
        for peer in [p for p in self._idle if p not in keep]:
            for fs in list(self._idle[peer]):
                await self.retire(fs)

    async def aclose(self) -> None:
        idle = {id(fs) for streams in self._idle.values() for fs in streams}
        with trio.CancelScope(shield=True):
            for fs, peer in list(self._open.items()):
                self._slots.release(peer)
                # a stream we were cancelled in the middle of is out of sync: reset it
                await (fs.close() if id(fs) in idle else fs.reset())
        self._open.clear()
        self._idle.clear()


class ExchangeClient:
    """Fetches content from peers of an already-running libp2p host into a store."""

    def __init__(
        self,
        host: Any,
        store: ContentStore,
        *,
        penalize: Callable[[Any, str], None] | None = None,
        limits: FetchLimits = FetchLimits(),
    ) -> None:
        self.host = host
        self.store = store
        self.penalize = penalize or (lambda peer, reason: None)
        self.limits = limits
        self.stats = ClientStats()
        self._slots = _PeerSlots(limits.streams_per_peer)
        # who served the objects fetched lately (bounded LRU): the peers to ask first for
        # related objects, e.g. the checkpoints of an update (see ``fetch``'s ``prefer``)
        self._served_by: OrderedDict[Cid, tuple[Any, ...]] = OrderedDict()

    def providers_of(self, cid: Cid | str | bytes) -> list[Any]:
        """The peers that had ``cid`` when this client last fetched it (none if unknown)."""
        return list(self._served_by.get(parse_cid(cid), ()))

    def _remember(self, c: Cid, providers: list[Any]) -> None:
        if providers:
            self._served_by[c] = tuple(providers)
            self._served_by.move_to_end(c)
            while len(self._served_by) > SERVED_BY_ENTRIES:
                self._served_by.popitem(last=False)

    def _pool(self) -> _StreamPool:
        return _StreamPool(self.host, self.limits.stall_timeout, self._slots)

    # ------------------------------------------------------------ small requests

    async def _round_trip_have(
        self, fs: FramedStream, cids: Sequence[Cid], root: Cid | None
    ) -> set[Cid]:
        found: set[Cid] = set()
        asked = {bytes(c): c for c in cids}
        for i in range(0, len(cids), MAX_WANT):
            batch = tuple(bytes(c) for c in cids[i : i + MAX_WANT])
            await fs.write_message(WantHave(bytes(root) if root else None, batch))
            have = await fs.read_message(REQUEST_FRAME_LIMIT)
            if isinstance(have, ErrorMsg):
                raise (_Busy if have.code == "busy" else _NoBlock)(f"peer refused: {have.code}")
            dont = await fs.read_message(REQUEST_FRAME_LIMIT)
            if not isinstance(have, Have) or not isinstance(dont, DontHave):
                raise ProtocolError("expected Have then DontHave")
            for raw in have.cids:
                if raw not in asked:
                    raise ProtocolError("Have lists a CID that was not asked for")
                found.add(asked[raw])
        return found

    async def want_have(
        self,
        peer: Any,
        cids: Sequence[Cid],
        root: Cid | None = None,
        pool: _StreamPool | None = None,
    ) -> set[Cid]:
        """Which of ``cids`` ``peer`` says it has (empty on any failure; faults are penalised)."""
        own = pool is None
        p = pool or self._pool()
        try:
            for attempt in range(self.limits.busy_retries + 1):
                fs = await p.get(peer)
                try:
                    with trio.fail_after(self.limits.discovery_timeout):
                        found = await self._round_trip_have(fs, cids, root)
                except trio.TooSlowError as e:
                    raise Stalled("want-have timed out") from e
                except _Busy:
                    # its streams are taken by other nodes' requests (or ours, just closed
                    # but not yet seen closed there): "busy" is not "don't have"
                    await p.discard(fs)
                    if attempt == self.limits.busy_retries:
                        raise
                    await trio.sleep(_backoff(attempt))
                    continue
                p.put(peer, fs)
                return found
            raise AssertionError("unreachable")  # pragma: no cover
        except (ProtocolError, FrameTooLarge) as e:
            self._fault(peer, "exchange-malformed", e)
            return set()
        except (PeerClosed, Stalled, _NoBlock, _Busy) as e:
            log.debug("exchange.want_have_failed", peer=str(peer), error=str(e))
            return set()
        finally:
            if own:
                await p.aclose()

    async def _request_block(
        self, fs: FramedStream, cid: Cid, root: Cid | None, size: int | None
    ) -> memoryview:
        limit = BLOCK_FRAME_LIMIT if size is None else size + _FRAME_SLACK
        deadline = self.limits.stall_timeout + (size or BLOCK_FRAME_LIMIT) / self.limits.min_rate
        try:
            with trio.fail_after(deadline):
                await fs.write_message(WantBlock(bytes(root) if root else None, bytes(cid)))
                body = await fs.read_body(limit)
        except trio.TooSlowError as e:
            raise Stalled(f"block {cid} took longer than {deadline:.0f} s") from e
        block = parse_block(body)
        if block is not None:
            got_cid, data = block
        else:
            msg = decode_message(body, limit)
            if not isinstance(msg, Block):
                return self._not_a_block(msg)
            got_cid, data = msg.cid, memoryview(msg.data)
        if got_cid != bytes(cid):
            raise ProtocolError("Block answers a different CID")
        if size is not None and len(data) != size:
            raise CorruptContent(f"block {cid} has {len(data)} bytes, manifest says {size}")
        return data

    def _not_a_block(self, msg: Message) -> NoReturn:
        if isinstance(msg, DontHave):
            raise _NoBlock("dont-have")
        if isinstance(msg, ErrorMsg):
            if msg.code == "busy":
                raise _Busy("peer has too many of our streams")
            if msg.code == "forbidden":
                raise _NoBlock(msg.code)
            raise _PeerFault(f"peer error {msg.code}: {msg.message[:100]}")
        raise ProtocolError(f"unexpected reply {type(msg).__name__}")

    def _fault(self, peer: Any, reason: str, error: BaseException) -> None:
        self.stats.peer_faults += 1
        log.info("exchange.peer_fault", peer=str(peer), reason=reason, error=str(error)[:200])
        try:
            self.penalize(peer, reason)
        except Exception as e:  # the node's scoring hook must not break a fetch
            log.warning("exchange.penalize_failed", error=repr(e))

    # ------------------------------------------------------------ fetch

    def _candidates(self, peers: Iterable[Any] | None) -> list[Any]:
        from libp2p.peer.id import ID

        me = self.host.get_id()
        got = list(peers) if peers is not None else list(self.host.get_connected_peers())
        # the node keeps peer ids as base58 strings; libp2p wants ID objects
        try:
            got = [ID.from_base58(p) if isinstance(p, str) else p for p in got]
        except Exception as e:  # base58/multihash errors of several types
            raise FetchError(f"invalid peer id in {got!r}: {e}") from e
        out = [p for p in dict.fromkeys(got) if p != me]
        random.shuffle(out)  # spread load across providers; not consensus-relevant
        return out

    async def find_providers(
        self,
        cid: Cid | str | bytes,
        peers: Iterable[Any] | None = None,
        *,
        root: Cid | None = None,
        pool: _StreamPool | None = None,
    ) -> list[Any]:
        """Peers (among ``peers`` or all connected) that answer Have for ``cid``."""
        c = parse_cid(cid)
        candidates = self._candidates(peers)  # outside the nursery: errors stay plain
        found: list[Any] = []

        async def ask(peer: Any) -> None:
            if c in await self.want_have(peer, [c], root, pool):
                found.append(peer)

        async with trio.open_nursery() as n:
            for peer in candidates:
                n.start_soon(ask, peer)
        return found

    async def _discover(self, c: Cid, peers: Iterable[Any] | None, prefer: Iterable[Any] | None,
                        pool: _StreamPool) -> list[Any]:
        """Providers of ``c``: among ``prefer`` if any of them (still connected, and among
        ``peers`` when given) has it, else among ``peers`` or everyone connected. Each peer
        asked costs a stream open; with 13 peers that was most of a small object's fetch."""
        if prefer:
            allowed = set(self._candidates(peers)) if peers is not None else None
            connected = set(self.host.get_connected_peers())
            first = [p for p in self._candidates(prefer)
                     if p in connected and (allowed is None or p in allowed)]
            if first:
                found = await self.find_providers(c, first, pool=pool)
                if found:
                    return found
        return await self.find_providers(c, peers, pool=pool)

    async def _fetch_one_block(
        self, pool: _StreamPool, providers: list[Any], cid: Cid, size: int | None = None
    ) -> bytes:
        for peer in providers:
            fs: FramedStream | None = None
            try:
                fs = await pool.get(peer)
                data = await self._request_block(fs, cid, None, size)
                if not cid.verify(data):
                    raise CorruptContent(f"peer sent bytes that do not hash to {cid}")
                pool.put(peer, fs)
                return bytes(data)
            except _NoBlock:
                if fs is not None:
                    pool.put(peer, fs)  # the stream is fine, the peer just lacks the block
                continue
            except CorruptContent as e:
                self.stats.bad_blocks += 1
                self._fault(peer, "exchange-bad-block", e)
            except _Busy:
                log.debug("exchange.peer_busy", peer=str(peer))
            except Stalled as e:
                self.stats.stalls += 1
                self._fault(peer, "exchange-stall", e)
            except (ProtocolError, _PeerFault) as e:
                self._fault(peer, "exchange-malformed", e)
            except PeerClosed as e:
                log.debug("exchange.peer_closed", peer=str(peer), error=str(e))
            if fs is not None and fs in pool._open:
                await pool.discard(fs)
        raise ChunkUnavailable(f"no peer served {cid} (asked {len(providers)})")

    async def fetch(
        self,
        cid: Cid | str | bytes,
        *,
        peers: Iterable[Any] | None = None,
        pin: str | None = None,
        progress: Progress | None = None,
        prefer: Iterable[Any] | None = None,
    ) -> Cid:
        """Make ``cid`` (a manifest with all its chunks, or one raw block) present locally.

        ``prefer``: peers likely to have it (e.g. ``providers_of`` a related object); when one
        of them has it, no other peer is asked.
        Raises :class:`ChunkUnavailable` when no peer serves some block,
        :class:`ContentTooLarge`, :class:`QuotaExceeded`, :class:`InvalidCID`.
        Already-present content returns at once (pinned if ``pin`` is given);
        a local manifest with missing (quarantined) chunks is repaired.
        """
        c = parse_cid(cid)
        self.stats.fetches += 1
        if self.store.has(c):
            if pin is not None:
                self.store.pin(c, pin)
            return c
        if prefer:
            try:
                return await self._fetch(c, peers, prefer, pin, progress)
            except ChunkUnavailable:
                pass  # the preferred peers had it but did not serve it: everyone, as usual
        return await self._fetch(c, peers, None, pin, progress)

    async def _fetch(self, c: Cid, peers: Iterable[Any] | None, prefer: Iterable[Any] | None,
                     pin: str | None, progress: Progress | None) -> Cid:
        pool = self._pool()
        try:
            with self.store.hold() as hold:
                hold.add(c.multihash)
                if c.is_manifest:
                    providers = await self._fetch_object(c, pool, hold, peers, prefer, pin,
                                                         progress)
                else:
                    providers = await self._discover(c, peers, prefer, pool)
                    await pool.keep_only(providers)
                    data = await self._fetch_one_block(pool, providers, c)
                    self.store.put_block(data, expected=c, hold=hold)
                    if pin is not None:
                        self.store.pin(c, pin)
                    if progress is not None:
                        _report(progress, len(data), len(data))
        finally:
            await pool.aclose()
        self._remember(c, providers)
        return c

    async def _fetch_object(
        self,
        c: Cid,
        pool: _StreamPool,
        hold: Hold,
        peers: Iterable[Any] | None,
        prefer: Iterable[Any] | None,
        pin: str | None,
        progress: Progress | None,
    ) -> list[Any]:
        """Fetch a manifest and its missing chunks; returns the providers found."""
        local = self.store.has_block(c)
        providers = await self._discover(c, peers, prefer, pool)
        # a stream held idle to a peer this fetch will not use would take a slot that
        # another fetch may be waiting for
        await pool.keep_only(providers[: self.limits.max_peers])
        if local:
            manifest_bytes = self.store.get_block(c)
        else:
            if not providers:
                raise ChunkUnavailable(f"no connected peer has {c}")
            manifest_bytes = await self._fetch_one_block(pool, providers, c)
        try:
            manifest = decode_manifest(manifest_bytes)
        except InvalidManifest as e:
            raise FetchError(f"{c} names bytes that are not a valid manifest: {e}") from e
        self._check_limits(c, manifest, 0 if local else len(manifest_bytes))
        missing: dict[Cid, int] = {}
        for ref in manifest.chunks:
            chunk = ref.chunk_cid
            hold.add(chunk.multihash)
            if chunk not in missing and not self.store.has_block(chunk):
                missing[chunk] = ref.size
        total = manifest.total_size
        already = total - sum(missing.values())  # duplicates inside one object counted once
        if missing:
            if not providers:
                raise ChunkUnavailable(f"no connected peer has {c}")
            run = _FetchRun(self, c, missing, pool, hold, progress, total, already)
            await run.discover(providers[: self.limits.max_peers])
            await run.run()
        if progress is not None:
            _report(progress, total, total)
        if local:
            if pin is not None:
                self.store.pin(c, pin)
        else:
            self.store.commit_manifest(manifest_bytes, pin=pin, expected=c)
        return providers

    def _check_limits(self, c: Cid, manifest: Manifest, manifest_len: int) -> None:
        if manifest.total_size > self.store.max_content_bytes:
            raise ContentTooLarge(
                f"{c} is {manifest.total_size} bytes, over this node's limit of "
                f"{self.store.max_content_bytes} bytes"
            )
        quota = self.store.quota_bytes
        if quota is None:
            return
        need = manifest_len + sum(
            ref.size
            for ref in {r.cid: r for r in manifest.chunks}.values()
            if not self.store.has_block(ref.chunk_cid)
        )
        protected = self.store.protected_bytes()
        if protected + need > quota:
            raise QuotaExceeded(
                f"fetching {c} needs {need} bytes but only {quota - protected} of the "
                f"{quota}-byte quota are not pinned",
                needed=need,
                quota=quota,
                protected=protected,
            )


def _backoff(attempt: int) -> float:
    """Seconds before asking a busy peer again: 0.2, 0.4, 0.8, ... with jitter (so that the
    fetches it turned away do not all come back at once)."""
    return 0.2 * 2**attempt * (0.5 + random.random())


def _report(progress: Progress, done: int, total: int) -> None:
    try:
        progress(done, total)
    except Exception as e:  # a UI callback must not abort a fetch
        log.warning("exchange.progress_callback_failed", error=repr(e))


class _FetchRun:
    """The parallel chunk download of one manifest (one fetch call)."""

    def __init__(
        self,
        client: ExchangeClient,
        root: Cid,
        missing: dict[Cid, int],
        pool: _StreamPool,
        hold: Hold,
        progress: Progress | None,
        total: int,
        done: int,
    ) -> None:
        self.client = client
        self.root = root
        self.sizes = missing
        self.pool = pool
        self.hold = hold
        self.progress = progress
        self.total = total
        self.done_bytes = done
        self.pending: dict[Cid, None] = dict.fromkeys(missing)  # insertion-ordered queue
        self.in_flight: set[Cid] = set()
        self.providers: dict[Cid, set[Any]] = {c: set() for c in missing}
        self.failed: dict[Cid, set[Any]] = {c: set() for c in missing}
        self.excluded: set[Any] = set()
        self.error: BaseException | None = None
        self._changed = trio.Event()
        self._peers: list[Any] = []
        self._workers: dict[Any, int] = {}

    async def discover(self, peers: list[Any]) -> None:
        cids = list(self.sizes)

        async def ask(peer: Any) -> None:
            for c in await self.client.want_have(peer, cids, self.root, self.pool):
                self.providers[c].add(peer)
            self._peers.append(peer)

        async with trio.open_nursery() as n:
            for peer in peers:
                n.start_soon(ask, peer)
        orphans = [c for c, ps in self.providers.items() if not ps]
        if orphans:
            raise ChunkUnavailable(
                f"{len(orphans)} chunk(s) of {self.root} are on no reachable peer, "
                f"first {orphans[0]}"
            )

    def _usable(self, cid: Cid, peer: Any) -> bool:
        return (
            peer in self.providers[cid]
            and peer not in self.excluded
            and peer not in self.failed[cid]
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _take(self, peer: Any) -> Cid | None:
        for cid in self.pending:
            if self._usable(cid, peer):
                del self.pending[cid]
                self.in_flight.add(cid)
                return cid
        return None

    def _give_back(self, cid: Cid, peer: Any | None) -> None:
        self.in_flight.discard(cid)
        if peer is not None:
            self.failed[cid].add(peer)
        self.pending[cid] = None
        if not any(self._usable(cid, p) for p in self.providers[cid]):
            self.error = ChunkUnavailable(
                f"chunk {cid} of {self.root}: every provider failed or lacks it"
            )
        self._notify()

    def _may_get_work(self, peer: Any) -> bool:
        return peer not in self.excluded and any(self._usable(c, peer) for c in self.in_flight)

    async def run(self) -> None:
        limits = self.client.limits
        await self.pool.keep_only(p for p in self._peers
                                  if any(p in ps for ps in self.providers.values()))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in self._peers:
                if any(peer in ps for ps in self.providers.values()):
                    self._workers[peer] = limits.per_peer_concurrency
                    for _ in range(limits.per_peer_concurrency):
                        nursery.start_soon(self._worker, peer)
        if self.error is not None:
            raise self.error
        if self.pending or self.in_flight:  # pragma: no cover - every exit path sets error
            raise ChunkUnavailable(f"{len(self.pending)} chunk(s) of {self.root} not fetched")

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._nursery.cancel_scope.cancel()

    async def _worker(self, peer: Any) -> None:
        client = self.client
        fs: FramedStream | None = None
        clean = False  # the stream is between requests (safe to hand back to the pool)
        busy = 0
        try:
            while self.error is None:
                if fs is None and any(self._usable(c, peer) for c in self.pending):
                    # the stream first, then a chunk: a worker waiting for one of the
                    # node's stream slots must not hold a chunk that the workers with
                    # streams would wait for (they hold the slots: deadlock)
                    try:
                        fs = await self.pool.get(peer)
                        clean = True
                    except (Stalled, PeerClosed) as e:
                        taken = self._take(peer)
                        if taken is not None:
                            self._peer_failed(peer, taken, e)
                        return
                cid = self._take(peer) if fs is not None else None
                if cid is None:
                    if not self._may_get_work(peer):
                        return
                    await self._changed.wait()
                    continue
                assert fs is not None  # a chunk is only taken with a stream in hand
                try:
                    clean = False
                    data = await client._request_block(fs, cid, self.root, self.sizes[cid])
                    clean = True
                    client.store.put_block(data, expected=cid, hold=self.hold)
                except _NoBlock:
                    self.providers[cid].discard(peer)
                    self._give_back(cid, None)
                    continue
                except _Busy:
                    # the peer caps our streams: this worker retires; the last one backs
                    # off and asks again (its cap may be taken by other nodes for a
                    # moment), then takes the peer out of this fetch (no penalty)
                    if fs is not None:
                        await self.pool.discard(fs)
                        fs = None
                    last = self._workers[peer] <= 1
                    if last and busy < client.limits.busy_retries:
                        self.in_flight.discard(cid)
                        self.pending[cid] = None
                        self._notify()
                        await trio.sleep(_backoff(busy))
                        busy += 1
                        continue
                    if last:
                        self.excluded.add(peer)
                    self._give_back(cid, None)
                    return
                except (CorruptContent, Stalled, PeerClosed, ProtocolError, _PeerFault) as e:
                    self._peer_failed(peer, cid, e)
                    if fs is not None:
                        await self.pool.discard(fs)
                        fs = None
                    return
                except Exception as e:  # local: quota, store closed, ... -> abort the fetch
                    self.in_flight.discard(cid)
                    self._fail(e)
                    return
                self.in_flight.discard(cid)
                self.done_bytes += len(data)
                client.stats.blocks_fetched += 1
                client.stats.bytes_fetched += len(data)
                if self.progress is not None:
                    _report(self.progress, self.done_bytes, self.total)
                self._notify()
            if self.error is not None:
                self._nursery.cancel_scope.cancel()
        finally:
            self._workers[peer] -= 1
            if fs is not None:
                # done with this peer: free the slot now, not at the end of the fetch
                await (self.pool.retire(fs) if clean else self.pool.discard(fs))

    def _peer_failed(self, peer: Any, cid: Cid, e: BaseException) -> None:
        client = self.client
        if peer in self.excluded:  # its other streams failing too: one fault, one penalty
            if isinstance(e, CorruptContent):
                client.stats.bad_blocks += 1
            self._give_back(cid, peer)
            return
        if isinstance(e, CorruptContent):
            client.stats.bad_blocks += 1
            client._fault(peer, "exchange-bad-block", e)
        elif isinstance(e, Stalled):
            client.stats.stalls += 1
            client._fault(peer, "exchange-stall", e)
        elif isinstance(e, (ProtocolError, _PeerFault)):
            client._fault(peer, "exchange-malformed", e)
        else:
            log.info("exchange.peer_lost", peer=str(peer), error=str(e)[:200])
        self.excluded.add(peer)
        self._give_back(cid, peer)
        if self.error is not None:
            self._nursery.cancel_scope.cancel()

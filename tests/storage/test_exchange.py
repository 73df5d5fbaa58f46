"""The exchange protocol between real py-libp2p hosts (Noise + yamux) on loopback, in one trio run."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plyvel
import pytest
import torch
import trio

from storage.cid import Cid, chunk_cid, manifest_cid
from storage.errors import (
    ChunkUnavailable,
    ContentTooLarge,
    FetchError,
    InvalidCID,
    QuotaExceeded,
)
from storage.exchange import Exchange, FetchLimits, ServerLimits
from storage.exchange.wire import (
    PROTOCOL_ID,
    Block,
    ErrorMsg,
    FramedStream,
    WantBlock,
    WantHave,
    encode_frame,
)
from storage.store import ContentStore
from storage.tensors import get_state_dict, put_state_dict

from .conftest import running_hosts

CS = 64 * 1024


def blob(n: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


@dataclass
class Node:
    host: Any
    store: ContentStore
    exchange: Exchange
    penalties: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def id(self) -> Any:
        return self.host.get_id()


@asynccontextmanager
async def make_nodes(
    tmp_path: Path,
    n: int = 3,
    *,
    chunk_size: int = CS,
    store_kwargs: dict[int, dict[str, Any]] | None = None,
    policies: dict[int, Any] | None = None,
    fetch_limits: FetchLimits = FetchLimits(stall_timeout=5.0),
    server_limits: ServerLimits = ServerLimits(),
) -> AsyncIterator[list[Node]]:
    with ExitStack() as stack:
        stores = [
            stack.enter_context(
                ContentStore(
                    tmp_path / f"node{i}",
                    chunk_size=chunk_size,
                    **(store_kwargs or {}).get(i, {}),
                )
            )
            for i in range(n)
        ]
        async with running_hosts(n) as hosts:
            nodes = []
            for i, (h, s) in enumerate(zip(hosts, stores, strict=True)):
                penalties: list[tuple[Any, str]] = []

                def penalize(peer: Any, reason: str, p: list[tuple[Any, str]] = penalties) -> None:
                    p.append((peer, reason))

                ex = Exchange(
                    h,
                    s,
                    policy=(policies or {}).get(i),
                    penalize=penalize,
                    fetch_limits=fetch_limits,
                    server_limits=server_limits,
                )
                ex.start()
                nodes.append(Node(h, s, ex, penalties))
            yield nodes


# ---------------------------------------------------------------- acceptance 2


async def test_three_nodes_fetch_50mb_model_from_two_peers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = {  # 50 MB of float32 weights in a few layers, like a real checkpoint
        "embed.weight": torch.randn(4000, 2000),
        "block.weight": torch.randn(2000, 2000),
        "block.bias": torch.randn(2000),
        "head.weight": torch.randn(1000, 500),
    }
    async with make_nodes(tmp_path, 3, chunk_size=1024 * 1024) as (a, b, c):
        cid = put_state_dict(a.store, model, pin="global model of task 1 round 0")
        assert put_state_dict(b.store, model) == cid  # B has the same model (same CID)
        size = a.store.stat(cid).size
        assert size > 50_000_000
        seen: list[tuple[int, int]] = []
        got = await c.exchange.fetch(
            cid, pin="global model", progress=lambda d, t: seen.append((d, t))
        )
        assert got == cid and c.store.has(cid) and c.store.is_pinned(cid)
        digest = hashlib.sha256(a.store.get_bytes(cid)).digest()
        assert hashlib.sha256(c.store.get_bytes(cid)).digest() == digest
        loaded = get_state_dict(c.store, cid)
        assert all(torch.equal(loaded[k], v) for k, v in model.items())
        # both peers served a real share of the chunks, in parallel
        assert a.exchange.server.stats.blocks_served >= 5
        assert b.exchange.server.stats.blocks_served >= 5
        assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (size, size)
        assert not (a.penalties or b.penalties or c.penalties)


async def test_peer_serving_corrupt_chunk_is_penalised_and_bypassed(tmp_path: Path) -> None:
    data = blob(40 * CS, 1)
    async with make_nodes(tmp_path) as (a, b, c):
        cid = a.store.put_bytes(data)
        b.store.put_bytes(data)
        real = b.exchange.server._load_block

        def evil(cid_: Cid) -> bytes:  # B flips one byte of every chunk it serves
            block = bytearray(real(cid_))
            if cid_.codec.value == "raw":
                block[0] ^= 1
            return bytes(block)

        b.exchange.server._load_block = evil  # type: ignore[method-assign,assignment]
        assert await c.exchange.fetch(cid) == cid
        assert c.store.get_bytes(cid) == data
        assert c.penalties == [(b.id, "exchange-bad-block")]
        assert c.exchange.client.stats.bad_blocks >= 1  # one penalty however many arrived
        assert a.exchange.server.stats.blocks_served >= 40 - b.exchange.server.stats.blocks_served


async def test_corrupt_disk_at_peer_is_quarantined_and_refetched(tmp_path: Path) -> None:
    data = blob(6 * CS, 2)
    async with make_nodes(tmp_path) as (a, b, c):
        cid = a.store.put_bytes(data)
        b.store.put_bytes(data, pin="keep")
        bad = b.store.get_manifest(cid).chunk_cids()[3]
        db: plyvel.DB = b.store._db  # flip a byte at rest behind the store's back
        raw = bytearray(db.get(b"B" + bad.multihash))
        raw[7] ^= 0xFF
        db.put(b"B" + bad.multihash, bytes(raw))
        # only B asked: B notices, quarantines, answers dont-have; C gets a clear error
        with pytest.raises(ChunkUnavailable):
            await c.exchange.fetch(cid, peers=[str(b.id)])  # base58 strings work too
        assert b.store.corrupt_blocks_found == 1 and not b.store.has_block(bad)
        assert await c.exchange.fetch(cid) == cid and c.store.get_bytes(cid) == data
        # B repairs its pinned copy from the network
        assert await b.exchange.fetch(cid) == cid and b.store.get_bytes(cid) == data
        assert not (a.penalties or b.penalties or c.penalties)  # honest corruption is no fault


async def test_peer_stalling_mid_chunk_times_out_then_falls_back(tmp_path: Path) -> None:
    data = blob(12 * CS, 3)
    release = trio.Event()
    limits = FetchLimits(stall_timeout=1.5)  # long enough that a loaded CI box never trips A
    async with make_nodes(tmp_path, fetch_limits=limits) as (a, b, c):
        cid = a.store.put_bytes(data)
        b.store.put_bytes(data)
        server = b.exchange.server
        real_answer = server._answer

        async def stall(peer: Any, fs: FramedStream, msg: Any) -> None:
            if isinstance(msg, WantBlock) and msg.cid != bytes(cid):
                frame = encode_frame(Block(msg.cid, server.store.get_block(msg.cid)))
                await fs.write_raw(frame[: len(frame) // 2])  # half a chunk, then silence
                await release.wait()
                return
            await real_answer(peer, fs, msg)

        server._answer = stall  # type: ignore[method-assign]
        try:
            assert await c.exchange.fetch(cid) == cid
        finally:
            release.set()
        assert c.store.get_bytes(cid) == data
        assert c.penalties == [(b.id, "exchange-stall")]


# ---------------------------------------------------------------- acceptance 3: bad input


async def test_unknown_and_malformed_cids_are_clear_errors(tmp_path: Path) -> None:
    async with make_nodes(tmp_path) as (a, b, c):
        with pytest.raises(ChunkUnavailable, match="no connected peer has"):
            await c.exchange.fetch(manifest_cid(b"nobody has this"))
        with pytest.raises(ChunkUnavailable, match="no peer served"):
            await c.exchange.fetch(chunk_cid(b"nobody has this"))
        with pytest.raises(InvalidCID):
            await c.exchange.fetch("bafk-malformed")
        with pytest.raises(FetchError, match="invalid peer id"):
            await c.exchange.fetch(chunk_cid(b"x"), peers=["not-a-peer-id"])
        cid = a.store.put_bytes(blob(3 * CS))  # the node keeps working
        assert await c.exchange.fetch(cid) == cid
        raw = a.store.get_manifest(cid).chunk_cids()[0]  # a single raw block
        assert await b.exchange.fetch(raw, pin="one chunk") == raw and b.store.is_pinned(raw)
        assert not (a.penalties or b.penalties or c.penalties)


async def test_content_over_limit_is_refused_before_transfer(tmp_path: Path) -> None:
    async with make_nodes(tmp_path, store_kwargs={2: {"max_content_bytes": 4 * CS}}) as (a, _, c):
        cid = a.store.put_bytes(blob(5 * CS))
        with pytest.raises(ContentTooLarge, match="limit"):
            await c.exchange.fetch(cid)
        assert a.exchange.server.stats.blocks_served == 1  # just the manifest
        small = a.store.put_bytes(blob(2 * CS))
        assert await c.exchange.fetch(small) == small


async def test_full_quota_is_a_clear_error(tmp_path: Path) -> None:
    async with make_nodes(tmp_path, store_kwargs={2: {"quota_bytes": 8 * CS}}) as (a, _, c):
        c.store.put_bytes(blob(6 * CS, 9), pin="own submission")
        cid = a.store.put_bytes(blob(4 * CS))
        with pytest.raises(QuotaExceeded, match="quota"):
            await c.exchange.fetch(cid)
        assert a.exchange.server.stats.blocks_served == 1
        small = a.store.put_bytes(blob(CS))
        assert await c.exchange.fetch(small) == small


async def test_serving_policy_restricts_objects_and_their_chunks(tmp_path: Path) -> None:
    secret_data = blob(3 * CS, 5)
    allowed: set[Any] = set()

    def policy(peer: Any, cid: Cid) -> bool:  # the HE rule: updates go to validators only
        return not (cid.is_manifest and cid == secret) or peer in allowed

    async with make_nodes(tmp_path, policies={0: policy}) as (a, b, c):
        secret = a.store.put_bytes(secret_data)
        allowed.add(b.id)
        with pytest.raises(ChunkUnavailable):
            await c.exchange.fetch(secret)
        chunk = a.store.get_manifest(secret).chunk_cids()[0]
        with pytest.raises(ChunkUnavailable):  # no side door: raw chunk without its root
            await c.exchange.fetch(chunk, peers=[a.id])
        assert a.exchange.server.stats.blocks_served == 0
        assert await b.exchange.fetch(secret) == secret
        assert not c.penalties


async def test_only_missing_chunks_move_for_a_new_version(tmp_path: Path) -> None:
    v1 = blob(20 * CS, 6)
    v2 = v1[: 18 * CS] + blob(2 * CS, 7)
    async with make_nodes(tmp_path, 2) as (a, c):
        c1, c2 = a.store.put_bytes(v1), a.store.put_bytes(v2)
        await c.exchange.fetch(c1)
        before = a.exchange.server.stats.bytes_served
        await c.exchange.fetch(c2)
        assert a.exchange.server.stats.bytes_served - before < 3 * CS
        assert c.store.get_bytes(c2) == v2


# ---------------------------------------------------------------- server protection


async def _open(host: Any, peer: Any) -> FramedStream:
    from libp2p.custom_types import TProtocol

    stream = await host.new_stream(peer, [TProtocol(PROTOCOL_ID)])
    return FramedStream(stream, stall_timeout=5.0)


async def test_streams_over_the_per_peer_limit_get_busy(tmp_path: Path) -> None:
    async with make_nodes(tmp_path, 2, server_limits=ServerLimits(max_streams_per_peer=2)) as (
        a,
        c,
    ):
        cid = a.store.put_bytes(b"x")
        held = []
        for _ in range(2):  # two live streams, proven live by a round trip each
            fs = await _open(c.host, a.id)
            await fs.write_message(WantHave(None, (bytes(cid),)))
            assert (await fs.read_message(1 << 16)).cids == (bytes(cid),)  # type: ignore[attr-defined]
            await fs.read_message(1 << 16)
            held.append(fs)
        extra = await _open(c.host, a.id)
        reply = await extra.read_message(1 << 16)
        assert isinstance(reply, ErrorMsg) and reply.code == "busy"
        assert a.exchange.server.stats.refused_busy == 1
        for fs in held:
            await fs.close()


async def test_fetch_adapts_to_a_peer_that_caps_our_streams(tmp_path: Path) -> None:
    data = blob(16 * CS, 8)
    async with make_nodes(
        tmp_path,
        2,
        server_limits=ServerLimits(max_streams_per_peer=2),
        fetch_limits=FetchLimits(per_peer_concurrency=4),
    ) as (a, c):
        cid = a.store.put_bytes(data)
        assert await c.exchange.fetch(cid) == cid and c.store.get_bytes(cid) == data
        assert a.exchange.server.stats.refused_busy >= 1  # it did refuse, and we coped
        assert not (a.penalties or c.penalties)


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\x00\x00\x00\x04\xc1\xc1\xc1\xc1", "garbage msgpack"),
        (b"\x10\x00\x00\x00", "100+ MB length prefix"),
        (encode_frame(Block(bytes(chunk_cid(b"x")), b"x")), "a reply sent as a request"),
        (encode_frame(WantHave(None, (b"\x01\x02",))), "malformed CID"),
        (
            encode_frame(
                WantHave(None, tuple(bytes(chunk_cid(i.to_bytes(2))) for i in range(1025)))
            ),
            "too many",
        ),
    ],
)
async def test_malformed_requests_are_penalised_and_node_keeps_serving(
    tmp_path: Path, frame: bytes, why: str
) -> None:
    async with make_nodes(tmp_path, 2) as (a, c):
        fs = await _open(c.host, a.id)
        await fs.write_raw(frame)
        reply = await fs.read_message(1 << 16)
        assert isinstance(reply, ErrorMsg) and reply.code == "malformed", why
        assert a.penalties == [(c.id, "exchange-malformed")]
        cid = a.store.put_bytes(blob(2 * CS))
        assert await c.exchange.fetch(cid) == cid


async def test_dont_have_keeps_the_stream_usable(tmp_path: Path) -> None:
    from storage.errors import NotFound
    async with make_nodes(tmp_path, 2) as (a, c):
        gone = a.store.put_bytes(b"evicted before we ask")
        kept = a.store.put_bytes(b"still here")
        real = a.exchange.server._load_block

        def lose(cid_: Cid) -> bytes:  # says Have, then cannot produce it: DontHave
            if cid_ == gone:
                raise NotFound("evicted")
            return real(cid_)

        a.exchange.server._load_block = lose  # type: ignore[method-assign,assignment]
        pool = c.exchange.client._pool()
        try:
            with pytest.raises(ChunkUnavailable):
                await c.exchange.client._fetch_one_block(pool, [a.id], gone)
            assert await c.exchange.client._fetch_one_block(pool, [a.id], kept)  # same stream
        finally:
            await pool.aclose()
        assert a.exchange.server.stats.streams == 1 and not c.penalties


async def test_many_concurrent_fetches_from_one_provider_all_succeed(tmp_path: Path) -> None:
    """A verifier fetches a dozen objects of several submissions at once, all from the one
    trainer that has them. Each fetch opens its own streams; together they once exceeded the
    provider's per-peer stream cap, the refused want-haves read as "not here", and fetches of
    content the provider had failed with "no connected peer has" (seen in CI). The client
    now caps its own streams per peer at the serving side's default, so they queue here."""
    objects = [blob(3 * CS + i, 100 + i) for i in range(12)]
    async with make_nodes(tmp_path, 2) as (a, c):
        cids = [a.store.put_bytes(o) for o in objects]
        got: dict[int, Cid] = {}

        async def one(i: int) -> None:
            got[i] = await c.exchange.fetch(cids[i])

        async with trio.open_nursery() as n:
            for i in range(len(cids)):
                n.start_soon(one, i)
        assert [got[i] for i in range(len(cids))] == cids
        assert all(c.store.get_bytes(x) == o for x, o in zip(cids, objects, strict=True))
        assert c.exchange.client._slots.in_use(a.id) == 0  # every stream gave its slot back
        assert not (a.penalties or c.penalties)


async def test_a_peer_that_stays_busy_is_asked_again_then_given_up(tmp_path: Path) -> None:
    """A "busy" peer is busy for a moment, not without the content: the client asks again
    with a backoff (``busy_retries`` times) before it calls the content unavailable."""
    async with make_nodes(tmp_path, 2, server_limits=ServerLimits(max_streams_per_peer=1),
                          fetch_limits=FetchLimits(stall_timeout=5.0, busy_retries=2)) as (a, c):
        cid = a.store.put_bytes(blob(2 * CS, 5))
        hog = await _open(c.host, a.id)  # takes the one stream a allows us
        await hog.write_message(WantHave(None, (bytes(cid),)))
        await hog.read_message(1 << 16)
        await hog.read_message(1 << 16)
        with pytest.raises(ChunkUnavailable, match="no connected peer has"):
            await c.exchange.fetch(cid)
        assert a.exchange.server.stats.refused_busy == 3  # the first try and two retries
        await hog.close()
        assert await c.exchange.fetch(cid) == cid  # free again: served
        assert not (a.penalties or c.penalties)


async def test_preferred_provider_spares_asking_every_peer(tmp_path: Path) -> None:
    """A verifier fetches an update, then its checkpoints from whoever served the update:
    each peer asked costs a stream open, and a validator of a 14-node testnet has 13."""
    from storage.errors import NotFound

    async with make_nodes(tmp_path, 4) as (a, b, d, c):
        update = a.store.put_bytes(blob(3 * CS, 1))
        checkpoint = a.store.put_bytes(blob(2 * CS, 2))
        elsewhere = b.store.put_bytes(blob(CS, 3))
        # Execute: the update from everyone; who had it is remembered
        await c.exchange.fetch(update)
        assert c.exchange.providers_of(update) == [a.id]
        asked = (b.exchange.server.stats.streams, d.exchange.server.stats.streams)
        # the checkpoint from the update's provider only: b and d see no stream
        await c.exchange.fetch(checkpoint, prefer=c.exchange.providers_of(update))
        assert c.store.get_bytes(checkpoint) == a.store.get_bytes(checkpoint)
        assert (b.exchange.server.stats.streams, d.exchange.server.stats.streams) == asked
        # a preferred peer without the object: everyone is asked after all
        await c.exchange.fetch(elsewhere, prefer=[a.id])
        assert c.store.get_bytes(elsewhere) == b.store.get_bytes(elsewhere)
        assert c.exchange.providers_of(elsewhere) == [b.id]
        # a preferred peer that says Have but does not serve: the others are asked after all
        both = a.store.put_bytes(blob(CS, 4))
        assert d.store.put_bytes(blob(CS, 4)) == both
        a.exchange.server._load_block = lambda cid_: (_ for _ in ()).throw(  # type: ignore
            NotFound("evicted"))
        await c.exchange.fetch(both, prefer=[a.id])
        assert c.store.get_bytes(both) == d.store.get_bytes(both)
        assert d.id in c.exchange.providers_of(both)
        assert not (a.penalties or b.penalties or c.penalties or d.penalties)

"""Exchange framing and messages, over an in-memory fake stream (unit level; real libp2p elsewhere)."""

from __future__ import annotations

import msgpack
import pytest
import trio
import trio.testing

from ledger.codec import encode
from storage.cid import chunk_cid, manifest_cid
from storage.exchange.wire import (
    MAX_WANT,
    Block,
    DontHave,
    ErrorMsg,
    FramedStream,
    FrameTooLarge,
    Have,
    PeerClosed,
    ProtocolError,
    Stalled,
    WantBlock,
    WantHave,
    decode_message,
    encode_block_frame,
    encode_frame,
    parse_block,
)


class FakeStream:
    """Serves ``data`` in ``piece``-byte reads, then EOF (or blocks forever if ``hang``)."""

    def __init__(self, data: bytes, piece: int = 3, *, hang: bool = False) -> None:
        self.data = data
        self.piece = piece
        self.hang = hang
        self.written = b""

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.data:
            if self.hang:
                await trio.sleep_forever()
            return b""
        out, self.data = self.data[: self.piece], self.data[self.piece :]
        return out

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.written += data


C = bytes(chunk_cid(b"c"))
MESSAGES = [
    WantHave(None, (C,)),
    WantHave(C, (C, C)),
    Have(()),
    DontHave((C,)),
    WantBlock(None, C),
    WantBlock(C, C),
    Block(C, b"\x00" * 1000),
    ErrorMsg("busy", "too many streams"),
]


@pytest.mark.parametrize("msg", MESSAGES)
async def test_frames_round_trip_through_tiny_reads(msg: object) -> None:
    fs = FramedStream(FakeStream(encode_frame(msg) * 2, piece=7), stall_timeout=1)  # type: ignore[arg-type]
    assert await fs.read_message(1 << 20) == msg
    assert await fs.read_message(1 << 20) == msg
    with pytest.raises(PeerClosed):
        await fs.read_message(1 << 20)


async def test_oversize_frame_rejected_before_buffering() -> None:
    frame = encode_frame(Block(C, b"\x00" * 5000))
    fs = FramedStream(FakeStream(frame[:4], piece=4, hang=True), stall_timeout=1)
    with pytest.raises(FrameTooLarge, match="limit"):
        await fs.read_message(4096)


async def test_eof_mid_frame_is_peer_closed() -> None:
    frame = encode_frame(Block(C, b"\x00" * 100))
    with pytest.raises(PeerClosed):
        await FramedStream(FakeStream(frame[:50]), stall_timeout=1).read_message(1 << 20)


async def test_stall_mid_frame_times_out(autojump_clock: trio.testing.MockClock) -> None:
    frame = encode_frame(Block(C, b"\x00" * 100))
    fs = FramedStream(FakeStream(frame[:50], piece=50, hang=True), stall_timeout=3)
    start = trio.current_time()
    with pytest.raises(Stalled):
        await fs.read_message(1 << 20)
    assert trio.current_time() - start == pytest.approx(3)


async def test_empty_frame_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="empty"):
        await FramedStream(FakeStream(b"\x00\x00\x00\x00"), stall_timeout=1).read_message(100)


async def test_write_message_frames_the_body() -> None:
    stream = FakeStream(b"")
    fs = FramedStream(stream, stall_timeout=1)
    await fs.write_message(Have((C,)))
    assert stream.written == encode_frame(Have((C,))) and fs.bytes_out == len(stream.written)


@pytest.mark.parametrize("n", [0, 1, 255, 256, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("cid", [C, bytes(manifest_cid(b"m"))])
def test_block_fast_path_matches_the_codec(n: int, cid: bytes) -> None:
    data = bytes(range(256)) * (n // 256) + b"\x07" * (n % 256)
    frame = encode_block_frame(cid, data)
    assert frame == encode_frame(Block(cid, data))
    got = parse_block(frame[4:])
    assert got is not None and got[0] == cid and bytes(got[1]) == data


@pytest.mark.parametrize(
    "body",
    [
        encode(Have((C,))),
        encode(Block(C, b"x"))[:-1],  # truncated
        encode(Block(C, b"x")) + b"\x00",  # trailing byte
        msgpack.packb([314, C, b"x"])[:-2] + b"\xc5\x00\x01x",  # non-shortest bin header
        b"\x93\xcd\x01\x3a\xc5\x00\x24" + C + b"\xc4\x01x",  # CID in bin16
        b"\x93\xcd\x01\x3a",
    ],
)
def test_block_fast_path_declines_anything_unusual(body: bytes) -> None:
    assert parse_block(body) is None  # the strict codec then decides (and rejects)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "malformed"),
        (msgpack.packb([399, 1]), "unknown type tag"),
        (msgpack.packb([311]), "needs 1 fields"),
        (msgpack.packb([314, C, "text"]), "expected bytes"),
        (msgpack.packb([313, None, C, 1]), "needs 2 fields"),
        (encode(Have(tuple([C] * (MAX_WANT + 1)))), "max"),
        (encode(Have((C,))) + b"\x00", "trailing"),
        (msgpack.packb({"a": 1, "b": 2}), "record array"),
        (msgpack.packb({"b": 1, "a": 2}), "not sorted"),
        (msgpack.packb([300, C, 1]), "not a Message"),  # a storage record, but not a message
    ],
)
def test_malformed_messages(body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_message(body, 1 << 20)

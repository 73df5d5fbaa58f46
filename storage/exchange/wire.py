"""Exchange wire format: length-prefixed canonical msgpack frames carrying six message records.

Frame = 4-byte big-endian body length + body; body = a canonical msgpack
record (`ledger.codec`, tags 310-315). Readers enforce a per-direction size
limit before buffering a body, so a peer cannot make us allocate more than
one block plus a few hundred bytes per stream.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from ledger.codec import CodecError, decode_record, encode, record
from storage.chunker import MAX_BLOCK_SIZE
from storage.errors import StorageError

__all__ = [
    "BLOCK_FRAME_LIMIT",
    "MAX_WANT",
    "PROTOCOL_ID",
    "REQUEST_FRAME_LIMIT",
    "Block",
    "DontHave",
    "ErrorMsg",
    "FramedStream",
    "FrameTooLarge",
    "Have",
    "Message",
    "PeerClosed",
    "ProtocolError",
    "Stalled",
    "WantBlock",
    "WantHave",
    "decode_message",
    "encode_block_frame",
    "encode_frame",
    "parse_block",
]

PROTOCOL_ID = "/fedledger/exchange/1.0.0"
MAX_WANT = 1024  # CIDs per WantHave / Have / DontHave
REQUEST_FRAME_LIMIT = 64 * 1024  # a full WantHave is ~40 KiB
BLOCK_FRAME_LIMIT = MAX_BLOCK_SIZE + 1024
_LEN = struct.Struct(">I")
_READ_SIZE = 256 * 1024


class ProtocolError(StorageError):
    """The peer sent something that is not a valid exchange frame or message."""


class FrameTooLarge(ProtocolError):
    pass


class PeerClosed(StorageError):
    """The stream ended (EOF, reset, or the connection went away)."""


class Stalled(StorageError):
    """No bytes arrived (or could be written) within the stall timeout."""


class Message:
    """Base of every exchange message record."""


@record(310)
@dataclass(frozen=True)
class WantHave(Message):
    """Which of ``cids`` do you have? ``root`` names the manifest they belong to, if any."""

    root: bytes | None
    cids: tuple[bytes, ...]


@record(311)
@dataclass(frozen=True)
class Have(Message):
    cids: tuple[bytes, ...]


@record(312)
@dataclass(frozen=True)
class DontHave(Message):
    cids: tuple[bytes, ...]


@record(313)
@dataclass(frozen=True)
class WantBlock(Message):
    root: bytes | None
    cid: bytes


@record(314)
@dataclass(frozen=True)
class Block(Message):
    cid: bytes
    data: bytes


@record(315)
@dataclass(frozen=True)
class ErrorMsg(Message):
    """``code`` is one of: busy, forbidden, malformed, too-large, unsupported, internal."""

    code: str
    message: str


def encode_frame(msg: Message) -> bytes:
    body = encode(msg)
    return _LEN.pack(len(body)) + body


# Canonical msgpack of Block(cid, data) is  93 cd013a  c4 <len> <cid>  <bin header> <data>:
# a fixarray of 3, the tag 314 as uint16, the CID as bin8, the data as the shortest bin form.
# Blocks are the only large messages; building and parsing them directly avoids three
# 1 MiB copies per block. Both paths produce/accept exactly the codec's canonical bytes.
_BLOCK_HEAD = b"\x93\xcd\x01\x3a"


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def encode_block_frame(cid: bytes, data: bytes | memoryview) -> bytes:
    """``encode_frame(Block(cid, data))`` with a single copy of ``data``."""
    head = _BLOCK_HEAD + _bin_header(len(cid)) + cid + _bin_header(len(data))
    return b"".join((_LEN.pack(len(head) + len(data)), head, data))


def parse_block(body: bytes) -> tuple[bytes, memoryview] | None:
    """``(cid, data)`` of a canonical Block body without copying the data; None if not one.

    None means "use :func:`decode_message`", which also reports any malformation.
    """
    if not body.startswith(_BLOCK_HEAD) or len(body) < 6 or body[4] != 0xC4:
        return None
    n_cid = body[5]
    pos = 6 + n_cid
    if len(body) < pos + 1:
        return None
    cid = body[6:pos]
    kind = body[pos]
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(kind)
    if width is None or len(body) < pos + 1 + width:
        return None
    n = int.from_bytes(body[pos + 1 : pos + 1 + width], "big")
    start = pos + 1 + width
    if start + n != len(body) or _bin_header(n)[0] != kind:  # exact length, shortest form
        return None
    return cid, memoryview(body)[start:]


def decode_message(body: bytes, limit: int) -> Message:
    try:
        msg = decode_record(body, Message, max_size=limit)
    except CodecError as e:
        raise ProtocolError(f"malformed exchange message: {e}") from e
    for field in ("cids",):
        cids = getattr(msg, field, None)
        if cids is not None and len(cids) > MAX_WANT:
            raise ProtocolError(f"{type(msg).__name__} lists {len(cids)} CIDs (max {MAX_WANT})")
    return msg


class FramedStream:
    """Frame reader/writer over a libp2p ``INetStream`` with a timeout on every read and write.

    ``stall_timeout`` bounds the wait for the next bytes (and for a write to be
    accepted); ``read_timeout`` overrides it for reads (a server waiting for the
    next request uses its idle timeout there).
    """

    def __init__(
        self, stream: Any, *, stall_timeout: float, read_timeout: float | None = None
    ) -> None:
        self.stream = stream
        self.stall_timeout = stall_timeout
        self.read_timeout = stall_timeout if read_timeout is None else read_timeout
        # received bytes as zero-copy views; a frame body is joined from them with one copy
        self._pieces: deque[memoryview] = deque()
        self._have = 0
        self.bytes_in = 0
        self.bytes_out = 0

    async def _fill(self, n: int) -> None:
        while self._have < n:
            want = max(n - self._have, _READ_SIZE)
            try:
                with trio.fail_after(self.read_timeout):
                    data = await self.stream.read(want)
            except trio.TooSlowError as e:
                raise Stalled(f"no data for {self.read_timeout} s") from e
            except Exception as e:  # libp2p raises StreamEOF/StreamReset/StreamError/...
                raise PeerClosed(f"stream ended: {type(e).__name__}") from e
            if not data:
                raise PeerClosed("stream ended")
            self._pieces.append(memoryview(data))
            self._have += len(data)
            self.bytes_in += len(data)

    def _take(self, n: int) -> bytes:
        out: list[memoryview] = []
        need = n
        while need:
            piece = self._pieces[0]
            if len(piece) <= need:
                out.append(self._pieces.popleft())
                need -= len(piece)
            else:
                out.append(piece[:need])
                self._pieces[0] = piece[need:]
                need = 0
        self._have -= n
        return out[0].tobytes() if len(out) == 1 else b"".join(out)

    async def read_body(self, limit: int) -> bytes:
        await self._fill(4)
        (n,) = _LEN.unpack(self._take(4))
        if n > limit:
            raise FrameTooLarge(f"frame of {n} bytes exceeds the {limit}-byte limit")
        if n == 0:
            raise ProtocolError("empty frame")
        await self._fill(n)
        return self._take(n)

    async def read_message(self, limit: int) -> Message:
        return decode_message(await self.read_body(limit), limit)

    async def write_message(self, msg: Message) -> None:
        await self.write_raw(encode_frame(msg))

    async def write_raw(self, frame: bytes) -> None:
        try:
            with trio.fail_after(self.stall_timeout):
                await self.stream.write(frame)
        except trio.TooSlowError as e:
            raise Stalled(f"write blocked for {self.stall_timeout} s") from e
        except Exception as e:
            raise PeerClosed(f"stream ended: {type(e).__name__}") from e
        self.bytes_out += len(frame)

    async def close(self) -> None:
        try:
            with trio.move_on_after(1):
                await self.stream.close()
        except Exception:  # closing a dead stream is not an error worth reporting
            pass

    async def reset(self) -> None:
        try:
            with trio.move_on_after(1):
                await self.stream.reset()
        except Exception:
            pass

"""The manifest: a content-addressed record listing an object's chunks, sizes and tensors.

Encoded with the shared canonical msgpack codec (`ledger.codec`) as record
tag 302, so one object has exactly one manifest encoding and one CID on
every node. Record tags 300-302 are used here (storage owns 300-399).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.codec import CodecError, decode_record, encode, record
from storage.chunker import MAX_BLOCK_SIZE
from storage.cid import Cid, Codec, manifest_cid, parse_cid
from storage.errors import InvalidCID, InvalidManifest

__all__ = [
    "MANIFEST_VERSION",
    "MAX_MEDIA_TYPE_LEN",
    "OCTET_STREAM",
    "SAFETENSORS_MEDIA_TYPE",
    "ChunkRef",
    "Manifest",
    "TensorInfo",
    "build_manifest",
    "decode_manifest",
]

MANIFEST_VERSION = 1
OCTET_STREAM = "application/octet-stream"
SAFETENSORS_MEDIA_TYPE = "application/vnd.safetensors"
MAX_MEDIA_TYPE_LEN = 127
MAX_TENSOR_NAME_LEN = 1024


@record(300)
@dataclass(frozen=True)
class ChunkRef:
    """One chunk: its binary raw CID and its length in bytes."""

    cid: bytes
    size: int

    def __post_init__(self) -> None:
        try:
            parsed = parse_cid(self.cid)
        except InvalidCID as e:
            raise ValueError(f"chunk cid: {e}") from e
        if parsed.codec is not Codec.RAW:
            raise ValueError("chunk cid must use the raw codec")
        if not 0 < self.size <= MAX_BLOCK_SIZE:
            raise ValueError(f"chunk size {self.size} outside (0, {MAX_BLOCK_SIZE}]")

    @property
    def chunk_cid(self) -> Cid:
        return parse_cid(self.cid)


@record(301)
@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's data lies in the object (absolute byte offsets) and its type."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_TENSOR_NAME_LEN:
            raise ValueError("tensor name must be 1..1024 characters")
        if not self.dtype or len(self.dtype) > 16:
            raise ValueError("tensor dtype must be 1..16 characters")
        if any(d < 0 for d in self.shape) or len(self.shape) > 64:
            raise ValueError("tensor shape must be at most 64 non-negative dimensions")
        if not 0 <= self.begin <= self.end:
            raise ValueError("tensor offsets must satisfy 0 <= begin <= end")


@record(302)
@dataclass(frozen=True)
class Manifest:
    """A whole object: the concatenation of ``chunks`` is its bytes."""

    version: int
    media_type: str
    total_size: int
    chunk_size: int  # the nominal size used to cut it (informational; chunks may be shorter)
    chunks: tuple[ChunkRef, ...]
    tensors: tuple[TensorInfo, ...]

    def __post_init__(self) -> None:
        if self.version != MANIFEST_VERSION:
            raise ValueError(f"unsupported manifest version {self.version}")
        if not self.media_type or len(self.media_type) > MAX_MEDIA_TYPE_LEN:
            raise ValueError("media type must be 1..127 characters")
        if not self.media_type.isascii() or not self.media_type.isprintable():
            raise ValueError("media type must be printable ASCII")
        if not 0 < self.chunk_size <= MAX_BLOCK_SIZE:
            raise ValueError("nominal chunk size out of range")
        if sum(c.size for c in self.chunks) != self.total_size:
            raise ValueError("chunk sizes do not add up to total_size")
        for t in self.tensors:
            if t.end > self.total_size:
                raise ValueError(f"tensor {t.name!r} ends past the object")

    def chunk_cids(self) -> list[Cid]:
        return [c.chunk_cid for c in self.chunks]

    def encode(self) -> bytes:
        return encode(self)

    def cid(self) -> Cid:
        return manifest_cid(self.encode())


def decode_manifest(data: bytes) -> Manifest:
    """Strictly decode manifest bytes; every failure is an :class:`InvalidManifest`."""
    try:
        return decode_record(data, Manifest, max_size=MAX_BLOCK_SIZE)
    except CodecError as e:
        raise InvalidManifest(f"invalid manifest: {e}") from e


def build_manifest(
    chunks: Sequence[tuple[Cid, int]],
    *,
    media_type: str,
    chunk_size: int,
    tensors: Sequence[TensorInfo] = (),
) -> tuple[Manifest, bytes, Cid]:
    """The manifest for ``chunks`` (in order), its canonical bytes and its CID."""
    try:
        m = Manifest(
            version=MANIFEST_VERSION,
            media_type=media_type,
            total_size=sum(size for _, size in chunks),
            chunk_size=chunk_size,
            chunks=tuple(ChunkRef(bytes(c), size) for c, size in chunks),
            tensors=tuple(tensors),
        )
    except ValueError as e:
        raise InvalidManifest(str(e)) from e
    data = encode(m)
    if len(data) > MAX_BLOCK_SIZE:
        raise InvalidManifest(
            f"manifest of {len(data)} bytes exceeds the {MAX_BLOCK_SIZE}-byte block limit "
            f"({len(chunks)} chunks); use a larger chunk size"
        )
    return m, data, manifest_cid(data)

"""Manifests: canonical encoding, strict decoding, validation of impossible layouts."""

from __future__ import annotations

import msgpack
import pytest

from ledger.codec import encode
from storage.chunker import MAX_BLOCK_SIZE
from storage.cid import chunk_cid, manifest_cid
from storage.errors import InvalidManifest
from storage.manifest import (
    MANIFEST_VERSION,
    ChunkRef,
    Manifest,
    TensorInfo,
    build_manifest,
    decode_manifest,
)


def _chunks(n: int) -> list[tuple[object, int]]:
    return [(chunk_cid(bytes([i])), 1) for i in range(n)]


def test_build_encode_decode_round_trip() -> None:
    t = TensorInfo("w", "F32", (2, 2), 0, 3)
    m, data, cid = build_manifest(_chunks(3), media_type="x/y", chunk_size=1024, tensors=[t])  # type: ignore[arg-type]
    assert decode_manifest(data) == m
    assert cid == manifest_cid(data) == m.cid()
    assert m.total_size == 3 and m.chunk_cids()[0] == chunk_cid(b"\x00")


def test_same_input_same_cid() -> None:
    a = build_manifest(_chunks(5), media_type="x/y", chunk_size=1024)  # type: ignore[arg-type]
    b = build_manifest(_chunks(5), media_type="x/y", chunk_size=1024)  # type: ignore[arg-type]
    assert a[1] == b[1] and a[2] == b[2]


def _plain(m: Manifest) -> list[object]:
    return msgpack.unpackb(encode(m), raw=False)


GOOD = build_manifest(_chunks(2), media_type="x/y", chunk_size=1024)[0]  # type: ignore[arg-type]


def _mutate(fn: object) -> bytes:
    plain = _plain(GOOD)
    fn(plain)  # type: ignore[operator]
    return msgpack.packb(plain, use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xc1", "malformed"),
        (encode(GOOD) + b"\x00", "trailing"),
        (_mutate(lambda p: p.__setitem__(1, MANIFEST_VERSION + 1)), "version"),
        (_mutate(lambda p: p.__setitem__(3, 3)), "add up"),
        (_mutate(lambda p: p.__setitem__(2, "")), "media type"),
        (_mutate(lambda p: p.__setitem__(0, 301)), "TensorInfo"),
        (_mutate(lambda p: p[5][0].__setitem__(1, bytes(manifest_cid(b"x")))), "raw codec"),
        (_mutate(lambda p: p[5][0].__setitem__(1, b"\x01\x55")), "chunk cid"),
        (_mutate(lambda p: p[5][0].__setitem__(2, 0)), "chunk size"),
        (_mutate(lambda p: p.__setitem__(6, [[301, "t", "F32", [1], 0, 99]])), "ends past"),
        (_mutate(lambda p: p.append(1)), "needs 6 fields"),
        (b"\x00" * (MAX_BLOCK_SIZE + 1), "exceeds limit"),
    ],
)
def test_bad_manifest_bytes_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidManifest, match=reason):
        decode_manifest(data)


def test_chunk_ref_validates_directly() -> None:
    with pytest.raises(ValueError):
        ChunkRef(b"junk", 1)
    with pytest.raises(ValueError):
        ChunkRef(bytes(chunk_cid(b"a")), MAX_BLOCK_SIZE + 1)


def test_manifest_over_block_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import storage.manifest

    monkeypatch.setattr(storage.manifest, "MAX_BLOCK_SIZE", 2000)  # ~45 bytes per chunk ref
    many = [(chunk_cid(i.to_bytes(4, "big")), 1) for i in range(50)]
    with pytest.raises(InvalidManifest, match="block limit"):
        build_manifest(many, media_type="x/y", chunk_size=1024)  # type: ignore[arg-type]
    build_manifest(many[:40], media_type="x/y", chunk_size=1024)  # type: ignore[arg-type]

"""CIDs: known vectors, strict parsing of text and binary forms, round trips."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID as MfCID

from storage.cid import Cid, Codec, chunk_cid, manifest_cid, parse_cid, split_cid
from storage.errors import InvalidCID

# the IPFS raw-leaf CID of b"hello"
HELLO = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def test_raw_chunk_cid_matches_ipfs_vector() -> None:
    c = chunk_cid(b"hello")
    assert str(c) == HELLO
    assert c.codec is Codec.RAW
    assert c.digest == hashlib.sha256(b"hello").digest()
    assert bytes(c) == bytes(MfCID.decode(HELLO))


def test_manifest_cid_uses_private_codec_and_shares_multihash() -> None:
    m = manifest_cid(b"hello")
    assert m.is_manifest and m.codec is Codec.MANIFEST
    assert m.multihash == chunk_cid(b"hello").multihash  # same block key in the store
    assert m != chunk_cid(b"hello")
    assert m.to_multiformats().codec.code == 0x3FED01


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (" " + HELLO, "whitespace"),
        (HELLO + "\n", "whitespace"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "CIDv0"),
        (HELLO.upper(), "multibase prefix 'B'"),
        ("zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA", "multibase prefix 'z'"),
        ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "codec dag-pb"),
        ("b" + HELLO[1:].upper(), "lower case"),
        (HELLO[:-1], "base32"),
        (HELLO + "a", "base32"),
        ("b!!!!!!!", "base32"),
        ("b", "malformed"),
        ("b" + "a" * 200, "too long"),
        ("bafkqaaa", "hash function identity"),  # identity-hash CIDv1 of empty data
    ],
)
def test_text_cids_rejected_with_clear_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidCID, match=reason):
        parse_cid(text)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"\x01\x55", "malformed"),
        (b"\x01\x55\x12\x20" + b"\x00" * 31, "malformed"),  # digest one byte short
        (b"\x01\x55\x12\x20" + b"\x00" * 33, "malformed"),  # one byte too many
        (b"\x01\x55\x11\x14" + b"\x00" * 20, "sha1"),
        (b"\x01\x70\x12\x20" + b"\x00" * 32, "dag-pb"),
        (12, "expected a CID string or bytes"),
        (None, "expected a CID string or bytes"),
    ],
)
def test_binary_and_other_values_rejected(value: object, reason: str) -> None:
    with pytest.raises(InvalidCID, match=reason):
        parse_cid(value)


@given(st.binary(max_size=300), st.sampled_from([chunk_cid, manifest_cid]))
def test_text_and_binary_round_trip(data: bytes, make: object) -> None:
    c = make(data)  # type: ignore[operator]
    assert parse_cid(str(c)) == c
    assert parse_cid(bytes(c)) == c
    assert parse_cid(c.to_multiformats()) == c
    assert str(MfCID.decode(bytes(c)).set(base="base32")) == str(c)  # same text as multiformats
    assert c.verify(data) and not c.verify(data + b"x")
    rest = b"trailing reason"
    assert split_cid(bytes(c) + rest) == (c, rest)


def test_from_digest_and_multihash_checks_lengths() -> None:
    with pytest.raises(InvalidCID):
        Cid.from_digest(Codec.RAW, b"\x00" * 31)
    with pytest.raises(InvalidCID):
        Cid.from_multihash(Codec.RAW, b"\x11\x14" + b"\x00" * 20)
    c = chunk_cid(b"x")
    assert Cid.from_multihash(Codec.RAW, c.multihash) == c

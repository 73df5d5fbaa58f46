"""Content ids: CIDv1 with a sha2-256 multihash, raw codec for chunks, a private codec for manifests.

Binary layout (what goes on the wire and into LevelDB keys)::

    <version=1 varint> <codec varint> <0x12 sha2-256> <0x20 length> <32-byte digest>

The prefixes in front of the digest are computed once, at import, by the
`multiformats` library (no hand-rolled varints); after that a CID is just
``prefix + digest``, so hashing a 1 MiB chunk costs the SHA-256 and nothing else.
Text form is multibase base32 (lower case, no padding): ``bafkrei...`` for raw
chunks, ``baga5v7yb...`` for manifests (see ADR 0300 for the manifest codec).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from typing import Any

from multiformats import CID as MfCID
from multiformats import multicodec, multihash

from storage.errors import InvalidCID

__all__ = [
    "MANIFEST_CODEC_CODE",
    "MANIFEST_CODEC_NAME",
    "Cid",
    "Codec",
    "chunk_cid",
    "manifest_cid",
    "parse_cid",
    "split_cid",
]

# Private-use multicodec range is 0x300000..0x3fffff; 0x3fed01 = "fed(ledger) manifest v1".
MANIFEST_CODEC_CODE = 0x3FED01
MANIFEST_CODEC_NAME = "fedledger-manifest"
_DIGEST_LEN = 32
_MAX_TEXT_LEN = 128  # a valid CID here is 59-62 characters; refuse to parse novels


def _register_manifest_codec() -> None:
    if not multicodec.exists(MANIFEST_CODEC_NAME):
        multicodec.register(
            multicodec.Multicodec(
                name=MANIFEST_CODEC_NAME,
                tag="ipld",
                code=MANIFEST_CODEC_CODE,
                status="draft",
                description="fedledger content manifest: canonical msgpack record (ADR 0300)",
            )
        )


_register_manifest_codec()


class Codec(enum.Enum):
    """What the bytes behind a CID are."""

    RAW = "raw"  # a chunk: opaque bytes
    MANIFEST = "manifest"  # a canonical-msgpack Manifest record listing chunks


def _prefix(codec: str) -> bytes:
    probe = MfCID("base32", 1, codec, multihash.wrap(b"\x00" * _DIGEST_LEN, "sha2-256"))
    raw = bytes(probe)
    return raw[: len(raw) - _DIGEST_LEN]


_RAW_PREFIX = _prefix("raw")
_MANIFEST_PREFIX = _prefix(MANIFEST_CODEC_NAME)
_BY_PREFIX = {_RAW_PREFIX: Codec.RAW, _MANIFEST_PREFIX: Codec.MANIFEST}
# multihash = <0x12><0x20><digest>: the LevelDB key of a block (same for both codecs)
_MH_PREFIX = bytes(multihash.wrap(b"\x00" * _DIGEST_LEN, "sha2-256"))[:-_DIGEST_LEN]
MULTIHASH_LEN = len(_MH_PREFIX) + _DIGEST_LEN


class Cid:
    """An accepted content id (immutable, hashable, compares by its binary form)."""

    __slots__ = ("_raw", "_codec", "_text")

    def __init__(self, raw: bytes, codec: Codec) -> None:
        # Use parse_cid / chunk_cid / manifest_cid; this trusts its arguments.
        self._raw = raw
        self._codec = codec
        self._text: str | None = None

    @classmethod
    def from_digest(cls, codec: Codec, digest: bytes) -> Cid:
        if len(digest) != _DIGEST_LEN:
            raise InvalidCID(f"sha2-256 digest must be {_DIGEST_LEN} bytes, got {len(digest)}")
        prefix = _RAW_PREFIX if codec is Codec.RAW else _MANIFEST_PREFIX
        return cls(prefix + digest, codec)

    @classmethod
    def from_multihash(cls, codec: Codec, mh: bytes) -> Cid:
        if len(mh) != MULTIHASH_LEN or not mh.startswith(_MH_PREFIX):
            raise InvalidCID("not a sha2-256 multihash")
        return cls.from_digest(codec, mh[len(_MH_PREFIX) :])

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def is_manifest(self) -> bool:
        return self._codec is Codec.MANIFEST

    @property
    def digest(self) -> bytes:
        return self._raw[-_DIGEST_LEN:]

    @property
    def multihash(self) -> bytes:
        """The block key in the store: raw and manifest CIDs of one byte string share it."""
        return _MH_PREFIX + self.digest

    def __bytes__(self) -> bytes:
        return self._raw

    def __str__(self) -> str:
        if self._text is None:
            # multibase 'b' is exactly RFC 4648 base32, lower case, unpadded
            self._text = "b" + base64.b32encode(self._raw).decode("ascii").lower().rstrip("=")
        return self._text

    def __repr__(self) -> str:
        return f"Cid({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cid) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __lt__(self, other: Cid) -> bool:
        return self._raw < other._raw

    def verify(self, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` hashes to this CID's digest."""
        return hashlib.sha256(data).digest() == self.digest

    def to_multiformats(self) -> MfCID:
        return MfCID.decode(self._raw)


def chunk_cid(data: bytes | bytearray | memoryview) -> Cid:
    return Cid(_RAW_PREFIX + hashlib.sha256(data).digest(), Codec.RAW)


def manifest_cid(data: bytes | bytearray | memoryview) -> Cid:
    return Cid(_MANIFEST_PREFIX + hashlib.sha256(data).digest(), Codec.MANIFEST)


def _explain(raw: bytes) -> str:
    """Why a binary CID is refused, in words (slow path, errors only)."""
    try:
        mf = MfCID.decode(raw)
    except Exception as e:  # multiformats raises many types on garbage
        return f"malformed CID bytes ({type(e).__name__}: {e})"
    if mf.version != 1:
        return f"CIDv{mf.version} is not accepted (only CIDv1)"
    if mf.hashfun.name != "sha2-256":
        return f"hash function {mf.hashfun.name} is not accepted (only sha2-256)"
    if mf.codec.name not in ("raw", MANIFEST_CODEC_NAME):
        return f"codec {mf.codec.name} is not accepted (only raw and {MANIFEST_CODEC_NAME})"
    return "non-canonical CID encoding"


def _from_binary(raw: bytes) -> Cid:
    prefix = raw[: len(raw) - _DIGEST_LEN]
    codec = _BY_PREFIX.get(prefix) if len(raw) > _DIGEST_LEN else None
    if codec is None:
        raise InvalidCID(_explain(raw))
    return Cid(raw, codec)


def _from_text(text: str) -> Cid:
    if not text:
        raise InvalidCID("empty CID")
    if text != text.strip():
        raise InvalidCID("CID text has leading or trailing whitespace")
    if len(text) > _MAX_TEXT_LEN:
        raise InvalidCID(f"CID text of {len(text)} characters is too long")
    if text.startswith("Qm"):
        raise InvalidCID("CIDv0 (Qm...) is not accepted; use the base32 CIDv1 form (b...)")
    if text[0] != "b":
        raise InvalidCID(f"multibase prefix {text[0]!r} is not accepted (only base32 'b')")
    body = text[1:]
    if not body.isascii() or body != body.lower():
        raise InvalidCID("base32 CID text must be lower case ASCII")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError) as e:
        raise InvalidCID(f"invalid base32 in CID: {e}") from e
    cid = _from_binary(raw)
    if str(cid) != text:  # rejects stray pad bits and any other second spelling
        raise InvalidCID("non-canonical base32 CID text")
    return cid


def split_cid(buf: bytes) -> tuple[Cid, bytes]:
    """Parse the binary CID at the start of ``buf``; return it and the bytes after it."""
    for prefix, codec in _BY_PREFIX.items():
        if buf.startswith(prefix) and len(buf) >= len(prefix) + _DIGEST_LEN:
            n = len(prefix) + _DIGEST_LEN
            return Cid(bytes(buf[:n]), codec), bytes(buf[n:])
    raise InvalidCID(_explain(bytes(buf)))


def parse_cid(value: Any) -> Cid:
    """Strictly parse a CID from its text form, binary form, or a `Cid`.

    Raises :class:`InvalidCID` with a message that says what is wrong.
    """
    if isinstance(value, Cid):
        return value
    if isinstance(value, str):
        return _from_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if not raw:
            raise InvalidCID("empty CID")
        return _from_binary(raw)
    if isinstance(value, MfCID):
        return _from_binary(bytes(value))
    raise InvalidCID(f"expected a CID string or bytes, got {type(value).__name__}")

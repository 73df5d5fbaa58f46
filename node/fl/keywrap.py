"""Key wrap of HE key shares: X25519 + HKDF-SHA256 + ChaCha20-Poly1305 (ADR 0154).

A key holder sends a trainer of an HE task its key bundle (``KeyShare``, docs/fl-chain.md)
as a content-store object that only the trainer can open. The trainer put its X25519
public key on chain in ``Join.x25519_pubkey``; the key holder seals the bundle to it:

* a fresh ephemeral X25519 key pair per wrap; ``shared = X25519(eph_priv, trainer_pub)``
  (an all-zero shared secret, i.e. a low-order public key, is refused);
* ``okm = HKDF-SHA256(ikm=shared, salt=eph_pub || trainer_pub, info=INFO || context, 44)``:
  a 32-byte ChaCha20-Poly1305 key and a 12-byte nonce (each key encrypts exactly one
  message, so a derived nonce is safe, as in HPKE's single-shot mode);
* ``ciphertext = ChaCha20-Poly1305(key, nonce, plaintext, aad = header || context)``.

``context`` binds the wrap to where it is used: for a key share, the chain id, the task
id, the trainer's and the key holder's addresses (:func:`share_context`), so a share
cannot be replayed to another task, trainer or chain. Bytes::

    b"FLKW" | u8 version (1) | eph_pub (32) | ChaCha20-Poly1305 ciphertext + 16-byte tag

The wrap is anonymous (ECIES-style): the sender is authenticated by the chain, because
only a key holder's signed ``KeyShare`` transaction makes the trainer open the object.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_LEN",
    "MAGIC",
    "WrapError",
    "X25519KeyPair",
    "load_or_create_keypair",
    "share_context",
    "unwrap",
    "wrap",
]

MAGIC = b"FLKW"
VERSION = 1
KEY_LEN = 32
TAG_LEN = 16
INFO = b"fedledger/fl/keywrap/v1"
_HEADER = struct.Struct(">4sB")
HEADER_LEN = _HEADER.size + KEY_LEN
MAX_WRAPPED_BYTES = 64 << 20  # a secret CKKS context of the largest parameters fits


class WrapError(ValueError):
    """A wrapped object is malformed, or not for this key and context (never says which)."""


class X25519KeyPair:
    """A trainer's X25519 key pair (the private half never leaves its node)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> X25519KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> X25519KeyPair:
        if len(raw) != KEY_LEN:
            raise WrapError(f"an X25519 private key has {KEY_LEN} bytes, got {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def exchange(self, peer_public: bytes) -> bytes:
        return _exchange(self._private, peer_public)


def load_or_create_keypair(path: Path) -> X25519KeyPair:
    """The key pair stored raw (32 bytes, mode 0600) at ``path``; made on first use."""
    if path.exists():
        raw = path.read_bytes()
        try:
            return X25519KeyPair.from_private_bytes(raw)
        except (WrapError, ValueError) as e:
            raise WrapError(f"{path}: corrupt X25519 key file ({e})") from None
    pair = X25519KeyPair.generate()
    write_private_file(path, pair.private_bytes())
    return pair


def write_private_file(path: Path, data: bytes) -> None:
    """Write atomically (temp file + fsync + rename) with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def share_context(chain_id: str, task_id: int, trainer: bytes, holder: bytes) -> bytes:
    """What a key share is bound to: chain, task, recipient trainer, sending key holder."""
    c = chain_id.encode("utf-8")
    return (
        struct.pack(">H", len(c)) + c + task_id.to_bytes(8, "big")
        + struct.pack(">B", len(trainer)) + trainer + struct.pack(">B", len(holder)) + holder
    )  # fmt: skip


def _exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    if not isinstance(peer_public, (bytes, bytearray)) or len(peer_public) != KEY_LEN:
        raise WrapError(f"an X25519 public key has {KEY_LEN} bytes")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
    except ValueError:  # all-zero shared secret: a low-order point
        raise WrapError("degenerate X25519 public key (low order)") from None
    if shared == bytes(KEY_LEN):  # pragma: no cover - cryptography already refuses it
        raise WrapError("degenerate X25519 public key (low order)")
    return shared


def _derive(shared: bytes, eph_pub: bytes, recipient_pub: bytes, context: bytes) -> tuple[
        bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(), length=32 + 12, salt=eph_pub + recipient_pub,
        info=INFO + context,
    ).derive(shared)
    return okm[:32], okm[32:]


def wrap(plaintext: bytes, recipient_pub: bytes, context: bytes) -> bytes:
    """Seal ``plaintext`` to the holder of ``recipient_pub``'s private key, bound to ``context``."""
    if len(plaintext) > MAX_WRAPPED_BYTES:
        raise WrapError(f"cannot wrap {len(plaintext)} bytes (limit {MAX_WRAPPED_BYTES})")
    eph = X25519KeyPair.generate()
    shared = eph.exchange(recipient_pub)
    key, nonce = _derive(shared, eph.public, bytes(recipient_pub), context)
    header = _HEADER.pack(MAGIC, VERSION) + eph.public
    return header + ChaCha20Poly1305(key).encrypt(nonce, bytes(plaintext), header + context)


def unwrap(data: bytes, keypair: X25519KeyPair, context: bytes) -> bytes:
    """Open a wrapped object; :class:`WrapError` if it is malformed, tampered with, for
    another key or for another context."""
    if not isinstance(data, (bytes, bytearray)) or len(data) < HEADER_LEN + TAG_LEN:
        raise WrapError("truncated wrapped object")
    if len(data) > HEADER_LEN + MAX_WRAPPED_BYTES + TAG_LEN:
        raise WrapError("oversize wrapped object")
    magic, version = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise WrapError("not a wrapped key object (bad magic)")
    if version != VERSION:
        raise WrapError(f"unsupported key wrap version {version}")
    header = bytes(data[:HEADER_LEN])
    eph_pub = header[_HEADER.size :]
    shared = keypair.exchange(eph_pub)
    key, nonce = _derive(shared, eph_pub, keypair.public, context)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, bytes(data[HEADER_LEN:]), header + context)
    except InvalidTag:
        raise WrapError("cannot open the wrapped object: wrong key, wrong context or "
                        "tampered bytes") from None

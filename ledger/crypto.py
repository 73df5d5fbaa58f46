"""Ed25519 keys, domain-separated signing and address derivation.

Every signature covers ``encode(["fedledger/sig/v1", domain, chain_id, payload])``:
the domain names the object type (``"tx"``, ``"vote"``, ``"proposal"``, ...),
so a vote never verifies as a transaction and nothing signed for chain A
verifies on chain B (DESIGN.md section 3).

Address derivation (documented in docs/ledger.md): the first 20 bytes of
SHA-256 of the raw 32-byte Ed25519 public key, as in CometBFT. Printed as
lower-case hex.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger.codec import encode, sha256

SIG_TAG = "fedledger/sig/v1"
ADDRESS_LEN = 20
PUBKEY_LEN = 32
SIGNATURE_LEN = 64


def sign_bytes(domain: str, chain_id: str, payload: bytes) -> bytes:
    """The exact bytes a signature covers."""
    return encode([SIG_TAG, domain, chain_id, payload])


def address_of(pubkey: bytes) -> bytes:
    if len(pubkey) != PUBKEY_LEN:
        raise ValueError(f"public key must be {PUBKEY_LEN} bytes")
    return sha256(pubkey)[:ADDRESS_LEN]


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 signing key (32-byte seed)."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")

    @classmethod
    def generate(cls) -> PrivateKey:
        k = Ed25519PrivateKey.generate()
        return cls(
            k.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )

    @classmethod
    def from_seed_int(cls, n: int) -> PrivateKey:
        """Deterministic key for tests and simulations (never for real keys)."""
        return cls(sha256(b"fedledger-test-key" + n.to_bytes(8, "big")))

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_key(self) -> bytes:
        return (
            self._key()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)

    def sign(self, domain: str, chain_id: str, payload: bytes) -> bytes:
        return self._key().sign(sign_bytes(domain, chain_id, payload))

    def __repr__(self) -> str:  # never print the seed
        return f"PrivateKey(address={self.address.hex()})"


def verify(pubkey: bytes, signature: bytes, domain: str, chain_id: str, payload: bytes) -> bool:
    """True iff ``signature`` is ``pubkey``'s signature over the domain-separated payload."""
    if len(pubkey) != PUBKEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(
            signature, sign_bytes(domain, chain_id, payload)
        )
    except (InvalidSignature, ValueError):
        return False
    return True

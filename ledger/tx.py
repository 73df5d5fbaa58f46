"""Signed transactions: the ``Tx`` envelope, the ``TxBody`` base and the core bodies.

A transaction is ``Tx(body, nonce, signer_pubkey, signature)``. The signer's
account address is ``address_of(signer_pubkey)`` (see :mod:`ledger.crypto`).
The signature covers ``encode([body, nonce, signer_pubkey])`` under domain
``"tx"`` and the chain id, so a transaction signed for one chain never
verifies on another and never verifies as a vote. The tx hash is SHA-256 of
the canonical encoding of the whole ``Tx`` (signature included).

Body types are records that subclass :class:`TxBody`; the codec decodes any
registered subclass wherever a ``TxBody`` is expected, so the FL contract adds
its bodies (tags 100-199) simply by defining them and registering handlers
with the application.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from ledger.codec import encode, record, sha256
from ledger.crypto import ADDRESS_LEN, PUBKEY_LEN, SIGNATURE_LEN, PrivateKey, address_of, verify

TX_DOMAIN = "tx"
MAX_AMOUNT = 2**63 - 1  # genesis caps total supply below this, so sums never overflow
MAX_NONCE = 2**63 - 1


def check_address(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != ADDRESS_LEN:
        raise ValueError(f"{name} must be {ADDRESS_LEN} bytes")


def check_pubkey(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != PUBKEY_LEN:
        raise ValueError(f"{name} must be {PUBKEY_LEN} bytes")


def check_amount(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_AMOUNT:
        raise ValueError(f"{name} must be an integer in 1..{MAX_AMOUNT}")


@dataclass(frozen=True)
class TxBody:
    """Base of every transaction body; subclasses are ``@record`` dataclasses."""


@record(1)
@dataclass(frozen=True)
class Transfer(TxBody):
    """Move ``amount`` tokens from the signer to ``to``."""

    to: bytes
    amount: int

    def __post_init__(self) -> None:
        check_address("to", self.to)
        check_amount("amount", self.amount)


@record(2)
@dataclass(frozen=True)
class Bond(TxBody):
    """Stake ``amount`` of the signer's tokens on the validator with this consensus key.

    Bonding to a key that has no validator yet creates the validator, with the
    signer as its operator. Power changes take effect at H+2.
    """

    validator_pubkey: bytes
    amount: int

    def __post_init__(self) -> None:
        check_pubkey("validator_pubkey", self.validator_pubkey)
        check_amount("amount", self.amount)


@record(3)
@dataclass(frozen=True)
class Unbond(TxBody):
    """Withdraw ``amount`` of the signer's stake; tokens return after the unbonding period."""

    validator_pubkey: bytes
    amount: int

    def __post_init__(self) -> None:
        check_pubkey("validator_pubkey", self.validator_pubkey)
        check_amount("amount", self.amount)


@record(4)
@dataclass(frozen=True)
class Unjail(TxBody):
    """The operator returns a jailed validator to the set once its jail time is over."""

    validator_pubkey: bytes

    def __post_init__(self) -> None:
        check_pubkey("validator_pubkey", self.validator_pubkey)


@record(10)
@dataclass(frozen=True)
class Tx:
    body: TxBody
    nonce: int
    signer_pubkey: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.body, TxBody) or type(self.body) is TxBody:
            raise ValueError("body must be a registered TxBody subclass")
        if not isinstance(self.nonce, int) or not 0 <= self.nonce <= MAX_NONCE:
            raise ValueError(f"nonce must be in 0..{MAX_NONCE}")
        check_pubkey("signer_pubkey", self.signer_pubkey)
        if len(self.signature) not in (0, SIGNATURE_LEN):
            raise ValueError(f"signature must be {SIGNATURE_LEN} bytes (or empty before signing)")

    def sign_payload(self) -> bytes:
        """The payload under the ``"tx"`` domain: everything but the signature."""
        return encode([self.body, self.nonce, self.signer_pubkey])

    @cached_property
    def encoded(self) -> bytes:
        return encode(self)

    @cached_property
    def hash(self) -> bytes:
        return sha256(self.encoded)

    @property
    def signer(self) -> bytes:
        """The signer's account address."""
        return address_of(self.signer_pubkey)

    def verify_signature(self, chain_id: str) -> bool:
        return verify(self.signer_pubkey, self.signature, TX_DOMAIN, chain_id, self.sign_payload())


def sign_tx(key: PrivateKey, chain_id: str, body: TxBody, nonce: int) -> Tx:
    """Build and sign a transaction from ``key``'s account."""
    unsigned = Tx(body=body, nonce=nonce, signer_pubkey=key.public_key, signature=b"")
    sig = key.sign(TX_DOMAIN, chain_id, unsigned.sign_payload())
    return dataclasses.replace(unsigned, signature=sig)

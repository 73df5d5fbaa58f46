"""Layout of the application state: key prefixes, value records and typed accessors.

| key                                               | value            |
| ------------------------------------------------- | ---------------- |
| ``b"params"``                                     | ConsensusParams  |
| ``b"acc/" + address``                             | Account          |
| ``b"val/" + validator address``                   | ValidatorRecord  |
| ``b"del/" + validator address + delegator``       | Delegation       |
| ``b"unb/" + u64be(release height) + val + deleg`` | UnbondingEntry   |
| ``b"dsl/" + u64be(infraction height) + val``      | SlashRecord      |
| ``b"ctr/" + contract name + b"/" + subkey``       | contract-defined |

Addresses are 20 bytes, so every key of a prefix has one fixed length and
prefix scans never mix kinds. Big-endian heights make the unbonding queue and
the double-sign markers iterate in height order, so maturing and pruning
read only the front of their prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ledger.codec import decode_record, encode, record
from ledger.params import ConsensusParams
from ledger.state import AppState, Overlay

PARAMS_KEY = b"params"
ACCOUNT_PREFIX = b"acc/"
VALIDATOR_PREFIX = b"val/"
DELEGATION_PREFIX = b"del/"
UNBONDING_PREFIX = b"unb/"
DOUBLE_SIGN_PREFIX = b"dsl/"
CONTRACT_PREFIX = b"ctr/"

View = AppState | Overlay
R = TypeVar("R")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


@record(50)
@dataclass(frozen=True)
class Account:
    balance: int = 0
    nonce: int = 0  # number of transactions this account has had executed

    def __post_init__(self) -> None:
        if self.balance < 0 or self.nonce < 0:
            raise ValueError("balance and nonce must be >= 0")


@record(51)
@dataclass(frozen=True)
class ValidatorRecord:
    """Everything the app knows about a validator; kept after it leaves the set."""

    pubkey: bytes
    operator: bytes  # the account that created it by bonding (or named in genesis)
    tokens: int  # sum of its delegations = its voting power when not jailed
    jailed: bool
    jailed_until: int  # height from which Unjail is accepted
    name: str

    @property
    def power(self) -> int:
        return 0 if self.jailed else self.tokens


@record(52)
@dataclass(frozen=True)
class Delegation:
    amount: int


@record(53)
@dataclass(frozen=True)
class UnbondingEntry:
    amount: int
    creation_height: int  # stake unbonded at or after an infraction height is still slashed


@record(54)
@dataclass(frozen=True)
class SlashRecord:
    """Marks that a validator was slashed for double signing at this height (no second slash)."""

    slashed_at: int  # height of the block that carried the evidence
    burned: int


def account_key(address: bytes) -> bytes:
    return ACCOUNT_PREFIX + address


def validator_key(address: bytes) -> bytes:
    return VALIDATOR_PREFIX + address


def delegation_key(validator: bytes, delegator: bytes) -> bytes:
    return DELEGATION_PREFIX + validator + delegator


def unbonding_key(release_height: int, validator: bytes, delegator: bytes) -> bytes:
    return UNBONDING_PREFIX + u64(release_height) + validator + delegator


def double_sign_key(height: int, validator: bytes) -> bytes:
    return DOUBLE_SIGN_PREFIX + u64(height) + validator


def contract_prefix(name: str) -> bytes:
    """The key space of an on-chain contract (the FL task contract uses ``"fl"``)."""
    if not name or "/" in name or not name.isascii():
        raise ValueError("contract name must be non-empty ASCII without '/'")
    return CONTRACT_PREFIX + name.encode() + b"/"


def get_record(view: View, key: bytes, cls: type[R]) -> R | None:
    raw = view.get(key)
    return None if raw is None else decode_record(raw, cls)


def put_record(view: Overlay, key: bytes, value: object) -> None:
    view.set(key, encode(value))


def get_account(view: View, address: bytes) -> Account:
    return get_record(view, account_key(address), Account) or Account()


def put_account(view: Overlay, address: bytes, account: Account) -> None:
    # An all-zero account is indistinguishable from a missing one: keep the state small.
    if account.balance == 0 and account.nonce == 0:
        view.delete(account_key(address))
    else:
        put_record(view, account_key(address), account)


def get_validator(view: View, address: bytes) -> ValidatorRecord | None:
    return get_record(view, validator_key(address), ValidatorRecord)


def get_params(view: View) -> ConsensusParams:
    params = get_record(view, PARAMS_KEY, ConsensusParams)
    if params is None:
        raise ValueError("state has no consensus params")
    return params

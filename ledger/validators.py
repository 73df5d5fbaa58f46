"""The validator set as the ledger sees it: (address, consensus pubkey, power), ordered.

The set is ordered by power (descending), then address (ascending), as in
CometBFT. Its hash, the header's ``validators_hash``, is the Merkle root over
the canonical encodings of the validators and covers address, pubkey and power
only; proposer priorities are consensus bookkeeping (consensus/core) and are
deliberately not part of the ledger's type or hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

from ledger.codec import encode, record
from ledger.crypto import address_of
from ledger.merkle import merkle_root
from ledger.tx import check_address, check_pubkey

# CometBFT's MaxTotalVotingPower (int64 max / 8): keeps proposer-priority arithmetic in int64.
MAX_TOTAL_POWER = (2**63 - 1) // 8


@record(40)
@dataclass(frozen=True)
class Validator:
    address: bytes
    pubkey: bytes
    power: int

    def __post_init__(self) -> None:
        check_address("address", self.address)
        check_pubkey("pubkey", self.pubkey)
        if not isinstance(self.power, int) or not 0 < self.power <= MAX_TOTAL_POWER:
            raise ValueError(f"power must be in 1..{MAX_TOTAL_POWER}")
        if address_of(self.pubkey) != self.address:
            raise ValueError("address is not the address of pubkey")


def _order(v: Validator) -> tuple[int, bytes]:
    return (-v.power, v.address)


@record(41)
@dataclass(frozen=True)
class ValidatorSet:
    validators: tuple[Validator, ...]

    def __post_init__(self) -> None:
        vals = self.validators
        for a, b in pairwise(vals):
            if _order(a) >= _order(b):
                raise ValueError("validators must be sorted by power desc, address asc, unique")
        if len({v.address for v in vals}) != len(vals):
            raise ValueError("duplicate validator address")
        if sum(v.power for v in vals) > MAX_TOTAL_POWER:
            raise ValueError("total voting power exceeds the maximum")

    @classmethod
    def from_validators(cls, validators: Iterable[Validator]) -> ValidatorSet:
        """Build a set in canonical order from validators in any order."""
        return cls(tuple(sorted(validators, key=_order)))

    @cached_property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    @cached_property
    def hash(self) -> bytes:
        return merkle_root([encode(v) for v in self.validators])

    @cached_property
    def _index(self) -> dict[bytes, int]:
        return {v.address: i for i, v in enumerate(self.validators)}

    def __len__(self) -> int:
        return len(self.validators)

    def index_of(self, address: bytes) -> int | None:
        return self._index.get(address)

    def get(self, address: bytes) -> Validator | None:
        i = self._index.get(address)
        return None if i is None else self.validators[i]

    def by_index(self, index: int) -> Validator | None:
        if 0 <= index < len(self.validators):
            return self.validators[index]
        return None

    def has_quorum(self, power: int) -> bool:
        """Strictly more than 2/3 of the total power (integer arithmetic)."""
        return 3 * power > 2 * self.total_power

"""Evidence of validator misbehaviour carried in blocks: the ``Evidence`` base and double signing.

``DuplicateVoteEvidence`` holds two votes of one validator for the same
height, round and type but different block ids. The two votes are stored in
canonical order (``vote_a.block_id`` sorts first, nil sorting before any id),
so one misbehaviour has exactly one encoding and one hash. Other evidence
kinds (the FL contract's proofs of malicious updates) subclass ``Evidence``
and register a handler with the application.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ledger.codec import encode, record, sha256
from ledger.errors import InvalidCommitError, InvalidEvidenceError
from ledger.schema import double_sign_key
from ledger.validators import ValidatorSet
from ledger.votes import Vote, check_vote


@dataclass(frozen=True)
class Evidence:
    """Base of every evidence record."""

    @cached_property
    def hash(self) -> bytes:
        return sha256(encode(self))

    @property
    def height(self) -> int:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def dedup_key(self) -> bytes:
        """Evidence with equal keys punishes the same offence: a block carries at most one."""
        return self.hash


def _bid_key(v: Vote) -> bytes:
    return b"" if v.block_id is None else b"\x01" + v.block_id


@record(24)
@dataclass(frozen=True)
class DuplicateVoteEvidence(Evidence):
    vote_a: Vote
    vote_b: Vote

    def __post_init__(self) -> None:
        a, b = self.vote_a, self.vote_b
        if (a.type, a.height, a.round) != (b.type, b.height, b.round):
            raise ValueError("votes differ in type, height or round")
        if (a.validator_address, a.validator_index) != (b.validator_address, b.validator_index):
            raise ValueError("votes are from different validators")
        if a.block_id == b.block_id:
            raise ValueError("votes are for the same block")
        if _bid_key(a) >= _bid_key(b):
            raise ValueError("votes must be in canonical order (vote_a.block_id first)")

    @classmethod
    def from_votes(cls, v1: Vote, v2: Vote) -> DuplicateVoteEvidence:
        """Order the two conflicting votes canonically."""
        a, b = (v1, v2) if _bid_key(v1) < _bid_key(v2) else (v2, v1)
        return cls(a, b)

    @property
    def height(self) -> int:  # type: ignore[override]
        return self.vote_a.height

    @property
    def validator_address(self) -> bytes:
        return self.vote_a.validator_address

    def dedup_key(self) -> bytes:
        # One punishment per validator and height, however many conflicting votes it signed.
        return double_sign_key(self.height, self.validator_address)


def verify_duplicate_vote(
    chain_id: str, evidence: DuplicateVoteEvidence, validator_set: ValidatorSet
) -> None:
    """Raise :class:`InvalidEvidenceError` unless both votes are validly signed by the
    validator at that index of ``validator_set`` (the set at the evidence height)."""
    for vote in (evidence.vote_a, evidence.vote_b):
        try:
            check_vote(chain_id, validator_set, vote)
        except InvalidCommitError as e:
            raise InvalidEvidenceError(f"duplicate vote evidence: {e}") from e

"""Consensus messages signed by validators: votes, proposals and commits.

Sign bytes follow CometBFT's canonical vote/proposal: the signature covers
``encode([type, height, round, block_id, timestamp])`` (votes, domain
``"vote"``) or ``encode([height, round, pol_round, block_id, timestamp])``
(proposals, domain ``"proposal"``), plus the chain id through
:func:`ledger.crypto.sign_bytes`. The validator's address and index are not
signed: the key binds the signature to the validator, and leaving them out
lets a :class:`CommitSig` rebuild the exact precommit from (height, round,
block id, timestamp) alone.

``block_id`` is the 32-byte SHA-256 of the encoded block header; a vote for
nil has ``block_id = None``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum

from ledger.codec import encode, record
from ledger.crypto import ADDRESS_LEN, SIGNATURE_LEN, PrivateKey, verify
from ledger.errors import InvalidCommitError
from ledger.validators import ValidatorSet

VOTE_DOMAIN = "vote"
PROPOSAL_DOMAIN = "proposal"
BLOCK_ID_LEN = 32


class VoteType(IntEnum):
    """CometBFT's SignedMsgType values."""

    PREVOTE = 1
    PRECOMMIT = 2


class BlockIdFlag(IntEnum):
    """CometBFT's BlockIDFlag: what a validator's slot in a commit holds."""

    ABSENT = 1
    COMMIT = 2
    NIL = 3


def _check_sig(value: bytes) -> None:
    if len(value) not in (0, SIGNATURE_LEN):
        raise ValueError(f"signature must be {SIGNATURE_LEN} bytes (or empty before signing)")


def _check_block_id(name: str, value: bytes | None, nil_ok: bool) -> None:
    if value is None:
        if not nil_ok:
            raise ValueError(f"{name} must not be nil")
        return
    if len(value) != BLOCK_ID_LEN:
        raise ValueError(f"{name} must be {BLOCK_ID_LEN} bytes")


def _check_hr(height: int, round_: int) -> None:
    if height < 1:
        raise ValueError("height must be >= 1")
    if round_ < 0:
        raise ValueError("round must be >= 0")


@record(20)
@dataclass(frozen=True)
class Vote:
    type: int
    height: int
    round: int
    block_id: bytes | None
    timestamp: int  # unix milliseconds
    validator_address: bytes
    validator_index: int
    signature: bytes

    def __post_init__(self) -> None:
        if self.type not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise ValueError(f"unknown vote type {self.type}")
        _check_hr(self.height, self.round)
        _check_block_id("block_id", self.block_id, nil_ok=True)
        if self.timestamp < 0:
            raise ValueError("timestamp must be >= 0")
        if len(self.validator_address) != ADDRESS_LEN:
            raise ValueError(f"validator_address must be {ADDRESS_LEN} bytes")
        if self.validator_index < 0:
            raise ValueError("validator_index must be >= 0")
        _check_sig(self.signature)

    def sign_payload(self) -> bytes:
        return vote_sign_payload(self.type, self.height, self.round, self.block_id, self.timestamp)

    @property
    def is_nil(self) -> bool:
        return self.block_id is None


def vote_sign_payload(
    type_: int, height: int, round_: int, block_id: bytes | None, timestamp: int
) -> bytes:
    return encode([int(type_), height, round_, block_id, timestamp])


@record(21)
@dataclass(frozen=True)
class Proposal:
    height: int
    round: int
    pol_round: int  # -1 when the proposer has no proof-of-lock round
    block_id: bytes
    timestamp: int  # unix milliseconds
    signature: bytes

    def __post_init__(self) -> None:
        _check_hr(self.height, self.round)
        if not -1 <= self.pol_round < self.round:
            raise ValueError("pol_round must be in -1..round-1")
        _check_block_id("block_id", self.block_id, nil_ok=False)
        if self.timestamp < 0:
            raise ValueError("timestamp must be >= 0")
        _check_sig(self.signature)

    def sign_payload(self) -> bytes:
        return encode([self.height, self.round, self.pol_round, self.block_id, self.timestamp])


def sign_vote(key: PrivateKey, chain_id: str, vote: Vote) -> Vote:
    return dataclasses.replace(vote, signature=key.sign(VOTE_DOMAIN, chain_id, vote.sign_payload()))


def verify_vote(chain_id: str, vote: Vote, pubkey: bytes) -> bool:
    return verify(pubkey, vote.signature, VOTE_DOMAIN, chain_id, vote.sign_payload())


def sign_proposal(key: PrivateKey, chain_id: str, proposal: Proposal) -> Proposal:
    sig = key.sign(PROPOSAL_DOMAIN, chain_id, proposal.sign_payload())
    return dataclasses.replace(proposal, signature=sig)


def verify_proposal(chain_id: str, proposal: Proposal, pubkey: bytes) -> bool:
    return verify(pubkey, proposal.signature, PROPOSAL_DOMAIN, chain_id, proposal.sign_payload())


def check_vote(chain_id: str, validator_set: ValidatorSet, vote: Vote) -> None:
    """Raise ``InvalidCommitError`` unless ``vote`` is signed by the validator at its index."""
    val = validator_set.by_index(vote.validator_index)
    if val is None:
        raise InvalidCommitError(f"validator index {vote.validator_index} out of range")
    if val.address != vote.validator_address:
        raise InvalidCommitError(f"validator index {vote.validator_index} has another address")
    if not verify_vote(chain_id, vote, val.pubkey):
        raise InvalidCommitError(f"bad vote signature of validator {val.address.hex()}")


@record(22)
@dataclass(frozen=True)
class CommitSig:
    """One validator's slot in a commit (CometBFT ``CommitSig``).

    ``ABSENT`` slots carry an empty address and signature and timestamp 0.
    """

    flag: int
    validator_address: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        if self.flag == BlockIdFlag.ABSENT:
            if self.validator_address or self.signature or self.timestamp:
                raise ValueError("an absent CommitSig carries no address, timestamp or signature")
            return
        if self.flag not in (BlockIdFlag.COMMIT, BlockIdFlag.NIL):
            raise ValueError(f"unknown block id flag {self.flag}")
        if len(self.validator_address) != ADDRESS_LEN:
            raise ValueError(f"validator_address must be {ADDRESS_LEN} bytes")
        if self.timestamp < 0:
            raise ValueError("timestamp must be >= 0")
        if len(self.signature) != SIGNATURE_LEN:
            raise ValueError(f"signature must be {SIGNATURE_LEN} bytes")

    @classmethod
    def absent(cls) -> CommitSig:
        return cls(BlockIdFlag.ABSENT, b"", 0, b"")

    @classmethod
    def from_vote(cls, vote: Vote) -> CommitSig:
        flag = BlockIdFlag.NIL if vote.block_id is None else BlockIdFlag.COMMIT
        return cls(flag, vote.validator_address, vote.timestamp, vote.signature)


@record(23)
@dataclass(frozen=True)
class Commit:
    """+2/3 precommits for ``block_id`` at (height, round); one slot per validator index."""

    height: int
    round: int
    block_id: bytes
    signatures: tuple[CommitSig, ...]

    def __post_init__(self) -> None:
        _check_hr(self.height, self.round)
        _check_block_id("block_id", self.block_id, nil_ok=False)
        if not self.signatures:
            raise ValueError("a commit needs at least one signature slot")

    def vote(self, index: int) -> Vote | None:
        """Rebuild the precommit of the validator at ``index`` (None when absent)."""
        cs = self.signatures[index]
        if cs.flag == BlockIdFlag.ABSENT:
            return None
        return Vote(
            type=VoteType.PRECOMMIT,
            height=self.height,
            round=self.round,
            block_id=self.block_id if cs.flag == BlockIdFlag.COMMIT else None,
            timestamp=cs.timestamp,
            validator_address=cs.validator_address,
            validator_index=index,
            signature=cs.signature,
        )

    def signers(self) -> list[bytes]:
        """Addresses of validators whose precommit for the block is in the commit."""
        return [s.validator_address for s in self.signatures if s.flag == BlockIdFlag.COMMIT]

    @classmethod
    def from_votes(
        cls,
        validator_set: ValidatorSet,
        height: int,
        round_: int,
        block_id: bytes,
        votes: list[Vote],
    ) -> Commit:
        """Assemble a commit from precommits (any order); validators without one are absent."""
        slots = [CommitSig.absent()] * len(validator_set)
        for v in votes:
            if v.type != VoteType.PRECOMMIT or v.height != height or v.round != round_:
                raise ValueError("from_votes takes precommits of this height and round only")
            if v.block_id not in (None, block_id):
                raise ValueError("precommit for another block")
            slots[v.validator_index] = CommitSig.from_vote(v)
        return cls(height, round_, block_id, tuple(slots))


def verify_commit(
    chain_id: str,
    validator_set: ValidatorSet,
    commit: Commit,
    block_id: bytes,
    *,
    height: int | None = None,
) -> None:
    """Raise :class:`InvalidCommitError` unless ``commit`` proves ``block_id`` was committed.

    Every non-absent slot must hold a valid precommit signature of the
    validator at that index (nil precommits too: the application rewards the
    signers of the last commit, so no slot may be forged), and the COMMIT slots
    must hold strictly more than 2/3 of the set's total power.
    """
    if commit.block_id != block_id:
        raise InvalidCommitError(
            f"commit is for block {commit.block_id.hex()}, expected {block_id.hex()}"
        )
    if height is not None and commit.height != height:
        raise InvalidCommitError(f"commit is for height {commit.height}, expected {height}")
    if len(commit.signatures) != len(validator_set):
        raise InvalidCommitError(
            f"commit has {len(commit.signatures)} slots, validator set has {len(validator_set)}"
        )
    tallied = 0
    for i in range(len(commit.signatures)):
        vote = commit.vote(i)
        if vote is None:
            continue
        check_vote(chain_id, validator_set, vote)
        if vote.block_id is not None:
            tallied += validator_set.validators[i].power
    if not validator_set.has_quorum(tallied):
        raise InvalidCommitError(
            f"commit has {tallied} of {validator_set.total_power} voting power, needs more than 2/3"
        )

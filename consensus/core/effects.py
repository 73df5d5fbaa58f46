"""Outputs of the core state machine: what the driver must do, as plain data."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.core.types import Proposal, TimeoutKind, Vote

__all__ = [
    "BroadcastProposal",
    "BroadcastVote",
    "Decide",
    "Effect",
    "RecordEvidence",
    "RequestValidity",
    "RequestValue",
    "ScheduleTimeout",
]


@dataclass(frozen=True, slots=True)
class BroadcastProposal:
    """Sign (privval), append to the WAL, send, and feed back as ``ProposalReceived``.

    ``proposal.signature`` is empty: the core never signs.
    """

    proposal: Proposal


@dataclass(frozen=True, slots=True)
class BroadcastVote:
    """Sign (privval), append to the WAL, send, and feed back as ``VoteReceived``.

    The core counts its own vote only when it comes back signed, so the commit it hands out
    in ``Decide`` carries the node's real signature.
    """

    vote: Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Fire ``TimeoutFired(kind, height, round)`` after ``duration_ms``."""

    kind: TimeoutKind
    height: int
    round: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class RequestValue:
    """We propose this round: build a block and answer ``ValueReady(height, round, id)``."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class RequestValidity:
    """Check the proposed block (ProcessProposal) and answer ``ValidityVerdict``.

    Asked once per value id and height; the verdict is reused for every round proposing it.
    """

    height: int
    round: int
    value_id: bytes


@dataclass(frozen=True, slots=True)
class Decide:
    """``decision_p[h] = v`` (L49): commit the block; then send ``NewHeight(height + 1)``.

    ``precommits`` are the precommits for ``value_id`` in ``round`` (more than 2/3 of the
    power), sorted by validator address: the commit certificate.
    """

    height: int
    round: int
    value_id: bytes
    proposal: Proposal
    precommits: tuple[Vote, ...]


@dataclass(frozen=True, slots=True)
class RecordEvidence:
    """One validator signed two different votes of one height, round and type."""

    vote_a: Vote
    vote_b: Vote


Effect = (
    BroadcastProposal
    | BroadcastVote
    | ScheduleTimeout
    | RequestValue
    | RequestValidity
    | Decide
    | RecordEvidence
)

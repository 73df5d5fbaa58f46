"""Inputs to the core state machine: what the driver observed (messages, timers, answers)."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.core.proposer import ValidatorSet
from consensus.core.types import Proposal, TimeoutKind, Vote

__all__ = [
    "Event",
    "NewHeight",
    "ProposalReceived",
    "TimeoutFired",
    "ValidityVerdict",
    "ValueReady",
    "VoteReceived",
]


@dataclass(frozen=True, slots=True)
class NewHeight:
    """Start ``height`` at round 0 with ``validators`` (powers and proposer priorities).

    ``validators`` is the set at round 0 of this height: its ``proposer`` proposes round 0 and
    round ``r`` is proposed by the set incremented ``r`` more times (CometBFT's rule).
    """

    height: int
    validators: ValidatorSet


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A proposal whose signature the driver has checked (the node's own ones included)."""

    proposal: Proposal


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """A vote whose signature the driver has checked (the node's own ones included)."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    """A timer set by ``ScheduleTimeout`` expired."""

    kind: TimeoutKind
    height: int
    round: int


@dataclass(frozen=True, slots=True)
class ValueReady:
    """The driver's answer to ``RequestValue``: the id of the block it built (``getValue()``)."""

    height: int
    round: int
    value_id: bytes


@dataclass(frozen=True, slots=True)
class ValidityVerdict:
    """The driver's answer to ``RequestValidity`` (ProcessProposal): the paper's ``valid(v)``."""

    height: int
    round: int
    value_id: bytes
    valid: bool


Event = NewHeight | ProposalReceived | VoteReceived | TimeoutFired | ValueReady | ValidityVerdict

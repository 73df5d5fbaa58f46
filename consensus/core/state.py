"""The state of one process of Algorithm 1 (the paper's ``h_p``, ``round_p``, ``step_p``, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from consensus.core.proposer import ProposerSelector, ValidatorSet
from consensus.core.types import NIL_ROUND, Proposal, Step, TimeoutConfig
from consensus.core.votekeeper import VoteKeeper

__all__ = ["State", "initial_state"]


_NO_PROPOSALS: Mapping[int, tuple[Proposal, ...]] = MappingProxyType({})
_NO_VERDICTS: Mapping[bytes, bool] = MappingProxyType({})


class State(NamedTuple):
    """Immutable; :func:`consensus.core.machine.step` returns a new one.

    A NamedTuple rather than a frozen dataclass because the machine builds one per event and
    ``_replace`` is several times cheaper. The message log of the height lives in ``votes``
    (prevotes and precommits of every round), ``proposals`` (per round, only those signed by
    that round's proposer) and ``verdicts`` (``valid(v)`` per value id, from
    ``ValidityVerdict`` or our own ``ValueReady``); all three are never mutated in place.
    """

    address: bytes | None  # this node's validator address; None for a non-validator
    config: TimeoutConfig
    height: int = 0  # h_p
    round: int = 0  # round_p
    step: Step = Step.UNSTARTED  # step_p
    locked_value: bytes | None = None  # lockedValue_p
    locked_round: int = NIL_ROUND  # lockedRound_p
    valid_value: bytes | None = None  # validValue_p
    valid_round: int = NIL_ROUND  # validRound_p
    decision: bytes | None = None  # decision_p[h_p]
    is_validator: bool = False  # address is in this height's set: we vote and propose
    proposers: ProposerSelector | None = None  # proposer(h_p, r), cached per round
    votes: VoteKeeper | None = None
    proposals: Mapping[int, tuple[Proposal, ...]] = _NO_PROPOSALS
    verdicts: Mapping[bytes, bool] = _NO_VERDICTS
    validity_requested: frozenset[bytes] = frozenset()
    # Guards of the current round ("for the first time" in the paper).
    proposed: bool = False  # our proposal for this round is out (L19)
    prevote_timeout_scheduled: bool = False  # L34
    precommit_timeout_scheduled: bool = False  # L47
    polka_handled: bool = False  # L36

    def __repr__(self) -> str:
        return (
            f"State(height={self.height}, round={self.round}, step={self.step.name}, "
            f"locked=({self.locked_value!r}, {self.locked_round}), "
            f"valid=({self.valid_value!r}, {self.valid_round}), decision={self.decision!r})"
        )

    @property
    def validators(self) -> ValidatorSet | None:
        return None if self.votes is None else self.votes.validators

    def proposer(self, round: int | None = None) -> bytes | None:
        """proposer(h_p, round), the current round by default."""
        if self.proposers is None:
            return None
        return self.proposers.proposer(self.round if round is None else round)


def initial_state(address: bytes | None, config: TimeoutConfig | None = None) -> State:
    """The paper's initialization (L1-L9) before the first height; feed ``NewHeight`` next."""
    return State(address=address, config=config if config is not None else TimeoutConfig())

"""Messages and parameters of the Tendermint core: steps, votes, proposals, timeout config."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "NIL_ROUND",
    "Proposal",
    "Step",
    "TimeoutConfig",
    "TimeoutKind",
    "Vote",
    "VoteType",
]

NIL_ROUND = -1
"""The paper's ``-1``: no round (``lockedRound``/``validRound`` unset, a proposal without PoL)."""


class Step(IntEnum):
    """``step_p`` of the paper plus the two ends of a height.

    Ordered, so ``step >= Step.PREVOTE`` reads like the paper's ``step_p >= prevote`` (L36).
    """

    UNSTARTED = 0  # before the first NewHeight
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    COMMIT = 4  # decided; waiting for the driver's NewHeight(h + 1)


class VoteType(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


class TimeoutKind(IntEnum):
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


@dataclass(frozen=True, slots=True)
class Vote:
    """⟨PREVOTE|PRECOMMIT, h, r, id(v)|nil⟩ from ``validator``.

    ``signature`` is opaque to the core: the driver verifies it before feeding the vote in and
    reads it back from ``Decide.precommits`` / ``RecordEvidence`` to rebuild commits and evidence.
    Two votes that differ only in ``signature`` are the same vote to the vote keeper.
    """

    type: VoteType
    height: int
    round: int
    value_id: bytes | None
    validator: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Proposal:
    """⟨PROPOSAL, h, r, v, vr⟩ from ``proposer``; ``pol_round`` is ``vr`` (``-1`` without PoL)."""

    height: int
    round: int
    value_id: bytes
    pol_round: int
    proposer: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts in milliseconds; round ``r`` waits ``base + r * delta`` (grows per round).

    Defaults are CometBFT's. ``timeout_commit`` is not here: waiting after a decision before
    the next height is the driver's business (it sends NewHeight when it wants).
    """

    timeout_propose_ms: int = 3000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 1000
    timeout_prevote_delta_ms: int = 500
    timeout_precommit_ms: int = 1000
    timeout_precommit_delta_ms: int = 500

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")

    def duration_ms(self, kind: TimeoutKind, round: int) -> int:
        if kind is TimeoutKind.PROPOSE:
            return self.timeout_propose_ms + round * self.timeout_propose_delta_ms
        if kind is TimeoutKind.PREVOTE:
            return self.timeout_prevote_ms + round * self.timeout_prevote_delta_ms
        return self.timeout_precommit_ms + round * self.timeout_precommit_delta_ms

"""Builders and a step runner for table-driven tests of the pure consensus core."""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.core import (
    NIL_ROUND,
    Effect,
    Event,
    Proposal,
    ProposalReceived,
    State,
    Step,
    TimeoutConfig,
    TimeoutFired,
    TimeoutKind,
    Vote,
    VoteReceived,
    VoteType,
    step,
)

CONFIG = TimeoutConfig()  # CometBFT defaults: propose 3000+500r, prevote/precommit 1000+500r


def prevote(validator: bytes, value: bytes | None, round: int = 0, height: int = 1) -> Vote:
    return Vote(VoteType.PREVOTE, height, round, value, validator, b"sig-" + validator)


def precommit(validator: bytes, value: bytes | None, round: int = 0, height: int = 1) -> Vote:
    return Vote(VoteType.PRECOMMIT, height, round, value, validator, b"sig-" + validator)


def own(vote: Vote) -> Vote:
    """The unsigned vote the core asks the driver to sign."""
    return Vote(vote.type, vote.height, vote.round, vote.value_id, vote.validator)


def proposal(
    proposer: bytes, value: bytes, round: int = 0, pol_round: int = NIL_ROUND, height: int = 1
) -> Proposal:
    return Proposal(height, round, value, pol_round, proposer, b"sig-" + proposer)


def recv(msg: Vote | Proposal) -> Event:
    return VoteReceived(msg) if isinstance(msg, Vote) else ProposalReceived(msg)


def timeout(kind: TimeoutKind, round: int = 0, height: int = 1) -> TimeoutFired:
    return TimeoutFired(kind, height, round)


@dataclass(frozen=True)
class Expect:
    """The parts of the state the paper names; the tables compare exactly these."""

    round: int
    step: Step
    locked: tuple[bytes | None, int] = (None, NIL_ROUND)
    valid: tuple[bytes | None, int] = (None, NIL_ROUND)
    decision: bytes | None = None

    @classmethod
    def of(cls, s: State) -> Expect:
        return cls(
            s.round,
            s.step,
            (s.locked_value, s.locked_round),
            (s.valid_value, s.valid_round),
            s.decision,
        )


@dataclass(frozen=True)
class TestStep:
    __test__ = False  # not a pytest class

    desc: str
    event: Event
    effects: list[Effect] = field(default_factory=list)
    expect: Expect | None = None  # None: the same as after the previous step


def run_steps(state: State, steps: list[TestStep]) -> State:
    expected = Expect.of(state)
    for i, t in enumerate(steps):
        state, effects = step(state, t.event)
        assert effects == t.effects, f"step {i} ({t.desc}): effects {effects}"
        if t.expect is not None:
            expected = t.expect
        assert Expect.of(state) == expected, f"step {i} ({t.desc}): state {Expect.of(state)}"
    return state

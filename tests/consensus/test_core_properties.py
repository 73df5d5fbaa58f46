"""Hypothesis: invariants of one core under arbitrary event streams of one height."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.core import (
    NIL_ROUND,
    BroadcastVote,
    Decide,
    Event,
    NewHeight,
    Proposal,
    ProposalReceived,
    ProposerSelector,
    Step,
    TimeoutFired,
    TimeoutKind,
    ValidatorSet,
    ValidityVerdict,
    ValueReady,
    Vote,
    VoteReceived,
    VoteType,
    initial_state,
    step,
)
from tests.consensus.core_helpers import CONFIG

ADDRS = (b"v1", b"v2", b"v3", b"v4")
VALS = ValidatorSet.genesis([(b"v1", 1), (b"v2", 2), (b"v3", 1), (b"v4", 3)])
SELECTOR = ProposerSelector(VALS)
VALUES = (b"A", b"B", b"bad")
ROUNDS = st.integers(0, 3)


def _vote(kind: VoteType) -> st.SearchStrategy[Event]:
    return st.builds(
        lambda r, v, who: VoteReceived(Vote(kind, 1, r, v, who, b"s")),
        ROUNDS,
        st.sampled_from((*VALUES, None)),
        st.sampled_from(ADDRS),
    )


_events: st.SearchStrategy[Event] = st.one_of(
    _vote(VoteType.PREVOTE),
    _vote(VoteType.PRECOMMIT),
    st.builds(
        lambda r, v, vr: ProposalReceived(
            Proposal(1, r, v, vr if vr < r else NIL_ROUND, SELECTOR.proposer(r), b"s")
        ),
        ROUNDS,
        st.sampled_from(VALUES),
        st.integers(NIL_ROUND, 2),
    ),
    st.builds(lambda k, r: TimeoutFired(k, 1, r), st.sampled_from(list(TimeoutKind)), ROUNDS),
    st.builds(lambda r, v: ValueReady(1, r, v), ROUNDS, st.sampled_from(VALUES)),
    st.builds(lambda r, v: ValidityVerdict(1, r, v, v != b"bad"), ROUNDS, st.sampled_from(VALUES)),
)


# Bursts: several validators voting alike, so that quorums, locks and decisions happen.
_burst: st.SearchStrategy[list[Event]] = st.builds(
    lambda kind, r, v, who: [VoteReceived(Vote(kind, 1, r, v, a, b"s")) for a in who],
    st.sampled_from(list(VoteType)),
    st.integers(0, 1),
    st.sampled_from((b"A", b"B", None)),
    st.lists(st.sampled_from(ADDRS), min_size=2, max_size=4, unique=True),
)
# A proposal from the right proposer together with its verdict.
_proposed: st.SearchStrategy[list[Event]] = st.builds(
    lambda r, v, vr: [
        ProposalReceived(Proposal(1, r, v, vr if vr < r else NIL_ROUND, SELECTOR.proposer(r))),
        ValidityVerdict(1, r, v, v != b"bad"),
    ],
    st.integers(0, 1),
    st.sampled_from(VALUES),
    st.integers(NIL_ROUND, 0),
)
_streams = st.lists(
    st.one_of(_events.map(lambda e: [e]), _burst, _proposed), min_size=8, max_size=30
).map(lambda chunks: [e for chunk in chunks for e in chunk])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ADDRS), _streams)
def test_invariants_hold_for_any_event_stream(me: bytes, events: list[Event]) -> None:
    state, _ = step(initial_state(me, CONFIG), NewHeight(1, VALS))
    signed: dict[tuple[int, VoteType], bytes | None] = {}
    decisions = 0
    for event in events:
        before = state
        state, effects = step(state, event)
        # rounds never go back; the height never changes without NewHeight
        assert state.height == 1 and state.round >= before.round
        if state.round == before.round and before.step is not Step.COMMIT:
            assert state.step >= before.step
        assert state.locked_round <= state.valid_round <= state.round
        assert (state.locked_value is None) == (state.locked_round == NIL_ROUND)
        assert (state.valid_value is None) == (state.valid_round == NIL_ROUND)
        assert (state.step is Step.COMMIT) == (state.decision is not None)
        assert state.locked_value != b"bad" and state.decision != b"bad"
        for effect in effects:
            if isinstance(effect, BroadcastVote):
                vote = effect.vote
                key = (vote.round, vote.type)
                # never two different votes for one round and type (no self-equivocation)
                assert signed.setdefault(key, vote.value_id) == vote.value_id
                assert vote.validator == me and vote.round == state.round
                # feed our own vote back, as the driver does
                state, _ = step(state, VoteReceived(replace(vote, signature=b"own")))
            elif isinstance(effect, Decide):
                decisions += 1
                power = sum(VALS.power_of(v.validator) for v in effect.precommits)
                assert 3 * power > 2 * VALS.total_power
                assert all(v.value_id == effect.value_id for v in effect.precommits)
    assert decisions <= 1

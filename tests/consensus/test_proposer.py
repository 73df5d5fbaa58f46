"""Proposer selection: CometBFT's spec examples and test vectors, fairness, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.core.proposer import (
    INT64_MAX,
    INT64_MIN,
    MAX_TOTAL_VOTING_POWER,
    PRIORITY_WINDOW_SIZE_FACTOR,
    ProposerSelector,
    Validator,
    ValidatorSet,
    center_priorities,
    clip_int64,
    increment_proposer_priority,
    new_validator_priorities,
    rescale_priorities,
    update_validators,
)


def sequence(vs: ValidatorSet, n: int) -> list[str]:
    out = []
    for _ in range(n):
        assert vs.proposer is not None
        out.append(vs.proposer.decode())
        vs = vs.increment()
    return out


def priorities(vs: ValidatorSet) -> dict[str, int]:
    return {v.address.decode(): v.priority for v in vs.validators}


# ---------------------------------------------------------------- spec examples


def test_spec_stable_set_powers_1_and_3() -> None:
    # spec "Stable Set" and R2: p2, p1, p2, p2, repeating, priorities back to 0 after 4 runs
    vs = ValidatorSet.genesis([(b"p1", 1), (b"p2", 3)])
    assert sequence(vs, 12) == ["p2", "p1", "p2", "p2"] * 3
    runs = []
    for _ in range(4):
        runs.append(priorities(vs))
        vs = vs.increment()
    assert runs == [
        {"p1": 1, "p2": -1},  # run 1: A(i) += VP(i) -> 1, 3; A(p2) -= 4
        {"p1": -2, "p2": 2},  # run 2: 2, 2 -> tie -> p1 (smaller address); A(p1) -= 4
        {"p1": -1, "p2": 1},  # run 3
        {"p1": 0, "p2": 0},  # run 4: back where it started
    ]


def test_spec_voting_power_change() -> None:
    # "Voting Power Change": from (p1: 1, p2: -1), p1's power becomes 4; p1 proposes next
    vs = ValidatorSet((Validator(b"p1", 1, 1), Validator(b"p2", 3, -1)), b"p2")
    nxt = vs.update([(b"p1", 4)]).increment()
    assert nxt.proposer == b"p1"
    assert priorities(nxt) == {"p1": -2, "p2": 2}


def test_spec_validator_removal_centres() -> None:
    # "Validator Removal": (p1: 1, p2: 2, p3: -3), remove p2: avg -1 is subtracted, p1 proposes
    vs = ValidatorSet(
        (Validator(b"p1", 1, 1), Validator(b"p2", 2, 2), Validator(b"p3", 3, -3)), b"p3"
    )
    removed = vs.update([(b"p2", 0)])
    assert priorities(removed) == {"p1": 2, "p3": -2}
    nxt = removed.increment()
    assert nxt.proposer == b"p1"
    assert priorities(nxt) == {"p1": -1, "p3": 1}


def test_spec_new_validator_enters_at_minus_1_125_total() -> None:
    # "New Validator": p3 (power 8) joins p1 (1, priority 2) and p2 (3, priority -2)
    assert new_validator_priorities(1 + 3 + 8) == -13  # -1.125 * 12 ~ -13
    vs = ValidatorSet((Validator(b"p1", 1, 2), Validator(b"p2", 3, -2)), b"p2")
    joined = vs.update([(b"p3", 8)])
    # CometBFT centres right away, with big.Int's floor average: -13 // 3 = -5 (the spec's
    # table shows -4 with truncating division; the proposer is the same either way)
    assert priorities(joined) == {"p1": 7, "p2": 3, "p3": -8}
    assert joined.increment().proposer == b"p1"


def test_spec_priority_range_is_scaled() -> None:
    # "Proposer Priority Range": without scaling p2 and p3 end 45k apart with total power 20;
    # with scaling the distance stays within 2 * P at every run.
    vs = ValidatorSet.genesis([(b"p1", 80_000)])
    vs = vs.update([(b"p2", 10)])
    assert priorities(vs)["p2"] - priorities(vs)["p1"] == new_validator_priorities(80_010)
    vs = vs.increment()
    vs = vs.update([(b"p3", 10)]).increment()
    vs = vs.update([(b"p1", 0)]).increment()
    assert priorities(vs) == {"p2": 10, "p3": -10}
    assert vs.total_power == 20
    assert max(priorities(vs).values()) - min(priorities(vs).values()) <= 2 * vs.total_power


@pytest.mark.parametrize(
    ("powers", "expected"),
    [
        # Tendermint spec (proposer-selection.md, first version): fairness examples
        (
            [("p0", 4), ("p1", 2), ("p2", 2), ("p3", 2)],
            "p0 p1 p2 p3 p0 p0 p1 p2 p3 p0 p0 p1 p2 p3 p0 p0 p1 p2 p3 p0",
        ),
        (
            [("p0", 3)] + [(f"p{i}", 1) for i in range(1, 8)],
            "p0 p1 p2 p3 p0 p4 p5 p6 p7 p0 p0 p1 p2 p3 p0 p4 p5 p6 p7 p0",
        ),
        # CometBFT types/validator_set_test.go TestProposerSelection1
        (
            [("foo", 1000), ("bar", 300), ("baz", 330)],
            "foo baz foo bar foo foo baz foo bar foo foo baz foo foo bar foo baz foo foo bar "
            "foo foo baz foo bar foo foo baz foo bar foo foo baz foo foo bar foo baz foo foo "
            "bar foo baz foo foo bar foo baz foo foo bar foo baz foo foo foo baz bar foo foo "
            "foo baz foo bar foo foo baz foo bar foo foo baz foo bar foo foo baz foo bar foo "
            "foo baz foo foo bar foo baz foo foo bar foo baz foo foo bar foo baz foo foo",
        ),
        # equal powers go in address order
        ([("a", 100), ("b", 100), ("c", 100)], "a b c a b c a b c"),
        # 400 vs 100s: once first, not twice in a row; 401: twice in a row
        ([("a", 100), ("b", 100), ("c", 400)], "c a"),
        ([("a", 100), ("b", 100), ("c", 401)], "c c a"),
    ],
)
def test_reference_sequences(powers: list[tuple[str, int]], expected: str) -> None:
    vs = ValidatorSet.genesis([(a.encode(), p) for a, p in powers])
    n = len(expected.split())
    assert " ".join(sequence(vs, n)) == expected


def test_genesis_priorities_match_cometbft() -> None:
    vs = ValidatorSet.genesis([(b"foo", 1000), (b"bar", 300), (b"baz", 330)])
    assert priorities(vs) == {"foo": -630, "bar": 300, "baz": 330}
    assert vs.proposer == b"foo"
    # canonical order: power descending, then address
    assert vs.addresses == (b"foo", b"baz", b"bar")


def test_proportional_counts_over_a_period() -> None:
    # CometBFT TestProposerSelection2: powers 4, 5, 3 over 120 runs propose 40, 50, 30 times
    vs = ValidatorSet.genesis([(b"a0", 4), (b"a1", 5), (b"a2", 3)])
    counts = {"a0": 0, "a1": 0, "a2": 0}
    for name in sequence(vs, 120):
        counts[name] += 1
    assert counts == {"a0": 40, "a1": 50, "a2": 30}


def test_averaging_with_voting_power_table() -> None:
    # CometBFT TestAveragingInIncrementProposerPriorityWithVotingPower: (10, 1, 1), times 1..11
    vp0, vp1, vp2 = 10, 1, 1
    total = vp0 + vp1 + vp2
    vals = (Validator(b"\x00", vp0), Validator(b"\x01", vp1), Validator(b"\x02", vp2))
    table = [
        (1, [vp0 - total, vp1, vp2], 0),
        (2, [2 * (vp0 - total), 2 * vp1, 2 * vp2], 0),
        (3, [3 * (vp0 - total), 3 * vp1, 3 * vp2], 0),
        (4, [4 * (vp0 - total), 4 * vp1, 4 * vp2], 0),
        (5, [4 * (vp0 - total) + vp0, 5 * vp1 - total, 5 * vp2], 1),
        (6, [6 * vp0 - 5 * total, 6 * vp1 - total, 6 * vp2], 0),
        (7, [7 * vp0 - 6 * total, 7 * vp1 - total, 7 * vp2], 0),
        (8, [8 * vp0 - 7 * total, 8 * vp1 - total, 8 * vp2], 0),
        (9, [9 * vp0 - 7 * total, 9 * vp1 - total, 9 * vp2 - total], 2),
        (10, [10 * vp0 - 8 * total, 10 * vp1 - total, 10 * vp2 - total], 0),
        (11, [11 * vp0 - 9 * total, 11 * vp1 - total, 11 * vp2 - total], 0),
    ]
    for times, want, proposer in table:
        got, chosen = increment_proposer_priority(vals, times)
        assert [v.priority for v in got] == want, times
        assert chosen == vals[proposer].address, times


# ---------------------------------------------------------------- int64 arithmetic


def test_clipping_and_average_like_go() -> None:
    assert clip_int64(INT64_MAX + 10) == INT64_MAX
    assert clip_int64(INT64_MIN - 10) == INT64_MIN
    # computeAvgProposerPriority cases (big.Int, then subtracting with clipping)
    big = (Validator(b"a", 1, INT64_MAX), Validator(b"b", 1, 0), Validator(b"c", 1, 0))
    assert [v.priority for v in center_priorities(big)] == [
        INT64_MAX - INT64_MAX // 3,
        -(INT64_MAX // 3),
        -(INT64_MAX // 3),
    ]
    low = (Validator(b"a", 1, INT64_MIN), Validator(b"b", 1, INT64_MIN))
    assert [v.priority for v in center_priorities(low)] == [0, 0]
    # floor, not truncation, for a negative average
    assert [v.priority for v in center_priorities((Validator(b"a", 1, -1),) * 1)] == [0]
    three = (Validator(b"a", 1, -13), Validator(b"b", 1, 0), Validator(b"c", 1, 0))
    assert [v.priority for v in center_priorities(three)] == [-8, 5, 5]


def test_rescale_truncates_toward_zero() -> None:
    vals = (Validator(b"a", 1, 7), Validator(b"b", 1, -7), Validator(b"c", 1, 0))
    # diff 14 > 4: ratio ceil(14 / 4) = 4; Go truncates 7/4 -> 1 and -7/4 -> -1
    assert [v.priority for v in rescale_priorities(vals, 4)] == [1, -1, 0]
    assert rescale_priorities(vals, 14) == vals


def test_increment_clips_at_int64() -> None:
    vals = (Validator(b"a", MAX_TOTAL_VOTING_POWER - 1, INT64_MAX), Validator(b"b", 1, INT64_MIN))
    got, proposer = increment_proposer_priority(vals, 3)
    assert all(INT64_MIN <= v.priority <= INT64_MAX for v in got)
    assert proposer == b"a"


# ---------------------------------------------------------------- updates


@pytest.mark.parametrize(
    ("start", "changes", "message"),
    [
        ([(b"v1", 10), (b"v2", 10)], [(b"v1", 11), (b"v1", 22)], "duplicate"),
        ([(b"v1", 10), (b"v2", 10)], [(b"v1", 0), (b"v1", 0)], "duplicate"),
        ([(b"v1", 10), (b"v2", 10)], [(b"v1", -123)], "negative"),
        ([(b"v1", 10), (b"v2", 10)], [(b"v3", 0)], "failed to find"),
        ([(b"v1", 10), (b"v2", 20)], [(b"v1", 0), (b"v2", 0)], "empty set"),
        ([(b"v1", 10), (b"v2", 10)], [(b"v1", INT64_MAX)], "higher than"),
        ([(b"v1", MAX_TOTAL_VOTING_POWER - 1)], [(b"v2", 5)], "exceeds"),
        ([(b"v1", 10)], [("v2", 5)], "a change is"),
    ],
)
def test_update_errors_leave_the_set_unchanged(
    start: list[tuple[bytes, int]], changes: list[tuple[bytes, int]], message: str
) -> None:
    vs = ValidatorSet.genesis(start)
    before = vs.validators
    with pytest.raises(ValueError, match=message):
        vs.update(changes)
    assert vs.validators == before


def test_update_order_of_changes_does_not_matter() -> None:
    vs = ValidatorSet.genesis([(b"v1", 10), (b"v2", 20), (b"v3", 30), (b"v4", 40)])
    changes = [(b"v1", 0), (b"v3", 0), (b"v2", 22), (b"v5", 50), (b"v4", 44)]
    want = vs.update(changes)
    assert vs.update(reversed(changes)) == want
    assert vs.update(changes[2:] + changes[:2]) == want
    assert want.addresses == (b"v5", b"v4", b"v2")


@pytest.mark.parametrize(
    "bad",
    [
        (),
        ((b"a", 0, 0),),
        ((b"a", 1, 0), (b"a", 2, 0)),
        ((b"", 1, 0),),
        ((b"a", 1, INT64_MAX + 1),),
    ],
)
def test_validator_set_rejects_bad_members(bad: tuple[tuple[bytes, int, int], ...]) -> None:
    with pytest.raises(ValueError):
        ValidatorSet(tuple(Validator(*v) for v in bad), None)


def test_proposer_selector_needs_an_elected_proposer() -> None:
    vs = ValidatorSet.genesis([(b"a", 1), (b"b", 2)]).update([(b"c", 3)])
    with pytest.raises(ValueError, match="increment"):
        ProposerSelector(vs)


# ---------------------------------------------------------------- heights and rounds


def test_rounds_increment_one_at_a_time_and_are_cached() -> None:
    vs = ValidatorSet.genesis([(b"a", 5), (b"b", 3), (b"c", 1)])
    selector = ProposerSelector(vs)
    by_hand, expected = vs, []
    for _ in range(30):
        expected.append(by_hand.proposer)
        by_hand = by_hand.increment()
    assert [selector.proposer(r) for r in range(29, -1, -1)] == expected[::-1]
    assert selector.validators_at(7) is selector.validators_at(7)
    assert selector.validators is vs
    with pytest.raises(ValueError):
        selector.proposer(-1)


def test_next_height_ignores_the_rounds_of_the_previous_height() -> None:
    # CometBFT: the next height's set is the height's set (not the one of its last round)
    # with the updates applied and one increment.
    vs = ValidatorSet.genesis([(b"a", 5), (b"b", 3), (b"c", 1)])
    selector = ProposerSelector(vs)
    selector.proposer(4)  # the height went to round 4
    assert vs.next_height() == vs.increment()
    assert vs.next_height([(b"d", 2)]) == vs.update([(b"d", 2)]).increment()


@pytest.mark.parametrize(
    "powers",
    [
        [5, 11, 17, 23, 41],  # total 97 does not divide 10,000
        [1, 2, 3, 4, 5, 6, 7],
        [100, 200, 300, 333, 67],
        [3, 3, 3, 3, 1_000_000 // 97],
    ],
)
def test_fairness_over_10000_heights(powers: list[int]) -> None:
    vs = ValidatorSet.genesis([(f"val{i}".encode(), p) for i, p in enumerate(powers)])
    heights = 10_000
    counts = dict.fromkeys(vs.addresses, 0)
    for _ in range(heights):
        assert vs.proposer is not None
        counts[vs.proposer] += 1
        vs = vs.next_height()
    total = sum(powers)
    for address, count in counts.items():
        expected = heights * vs.power_of(address) / total
        assert abs(count - expected) <= max(0.01 * expected, 1.0), (address, count, expected)


def test_input_order_does_not_matter() -> None:
    members = [(b"a", 5), (b"b", 3), (b"c", 1), (b"d", 3)]
    assert ValidatorSet.genesis(members) == ValidatorSet.genesis(members[::-1])


# ---------------------------------------------------------------- invariants (Hypothesis)

_addresses = st.binary(min_size=1, max_size=3)
_members = st.dictionaries(_addresses, st.integers(1, 10**12), min_size=1, max_size=8)


@st.composite
def _histories(draw: st.DrawFn) -> tuple[dict[bytes, int], list[object]]:
    members = draw(_members)
    ops: list[object] = []
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.booleans()):
            ops.append(draw(st.integers(1, 5)))  # increment times
        else:
            ops.append(
                draw(st.dictionaries(_addresses, st.integers(0, 10**12), min_size=1, max_size=3))
            )
    return members, ops


def _check_invariants(vs: ValidatorSet) -> None:
    n = len(vs)
    total_priority = sum(v.priority for v in vs.validators)
    # centred: the floor average is subtracted, so the sum lands in [0, n)
    assert 0 <= total_priority < n
    spread = max(v.priority for v in vs.validators) - min(v.priority for v in vs.validators)
    # rescaled to <= 2P before each election; one election adds at most P + max power
    bound = PRIORITY_WINDOW_SIZE_FACTOR * vs.total_power
    assert spread <= bound + vs.total_power + max(v.power for v in vs.validators)
    assert all(INT64_MIN <= v.priority <= INT64_MAX for v in vs.validators)
    rescaled = rescale_priorities(vs.validators, bound)
    assert max(v.priority for v in rescaled) - min(v.priority for v in rescaled) <= bound


@settings(max_examples=150, deadline=None)
@given(_histories())
def test_priorities_stay_centred_and_bounded(
    history: tuple[dict[bytes, int], list[object]],
) -> None:
    members, ops = history
    vs = ValidatorSet.genesis(members.items())
    _check_invariants(vs)
    for op in ops:
        if isinstance(op, int):
            vs = vs.increment(op)
        else:
            assert isinstance(op, dict)
            try:
                updated = update_validators(vs.validators, op.items())
            except ValueError:
                continue  # an invalid change set (unknown removal, empty set): skipped
            vs = ValidatorSet(updated, None).increment()
        _check_invariants(vs)
        assert vs.proposer in vs


@settings(max_examples=100, deadline=None)
@given(_members)
def test_each_validator_proposes_power_times_per_period(members: dict[bytes, int]) -> None:
    # R2 for a stable set: over P consecutive elections everyone proposes exactly VP times
    small = {a: 1 + p % 7 for a, p in members.items()}
    vs = ValidatorSet.genesis(small.items())
    total = vs.total_power
    counts = dict.fromkeys(small, 0)
    for _ in range(total):
        assert vs.proposer is not None
        counts[vs.proposer] += 1
        vs = vs.increment()
    assert counts == small

"""The FL task contract on a real chain: handlers, round lifecycle, block validator, rewards,
slashing, HE decryption, queries, and identical app hashes across processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger.codec import CodecError, decode_record, encode, to_plain
from ledger.errors import InvalidBlockError
from ledger.fl import (
    AWAITING_DECRYPTION,
    FINISHED,
    OPEN,
    DecryptedAggregate,
    FlCode,
    FLSection,
    InferenceRecord,
    KeyShare,
    Payout,
    Rejection,
    TaskSpec,
    due_rounds,
    get_key_share,
    get_result,
    get_round_model,
    get_submission,
    get_task,
    get_trainer,
    list_inferences,
    list_submissions,
    list_tasks,
    list_trainers,
    next_task_id,
    pol_seed,
    query,
    query_key,
    split_rewards,
)
from ledger.fl.state import active_task_ids
from ledger.fl.testing import (
    FLChain,
    build_result,
    build_section,
    codes,
    events,
    fake_cid,
    he_spec,
    make_spec,
    replace_result,
    scenario_app_hashes,
)
from ledger.results import Code
from ledger.schema import get_account
from ledger.state import verify_query
from ledger.testing import CommittedBlock

ROOT = Path(__file__).resolve().parents[2]
CREATOR, HOLDER = 8, 9
TRAINERS = (4, 5, 6, 7)  # accounts 0-3 operate the validators


def chain() -> FLChain:
    return FLChain.make(n_validators=4, n_accounts=10)


def balance(c: FLChain, i: int) -> int:
    return get_account(c.state.app, c.addr(i)).balance


def started(
    spec: TaskSpec | None = None, trainers: tuple[int, ...] = (4, 5, 6), bond: int = 100
) -> FLChain:
    """A chain with task 1 created and ``trainers`` joined (two blocks)."""
    c = chain()
    spec = spec or make_spec()
    x = bytes(32) if spec.uses_he else b""
    c.advance([c.create(CREATOR, spec)])
    assert codes(c.advance([c.join(i, 1, bond, x) for i in trainers])) == [0] * len(trainers)
    return c


def one(cb: CommittedBlock, type_: str) -> dict[str, str]:
    found = events(cb, type_)
    assert len(found) == 1, [e.type for e in events(cb)]
    return found[0].attributes


# ---------------------------------------------------------------- TaskCreate and Join


def test_task_create_escrows_the_pool_and_opens_round_one() -> None:
    c = chain()
    before = balance(c, CREATOR)
    spec = make_spec(pool=9_000, round_blocks=4)

    cb = c.advance([c.create(CREATOR, spec), c.create(CREATOR, make_spec(pool=1))])

    assert codes(cb) == [0, 0]
    task = get_task(c.state, 1)
    assert task is not None
    assert (task.status, task.round, task.round_opened, task.deadline) == (OPEN, 1, 1, 5)
    assert (task.pool_left, task.rounds_done, task.creator) == (9_000, 0, c.addr(CREATOR))
    assert task.global_model_cid == spec.initial_model_cid
    assert balance(c, CREATOR) == before - 9_001
    assert [i for i, _ in list_tasks(c.state)] == [1, 2] and next_task_id(c.state) == 3
    model = get_round_model(c.state, 1, 0)
    assert model is not None and model.model_cid == spec.initial_model_cid
    created = events(cb, "fl.task_created")[0].attributes
    assert created["task"] == "1" and created["pool"] == "9000"
    assert events(cb, "fl.round_opened")[0].attributes["deadline"] == "5"


def test_task_create_without_funds_fails() -> None:
    c = FLChain.make(n_validators=4, n_accounts=10, balance=500)

    cb = c.advance([c.create(CREATOR, make_spec(pool=501))])

    assert codes(cb) == [Code.INSUFFICIENT_FUNDS]
    assert get_task(c.state, 1) is None and next_task_id(c.state) == 1


def test_join_bonds_tokens() -> None:
    c = started(trainers=())
    before = balance(c, 4)

    assert codes(c.advance([c.join(4, 1, 250)])) == [0]

    tr = get_trainer(c.state, 1, c.addr(4))
    assert tr is not None and (tr.bond, tr.strikes, tr.jailed) == (250, 0, False)
    assert balance(c, 4) == before - 250
    assert [a for a, _ in list_trainers(c.state, 1)] == [c.addr(4)]


JOIN_ERRORS: list[tuple[str, Any, int]] = [
    ("unknown task", lambda c: c.join(4, 7), FlCode.TASK_NOT_FOUND),
    ("bond below join_bond", lambda c: c.join(4, 1, 99), FlCode.BOND_TOO_SMALL),
    ("x25519 on a plain task", lambda c: c.join(4, 1, 100, bytes(32)), FlCode.BAD_X25519_KEY),
    ("x25519 missing on HE", lambda c: c.join(4, 2, 100), FlCode.BAD_X25519_KEY),
    ("twice", lambda c: c.join(5, 1), FlCode.ALREADY_JOINED),
    ("no funds", lambda c: c.join(4, 1, 10**9), Code.INSUFFICIENT_FUNDS),
]


@pytest.mark.parametrize(("label", "make_tx", "code"), JOIN_ERRORS, ids=[j[0] for j in JOIN_ERRORS])
def test_join_errors(label: str, make_tx: Any, code: int) -> None:
    c = started(trainers=(5,))
    c.advance([c.create(CREATOR, he_spec([c.addr(HOLDER)]))])

    cb = c.advance([make_tx(c)])

    assert codes(cb) == [code]
    assert cb.results.tx_results[0].log  # every failure says why


# ---------------------------------------------------------------- SubmitUpdate


def test_submission_is_stored_with_the_block_seed() -> None:
    c = started()

    cb = c.advance([c.submit(4, 1, 1, samples=123)])

    assert codes(cb) == [0]
    sub = get_submission(c.state, 1, 1, c.addr(4))
    assert sub is not None
    assert (sub.sample_count, sub.height, sub.reveal_cid) == (123, cb.block.height, b"")
    assert sub.seed == pol_seed(cb.block.id, c.addr(4))
    attrs = one(cb, "fl.submission")
    assert attrs["seed"] == sub.seed.hex() and attrs["round"] == "1"


def _full_round(c: FLChain) -> list[Any]:
    return [c.submit(i, 1, 1) for i in (4, 5, 6)]


SUBMIT_ERRORS: list[tuple[str, dict[str, Any], Any, int]] = [
    ("unknown task", {}, lambda c: [c.submit(4, 9, 1)], FlCode.TASK_NOT_FOUND),
    ("not joined", {}, lambda c: [c.submit(7, 1, 1)], FlCode.NOT_JOINED),
    ("wrong round", {}, lambda c: [c.submit(4, 1, 2)], FlCode.WRONG_ROUND),
    (
        "duplicate",
        {},
        lambda c: [c.submit(4, 1, 1), c.submit(4, 1, 1)],
        FlCode.DUPLICATE_SUBMISSION,
    ),
    (
        "over clients_per_round",
        dict(clients_per_round=2, min_participants=1),
        _full_round,
        FlCode.ROUND_FULL,
    ),
    (
        "round samples over the aggregation bound",
        {},
        lambda c: [c.submit(4, 1, 1, samples=1 << 21), c.submit(5, 1, 1, samples=(1 << 21) + 1)],
        FlCode.ROUND_SAMPLES_EXCEEDED,
    ),
    (
        "no transcript under PoL",
        dict(pol_policy="attest", pol_k=4),
        lambda c: [c.submit(4, 1, 1, transcript=False)],
        FlCode.TRANSCRIPT_REQUIRED,
    ),
]


@pytest.mark.parametrize(
    ("label", "spec", "make_txs", "code"), SUBMIT_ERRORS, ids=[s[0] for s in SUBMIT_ERRORS]
)
def test_submission_errors(label: str, spec: dict[str, Any], make_txs: Any, code: int) -> None:
    c = started(make_spec(**spec))

    cb = c.advance(make_txs(c))

    assert codes(cb)[-1] == code
    assert all(x == 0 for x in codes(cb)[:-1])


def test_late_submission_under_replay_and_in_the_mempool() -> None:
    # replay: from the deadline on, only reveals come in, until deadline + reveal_blocks
    c = started(make_spec(pol_policy="replay", pol_k=4, reveal_blocks=3, round_blocks=4))
    c.advance([c.submit(4, 1, 1), c.submit(5, 1, 1)])
    c.advance_empty(1)  # height 4; deadline is 5
    assert c.height == 5

    cb = c.advance([c.submit(6, 1, 1)])

    assert codes(cb) == [FlCode.LATE]
    # plain task: the mempool sees the deadline before the block's begin-block moves it
    p = started(make_spec(round_blocks=2, min_participants=1))
    assert p.height == 3 and p.builder.app.check_tx(p.state, p.submit(4, 1, 1)).code == FlCode.LATE


def test_check_tx_accepts_a_valid_submission() -> None:
    c = started()

    res = c.builder.app.check_tx(c.state, c.submit(4, 1, 1))

    assert res.code == 0  # CheckTx has no block id: its seed is a placeholder, never kept


# ---------------------------------------------------------------- due rounds and deadlines


def test_a_full_round_is_due_at_the_next_height() -> None:
    c = started()
    c.advance(_full_round(c))
    assert due_rounds(c.state, c.height) == [(1, 1)]

    with pytest.raises(InvalidBlockError, match="no FL section but due: task 1 round 1"):
        c.advance(section=None)
    cb = c.advance()

    task = get_task(c.state, 1)
    assert task is not None and (task.round, task.round_opened, task.deadline) == (2, 4, 8)
    assert get_result(c.state, 1, 1) == cb.block.pol.results[0]  # type: ignore[union-attr]
    assert one(cb, "fl.round_opened")["round"] == "2"
    assert due_rounds(c.state, c.height) == []


def test_round_closes_at_the_deadline_with_min_participants() -> None:
    c = started(make_spec(round_blocks=4, min_participants=2))  # created at 1: deadline 5
    c.advance([c.submit(4, 1, 1), c.submit(5, 1, 1)])
    assert due_rounds(c.state, 4) == [] and due_rounds(c.state, 5) == [(1, 1)]

    c.advance()  # height 4
    cb = c.advance()  # height 5

    assert one(cb, "fl.round_closed")["accepted"] == "2"


def test_deadline_moves_when_too_few_submitted() -> None:
    c = started(make_spec(round_blocks=4, min_participants=2))
    c.advance([c.submit(4, 1, 1)])  # height 3
    c.advance()  # height 4
    assert due_rounds(c.state, 5) == []

    cb = c.advance()  # height 5: time is up with 1 of 2

    attrs = one(cb, "fl.deadline_extended")
    assert attrs == {
        "task": "1",
        "round": "1",
        "submissions": "1",
        "min_participants": "2",
        "deadline": "9",
    }
    task = get_task(c.state, 1)
    assert task is not None and task.deadline == 9 and task.round == 1
    assert codes(c.advance([c.submit(5, 1, 1)])) == [0]  # the round takes submissions again
    c.advance_empty(2)  # heights 7, 8
    assert due_rounds(c.state, c.height) == [(1, 1)]


def test_replay_round_waits_for_reveals() -> None:
    c = started(make_spec(pol_policy="replay", pol_k=4, reveal_blocks=3, clients_per_round=2))
    c.advance([c.submit(4, 1, 1), c.submit(5, 1, 1)])
    assert due_rounds(c.state, c.height) == []  # full, but no reveals yet

    c.advance([c.reveal(4, 1, 1)])
    assert due_rounds(c.state, c.height) == []
    c.advance([c.reveal(5, 1, 1)])
    assert due_rounds(c.state, c.height) == [(1, 1)]
    sub = get_submission(c.state, 1, 1, c.addr(5))
    assert sub is not None and sub.reveal_cid


def test_replay_round_closes_at_the_reveal_deadline() -> None:
    c = started(make_spec(pol_policy="replay", pol_k=4, reveal_blocks=3, round_blocks=4))
    c.advance([c.submit(4, 1, 1), c.submit(5, 1, 1)])  # deadline 5, reveals until 7
    c.advance_empty(4)  # heights 4-7
    assert c.height == 8 and due_rounds(c.state, 8) == [(1, 1)]


REVEAL_ERRORS: list[tuple[str, Any, int]] = [
    ("policy not replay", lambda c: [c.reveal(4, 2, 1)], FlCode.NOT_REPLAY),
    ("no submission", lambda c: [c.reveal(6, 1, 1)], FlCode.NO_SUBMISSION),
    ("twice", lambda c: [c.reveal(4, 1, 1), c.reveal(4, 1, 1)], FlCode.DUPLICATE_REVEAL),
    ("wrong round", lambda c: [c.reveal(4, 1, 2)], FlCode.WRONG_ROUND),
]


@pytest.mark.parametrize(
    ("label", "make_txs", "code"), REVEAL_ERRORS, ids=[r[0] for r in REVEAL_ERRORS]
)
def test_reveal_errors(label: str, make_txs: Any, code: int) -> None:
    c = started(make_spec(pol_policy="replay", pol_k=4, reveal_blocks=3))
    c.advance([c.create(CREATOR, make_spec()), c.submit(4, 1, 1)])

    cb = c.advance(make_txs(c))

    assert codes(cb)[-1] == code


def test_late_reveal_is_refused_by_the_mempool() -> None:
    c = started(make_spec(pol_policy="replay", pol_k=4, reveal_blocks=1, round_blocks=3))
    c.advance([c.submit(4, 1, 1)])  # height 3; deadline 4, reveals until 4
    c.advance()
    assert c.height == 5

    assert c.builder.app.check_tx(c.state, c.reveal(4, 1, 1)).code == FlCode.REVEAL_LATE


# ---------------------------------------------------------------- the block validator


def _due_chain() -> FLChain:
    c = started()
    c.advance(_full_round(c))
    return c


def _section(c: FLChain) -> FLSection:
    s = build_section(c.state, c.height)
    assert s is not None
    return s


BAD_SECTIONS: list[tuple[str, Any, str]] = [
    (
        "result for another round",
        lambda c, s: replace_result(s, 0, round=2),
        "closes task 1 round 2, due: task 1 round 1",
    ),
    (
        "a submission left out",
        lambda c, s: replace_result(s, 0, accepted=s.results[0].accepted[1:]),
        "not judged",
    ),
    (
        "a trainer that did not submit",
        lambda c, s: replace_result(
            s, 0, rejected=(Rejection(b"\xff" * 20, fake_cid("u"), "unavailable", 0, False),)
        ),
        "did not submit",
    ),
    (
        "wrong update CID",
        lambda c, s: replace_result(
            s,
            0,
            accepted=(
                dataclasses.replace(s.results[0].accepted[0], update_cid=fake_cid("other")),
                *s.results[0].accepted[1:],
            ),
        ),
        "wrong CID",
    ),
    (
        "wrong sample count",
        lambda c, s: replace_result(
            s,
            0,
            accepted=(
                dataclasses.replace(s.results[0].accepted[0], samples=99),
                *s.results[0].accepted[1:],
            ),
        ),
        "99 samples, submitted 100",
    ),
    (
        "PoL evidence on a task without PoL",
        lambda c, s: replace_result(
            s,
            0,
            accepted=(
                dataclasses.replace(s.results[0].accepted[0], pol_segments=(1,)),
                *s.results[0].accepted[1:],
            ),
        ),
        "PoL evidence",
    ),
    ("no digest", lambda c, s: replace_result(s, 0, aggregate_digest=b""), "aggregate_digest"),
    ("no model", lambda c, s: replace_result(s, 0, new_model_cid=b""), "new_model_cid"),
    (
        "an encrypted aggregate on a plain task",
        lambda c, s: replace_result(s, 0, encrypted_aggregate_cid=fake_cid("e")),
        "no encrypted aggregate",
    ),
    (
        "all rejected but the model changes",
        lambda c, s: replace_result(
            FLSection(
                (build_result(c.state, 1, reject={c.addr(i): ("x", False) for i in (4, 5, 6)}),)
            ),
            0,
            new_model_cid=fake_cid("changed"),
        ),
        "the model stays",
    ),
]


@pytest.mark.parametrize(
    ("label", "mutate", "match"), BAD_SECTIONS, ids=[b[0] for b in BAD_SECTIONS]
)
def test_block_validator_refuses_bad_sections(label: str, mutate: Any, match: str) -> None:
    c = _due_chain()
    bad = mutate(c, _section(c))

    with pytest.raises(InvalidBlockError, match=match):
        c.advance(section=bad)
    c.advance()  # the right section still goes through


def test_section_when_nothing_is_due_is_refused() -> None:
    c = _due_chain()
    section = _section(c)
    c.advance()

    with pytest.raises(InvalidBlockError, match="no round is due"):
        c.advance(section=section)


def test_a_repeated_submission_in_a_section_does_not_decode() -> None:
    c = _due_chain()
    plain = to_plain(_section(c))
    accepted = plain[1][0][3]  # FLSection.results[0].accepted
    accepted.insert(1, accepted[0])

    with pytest.raises(CodecError, match="sorted by trainer address"):
        decode_record(encode(plain), FLSection)


def test_two_tasks_due_in_one_block_close_in_task_order() -> None:
    c = started()
    c.advance([c.create(CREATOR, make_spec())])
    c.advance([c.join(i, 2) for i in (4, 5, 6)])
    c.advance(_full_round(c) + [c.submit(i, 2, 1) for i in (4, 5, 6)])
    assert due_rounds(c.state, c.height) == [(1, 1), (2, 1)]
    with pytest.raises(ValueError, match="ascending task order"):
        FLSection(tuple(reversed(_section(c).results)))
    cb = c.advance()

    assert [e.attributes["task"] for e in events(cb, "fl.round_closed")] == ["1", "2"]


# ---------------------------------------------------------------- rewards


def test_split_rewards_prepare_execute_assert() -> None:
    # Prepare: budget 1000, 10 % to 3 validators, the rest by samples 1:3, capped at 700
    signers, contribs = [b"v1", b"v2", b"v3"], [(b"t1", 1), (b"t2", 3)]

    # Execute
    payouts = split_rewards(1000, 100_000, 700, signers, contribs)

    # Assert: 100 -> 34/33/33; 900 -> 225 and min(675, 700)
    assert payouts == [
        Payout("validator", b"v1", 34),
        Payout("validator", b"v2", 33),
        Payout("validator", b"v3", 33),
        Payout("trainer", b"t1", 225),
        Payout("trainer", b"t2", 675),
    ]
    assert split_rewards(1000, 100_000, 100, [], contribs) == [
        Payout("trainer", b"t1", 100),
        Payout("trainer", b"t2", 100),
    ]
    assert split_rewards(0, 100_000, 100, signers, contribs) == []
    assert split_rewards(10, 1_000_000, 100, signers, []) == [
        Payout("validator", b"v1", 4),
        Payout("validator", b"v2", 3),
        Payout("validator", b"v3", 3),
    ]


def test_rewards_exact_amounts_with_caps_remainders_and_refund() -> None:
    spec = make_spec(pool=10_001, rounds=2, validator_share_ppm=123_457, trainer_reward_cap=2_000)
    c = started(spec, trainers=(4, 5, 6))
    operators = [c.addr(i) for i in range(4)]
    before = {a: get_account(c.state.app, a).balance for a in operators}
    trainer_before = [balance(c, i) for i in (4, 5, 6)]
    samples = {4: 100, 5: 200, 6: 300}

    c.advance([c.submit(i, 1, 1, samples=samples[i]) for i in (4, 5, 6)])
    r1 = c.advance()  # closes round 1; its last commit has all 4 signers

    # budget 10001 // 2 = 5000: validators 5000 * 123457 // 1e6 = 617 -> 155, 154, 154, 154;
    # trainers 4383 by samples: 730, 1461, min(2191, 2000)
    rewards = [(e.attributes["role"], int(e.attributes["amount"])) for e in events(r1, "fl.reward")]
    assert rewards == [
        ("validator", 155),
        ("validator", 154),
        ("validator", 154),
        ("validator", 154),
        ("trainer", 730),
        ("trainer", 1461),
        ("trainer", 2000),
    ]
    closed = one(r1, "fl.round_closed")
    assert (closed["budget"], closed["paid"]) == ("5000", "4808")
    task = get_task(c.state, 1)
    assert task is not None and task.pool_left == 10_001 - 4808 and task.rounds_done == 1

    # round 2, and the block before the closing one is committed by 3 of 4 validators
    keys = c.net.validator_keys
    c.advance([c.submit(i, 1, 2, samples=samples[i]) for i in (4, 5, 6)], signers=keys[:3])
    creator_before = balance(c, CREATOR)
    r2 = c.advance()

    # budget 5193: validators 641 -> 215, 213, 213; trainers 4552: 758, 1517, min(2276, 2000)
    amounts = [int(e.attributes["amount"]) for e in events(r2, "fl.reward")]
    assert amounts == [215, 213, 213, 758, 1517, 2000]
    signer_vals = [bytes.fromhex(e.attributes["recipient"]) for e in events(r2, "fl.reward")[:3]]
    assert signer_vals == sorted(k.address for k in keys[:3])  # commit order, first gets the rest
    finished = one(r2, "fl.task_finished")
    assert finished["refund"] == str(5193 - 4916) == "277"
    assert balance(c, CREATOR) == creator_before + 277
    # every validator reward went to its operator's account, each trainer got what it earned
    paid_ops = sum(get_account(c.state.app, a).balance - before[a] for a in operators)
    assert paid_ops == 617 + 641
    earned = [730 + 758, 1461 + 1517, 2000 + 2000]
    assert [balance(c, i) - b for i, b in zip((4, 5, 6), trainer_before)] == earned
    assert [get_trainer(c.state, 1, c.addr(i)).earned for i in (4, 5, 6)] == earned  # type: ignore[union-attr]
    task = get_task(c.state, 1)
    assert task is not None and (task.status, task.pool_left, task.rounds_done) == (FINISHED, 0, 2)


# ---------------------------------------------------------------- slashing and jailing


def test_proven_rejections_slash_and_jail_after_repeats() -> None:
    spec = make_spec(rounds=3, slash_ppm=100_000, jail_after=2, min_participants=1)
    c = started(spec, trainers=(4, 5, 6), bond=1_000)
    reject1 = {1: {c.addr(5): ("pol_failed", True), c.addr(6): ("unavailable", False)}}

    c.advance(_full_round(c))
    r1 = c.advance(reject=reject1)

    slash = one(r1, "fl.slash")
    assert (slash["trainer"], slash["amount"], slash["bond"]) == (c.addr(5).hex(), "100", "900")
    assert (slash["strikes"], slash["jailed"], slash["reason"]) == ("1", "False", "pol_failed")
    t5, t6 = get_trainer(c.state, 1, c.addr(5)), get_trainer(c.state, 1, c.addr(6))
    assert t5 is not None and (t5.bond, t5.strikes, t5.jailed, t5.rejected) == (900, 1, False, 1)
    assert t6 is not None and (t6.bond, t6.strikes, t6.rejected) == (1_000, 0, 1)  # not proven

    c.advance([c.submit(i, 1, 2) for i in (4, 5, 6)])
    r2 = c.advance(reject={1: {c.addr(5): ("opposes_consensus", True)}})

    assert one(r2, "fl.slash")["amount"] == "90"
    assert one(r2, "fl.trainer_jailed") == {"task": "1", "trainer": c.addr(5).hex(), "strikes": "2"}
    t5 = get_trainer(c.state, 1, c.addr(5))
    assert t5 is not None and (t5.bond, t5.strikes, t5.jailed) == (810, 2, True)
    assert int(one(r2, "fl.round_closed")["burned"]) == 90

    cb = c.advance([c.submit(5, 1, 3), c.join(5, 1), c.leave(5, 1)])
    assert codes(cb) == [FlCode.TRAINER_JAILED, FlCode.TRAINER_JAILED, 0]
    assert one(cb, "fl.leave")["amount"] == "810"


# ---------------------------------------------------------------- finishing, leaving


def test_finishing_refunds_and_leave_rules() -> None:
    spec = make_spec(rounds=1, pool=1_000, validator_share_ppm=0, trainer_reward_cap=100)
    c = started(spec)  # deadline 5
    c.advance([c.submit(4, 1, 1), c.submit(5, 1, 1)])  # height 3
    assert codes(c.advance([c.leave(4, 1), c.leave(7, 1)])) == [  # height 4
        FlCode.PENDING_SUBMISSION,
        FlCode.NOTHING_TO_WITHDRAW,
    ]
    creator_before, bond_before = balance(c, CREATOR), balance(c, 4)
    cb = c.advance()  # height 5 closes the only round: 2 x 100 paid, 800 back

    assert one(cb, "fl.task_finished")["refund"] == "800"
    assert balance(c, CREATOR) == creator_before + 800
    task = get_task(c.state, 1)
    assert task is not None and task.status == FINISHED and active_task_ids(c.state.app) == []
    model = get_round_model(c.state, 1, 1)
    assert model is not None and model.model_cid == task.global_model_cid
    cb = c.advance([c.leave(4, 1), c.leave(4, 1), c.submit(5, 1, 1), c.join(7, 1)])
    assert codes(cb) == [0, FlCode.NOTHING_TO_WITHDRAW, FlCode.TASK_FINISHED, FlCode.TASK_FINISHED]
    assert balance(c, 4) == bond_before + 100 + 100  # its reward, then its bond
    assert due_rounds(c.state, c.height + 100) == []


def test_leave_and_rejoin_during_a_task() -> None:
    c = started()
    c.advance([c.leave(4, 1)])  # no submission pending: may leave

    cb = c.advance([c.submit(4, 1, 1), c.join(4, 1), c.submit(4, 1, 1)])

    assert codes(cb) == [FlCode.NOT_JOINED, 0, 0]


def test_an_all_rejected_round_keeps_the_model() -> None:
    c = started(make_spec(rounds=2))
    c.advance(_full_round(c))
    before = get_task(c.state, 1)

    cb = c.advance(reject={1: {c.addr(i): ("unavailable", False) for i in (4, 5, 6)}})

    after = get_task(c.state, 1)
    assert before is not None and after is not None
    assert after.global_model_cid == before.global_model_cid and after.round == 2
    rewards = events(cb, "fl.reward")
    assert {e.attributes["role"] for e in rewards} == {"validator"}  # nobody to pay but signers


# ---------------------------------------------------------------- HE


def test_he_round_waits_for_the_key_holders() -> None:
    c = chain()
    holder = c.addr(HOLDER)
    c.advance([c.create(CREATOR, he_spec([holder], rounds=2))])
    w = c.wallets[HOLDER]
    x = bytes(32)
    c.advance([c.join(i, 1, 100, x) for i in (4, 5, 6)])
    cb = c.advance(
        [
            c.wallets[4].sign(KeyShare(1, c.addr(5), fake_cid("k"))),  # not a key holder
            w.sign(KeyShare(1, c.addr(7), fake_cid("k"))),  # not joined
            w.sign(KeyShare(1, c.addr(5), fake_cid("k5"))),
            *_full_round(c),
        ]
    )
    assert codes(cb) == [FlCode.NOT_KEY_HOLDER, FlCode.NOT_JOINED, 0, 0, 0, 0]
    share = get_key_share(c.state, 1, c.addr(5))
    assert share is not None and share.holder == holder

    cb = c.advance()  # the round closes with an encrypted aggregate

    task = get_task(c.state, 1)
    assert task is not None and task.status == AWAITING_DECRYPTION and task.rounds_done == 1
    result = get_result(c.state, 1, 1)
    assert result is not None and result.encrypted_aggregate_cid and not result.new_model_cid
    assert one(cb, "fl.awaiting_decryption")["round"] == "1"
    assert due_rounds(c.state, c.height + 50) == []  # nothing closes while it decrypts
    assert get_round_model(c.state, 1, 1) is None

    new_model = fake_cid("decrypted/1")
    cb = c.advance(
        [
            c.submit(4, 1, 1),
            c.wallets[4].sign(DecryptedAggregate(1, 1, new_model)),
            w.sign(DecryptedAggregate(1, 2, new_model)),
            w.sign(DecryptedAggregate(1, 1, new_model)),
            w.sign(DecryptedAggregate(1, 1, new_model)),
            c.submit(4, 1, 2, transcript=False),
        ]
    )

    assert codes(cb) == [
        FlCode.TASK_NOT_OPEN,
        FlCode.NOT_KEY_HOLDER,
        FlCode.NOT_AWAITING_DECRYPTION,
        0,
        FlCode.NOT_AWAITING_DECRYPTION,
        0,
    ]
    task = get_task(c.state, 1)
    assert task is not None and (task.status, task.round, task.global_model_cid) == (
        OPEN,
        2,
        new_model,
    )
    assert task.round_opened == cb.block.height
    model = get_round_model(c.state, 1, 1)
    assert model is not None and model.model_cid == new_model
    plain = c.advance([w.sign(KeyShare(2, c.addr(4), fake_cid("k")))])
    assert codes(plain) == [FlCode.TASK_NOT_FOUND]


def test_key_share_and_decryption_need_an_he_task() -> None:
    c = started()
    w = c.wallets[HOLDER]

    cb = c.advance(
        [
            w.sign(KeyShare(1, c.addr(4), fake_cid("k"))),
            w.sign(DecryptedAggregate(1, 1, fake_cid("m"))),
        ]
    )

    assert codes(cb) == [FlCode.NOT_HE, FlCode.NOT_HE]


def test_he_section_must_not_name_a_plaintext_model() -> None:
    c = chain()
    c.advance([c.create(CREATOR, he_spec([c.addr(HOLDER)]))])
    c.advance([c.join(i, 1, 100, bytes(32)) for i in (4, 5, 6)])
    c.advance(_full_round(c))
    s = _section(c)

    with pytest.raises(InvalidBlockError, match="encrypted_aggregate_cid only"):
        c.advance(section=replace_result(s, 0, new_model_cid=fake_cid("plain")))


# ---------------------------------------------------------------- inference, queries


def test_inference_records_are_numbered() -> None:
    c = chain()
    body = InferenceRecord(fake_cid("model"), b"\x01" * 32, b"\x02" * 32)

    cb = c.advance([c.wallets[4].sign(body), c.wallets[5].sign(body)])

    assert [e.attributes["n"] for e in events(cb, "fl.inference")] == ["1", "2"]
    entries = list_inferences(c.state)
    assert [(n, e.sender, e.height) for n, e in entries] == [
        (1, c.addr(4), 1),
        (2, c.addr(5), 1),
    ]
    assert list_inferences(c.state, start=2) == entries[1:]
    assert list_inferences(c.state, limit=1) == entries[:1]


def test_queries_over_a_live_state_with_proofs() -> None:
    c = started()
    c.advance(_full_round(c))
    c.advance()
    state = c.state

    task = query(state, "/fl/task/1")
    assert task["id"] == 1 and task["round"] == 2 and task["status"] == "open"
    assert [t["id"] for t in query(state, "/fl/tasks")] == [1]
    assert query(state, "/fl/tasks/finished") == []
    subs = query(state, "/fl/submissions/1/1")
    assert [s["trainer"] for s in subs] == sorted(c.addr(i).hex() for i in (4, 5, 6))
    assert len(query(state, "/fl/trainers/1")) == 3
    rounds = query(state, "/fl/rounds/1")
    assert len(rounds) == 1 and len(rounds[0]["accepted"]) == 3
    assert query(state, "/fl/round/1/1") == {"task": 1, "round": 1, **rounds[0]}
    assert query(state, "/fl/model/1/1")["model_cid"].startswith("b")
    assert query(state, "/fl/task/2") is None
    assert query(state, "/fl/due") == []
    assert query(state, "/fl/next_task") == {"next_task": 2}
    assert [x for x, _ in list_submissions(state, 1, 1)] == sorted(c.addr(i) for i in (4, 5, 6))

    for path in ("/fl/task/1", "/fl/round/1/1", "/fl/task/5"):
        qr = c.builder.app.query(state, query_key(path))
        assert verify_query(state.app_hash, qr)


# ---------------------------------------------------------------- determinism


def test_app_hashes_identical_across_processes() -> None:
    code = "from ledger.fl.testing import scenario_app_hashes as s; print(' '.join(s()))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED=seed),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.split())

    mine = scenario_app_hashes()

    assert outs[0] == outs[1] == mine
    assert len(set(mine)) == 9  # blocks with FL txs or round closes changed the state

"""FL contract records under the codec: generated values round-trip; junk and mutations raise
only ``CodecError``. ``FL_STRATEGIES`` covers every FL record (for tests/ledger/strategies.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.codec import CodecError, decode_record, encode, record_types
from ledger.fl import (
    Contribution,
    DecryptedAggregate,
    FLSection,
    InferenceEntry,
    InferenceRecord,
    Join,
    KeyShare,
    KeyShareRecord,
    Leave,
    Rejection,
    Reveal,
    RoundModel,
    RoundResult,
    Submission,
    SubmitUpdate,
    TaskCreate,
    TaskState,
    TrainerState,
)
from ledger.fl.testing import make_spec

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

address = st.binary(min_size=20, max_size=20)
hash32 = st.binary(min_size=32, max_size=32)
cid = st.binary(min_size=1, max_size=64)
maybe_cid = st.one_of(st.just(b""), cid)
ids = st.integers(1, 2**63 - 1)
rounds = st.integers(1, 10_000)
amounts = st.integers(0, 2**63 - 1)
score = st.integers(-(2**63), 2**63 - 1)
reason = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)


def _spec_for(rule: str) -> st.SearchStrategy[Any]:
    # a validation set only with the robust rule (the spec refuses it otherwise)
    return st.builds(
        make_spec,
        rounds=st.integers(1, 10_000),
        clients_per_round=st.just(4),
        min_participants=st.integers(1, 4),
        round_blocks=st.integers(1, 1_000_000),
        rule=st.just(rule),
        pool=amounts,
        trainer_reward_cap=amounts,
        validator_share_ppm=st.integers(0, 10**6),
        join_bond=st.integers(1, 2**63 - 1),
        slash_ppm=st.integers(0, 10**6),
        jail_after=st.integers(1, 1000),
        initial_model_cid=cid,
        validation_cid=maybe_cid if rule == "robust" else st.just(b""),
    )


task_spec = st.sampled_from(["robust", "fedavg", "median", "krum"]).flatmap(_spec_for)
contribution = st.builds(
    Contribution,
    address,
    cid,
    st.integers(1, 1 << 22),
    score,
    st.lists(st.integers(0, 2**32 - 1), max_size=16, unique=True).map(lambda x: tuple(sorted(x))),
    st.lists(cid, max_size=16).map(tuple),
)
rejection = st.builds(Rejection, address, cid, reason, score, st.booleans())


@st.composite
def round_result(draw: st.DrawFn, task_id: int | None = None) -> RoundResult:
    accepted = draw(st.lists(contribution, max_size=4, unique_by=lambda c: c.trainer))
    taken = {c.trainer for c in accepted}
    rejected = draw(
        st.lists(
            rejection.filter(lambda r: r.trainer not in taken),
            max_size=4,
            unique_by=lambda r: r.trainer,
        )
    )
    return RoundResult(
        task_id if task_id is not None else draw(ids),
        draw(rounds),
        tuple(sorted(accepted, key=lambda c: c.trainer)),
        tuple(sorted(rejected, key=lambda r: r.trainer)),
        draw(st.one_of(st.just(b""), hash32)),
        draw(maybe_cid),
        draw(maybe_cid),
    )


@st.composite
def fl_section(draw: st.DrawFn) -> FLSection:
    tasks = draw(st.lists(ids, min_size=1, max_size=3, unique=True))
    return FLSection(tuple(draw(round_result(t)) for t in sorted(tasks)))


@st.composite
def task_state(draw: st.DrawFn) -> TaskState:
    spec = draw(task_spec)
    opened = draw(st.integers(0, 2**40))
    return TaskState(
        spec,
        draw(address),
        draw(st.sampled_from(["open", "awaiting_decryption", "finished"])),
        draw(st.integers(1, spec.rounds)),
        opened,
        opened + draw(st.integers(1, 10**6)),
        draw(cid),
        draw(amounts),
        draw(st.integers(0, spec.rounds)),
    )


FL_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "TaskSpec": task_spec,
    "TaskCreate": st.builds(TaskCreate, task_spec),
    "Join": st.builds(Join, ids, st.integers(1, 2**63 - 1), st.sampled_from([b"", b"\x05" * 32])),
    "SubmitUpdate": st.builds(
        SubmitUpdate, ids, rounds, cid, maybe_cid, st.integers(1, 1 << 22), hash32
    ),
    "Reveal": st.builds(Reveal, ids, rounds, cid),
    "KeyShare": st.builds(KeyShare, ids, address, cid),
    "DecryptedAggregate": st.builds(DecryptedAggregate, ids, rounds, cid),
    "InferenceRecord": st.builds(InferenceRecord, cid, hash32, hash32),
    "Leave": st.builds(Leave, ids),
    "Contribution": contribution,
    "Rejection": rejection,
    "RoundResult": round_result(),
    "FLSection": fl_section(),
    "TaskState": task_state(),
    "TrainerState": st.builds(
        TrainerState,
        amounts,
        amounts,
        st.booleans(),
        st.sampled_from([b"", b"\x07" * 32]),
        amounts,
        amounts,
        amounts,
    ),
    "Submission": st.builds(
        Submission, cid, maybe_cid, st.integers(1, 2**40), hash32, amounts, hash32, maybe_cid
    ),
    "InferenceEntry": st.builds(InferenceEntry, cid, hash32, hash32, amounts, address),
    "KeyShareRecord": st.builds(KeyShareRecord, address, cid, amounts),
    "RoundModel": st.builds(RoundModel, cid, amounts),
}


def test_every_fl_record_has_a_strategy() -> None:
    fl_types = {cls.__name__ for tag, cls in record_types().items() if 100 <= tag < 200}

    assert fl_types == set(FL_STRATEGIES)


@pytest.mark.parametrize("name", sorted(FL_STRATEGIES))
@FAST
@given(data=st.data())
def test_fl_records_round_trip(name: str, data: st.DataObject) -> None:
    value = data.draw(FL_STRATEGIES[name])

    raw = encode(value)
    back = decode_record(raw, type(value))

    assert back == value and type(back) is type(value) and encode(back) == raw


@pytest.mark.parametrize("name", ["TaskCreate", "SubmitUpdate", "FLSection", "TaskState"])
@FAST
@given(data=st.data())
def test_mutated_fl_encodings_raise_only_codec_error(name: str, data: st.DataObject) -> None:
    value = data.draw(FL_STRATEGIES[name])
    raw = bytearray(encode(value))
    i = data.draw(st.integers(0, len(raw) - 1))
    op = data.draw(st.sampled_from(["flip", "delete", "truncate", "append"]))
    if op == "flip":
        raw[i] ^= data.draw(st.integers(1, 255))
    elif op == "delete":
        del raw[i]
    elif op == "truncate":
        del raw[i:]
    else:
        raw += b"\x00"

    try:
        back = decode_record(bytes(raw), type(value))
    except CodecError:
        return
    assert encode(back) == bytes(raw)


@pytest.mark.parametrize("name", sorted(FL_STRATEGIES))
@FAST
@given(junk=st.binary(max_size=200))
def test_junk_raises_only_codec_error(name: str, junk: bytes) -> None:
    cls = {c.__name__: c for tag, c in record_types().items() if 100 <= tag < 200}[name]
    try:
        value: Any = decode_record(junk, cls)
    except CodecError:
        return
    assert encode(value) == junk

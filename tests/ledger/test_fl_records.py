"""FL contract records: strict validation of specs, tx bodies and sections; codec; query paths."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from ledger.codec import CodecError, decode, decode_record, encode, to_plain
from ledger.fl import (
    Contribution,
    DecryptedAggregate,
    FLSection,
    InferenceRecord,
    Join,
    KeyShare,
    Leave,
    Rejection,
    Reveal,
    RoundResult,
    SubmitUpdate,
    TaskCreate,
    pol_seed,
    round_id,
)
from ledger.fl.query import QueryPathError, cid_text, decode_value, query_key, to_json
from ledger.fl.spec import MAX_ROUND_SAMPLES, POL_POLICIES, PRIVACY_MODES
from ledger.fl.state import (
    NEXT_TASK_KEY,
    InferenceEntry,
    KeyShareRecord,
    RoundModel,
    Submission,
    TaskState,
    TrainerState,
    model_key,
    sub_key,
    task_key,
    trainer_key,
)
from ledger.fl.testing import DEFAULT_TRAIN, fake_cid, he_spec, make_spec

A1, A2, A3 = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
CID = fake_cid("x")
H32 = b"\x07" * 32


def train(**changes: Any) -> dict[str, Any]:
    return {**DEFAULT_TRAIN, **changes}


# ---------------------------------------------------------------- the spec

VALID_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("default", {}),
    ("dp", dict(privacy="dp", dp_clip_q=1 << 24, dp_noise_milli=1100, dp_delta_ppb=10_000)),
    ("he", dict(privacy="he", key_holders=(A1, A2), he_context_cid=CID)),
    (
        "dp+he",
        dict(
            privacy="dp+he",
            key_holders=(A1,),
            he_context_cid=CID,
            dp_clip_q=1,
            dp_noise_milli=0,
            dp_delta_ppb=1,
        ),
    ),
    ("replay", dict(pol_policy="replay", pol_k=10, reveal_blocks=2)),
    ("attest robust", dict(pol_policy="attest", pol_k=1, rule="robust", rule_params={"clip": 0})),
    ("robust fractions", dict(rule="robust", rule_params={"min_cos": "-0.25", "trust": 1})),
    ("trimmed", dict(rule="trimmed", rule_params={"beta": "0.1"})),
    ("multikrum", dict(rule="multikrum", rule_params={"f": 1, "m": 3})),
    ("normbound", dict(rule="normbound", rule_params={"max_norm": "2.5"})),
    (
        "mnist cnn",
        dict(model_id="mnist_cnn", data_schema="mnist", model_config={"channels": [8, 16]}),
    ),
    ("cifar cnn", dict(model_id="cifar_cnn", data_schema="cifar10")),
    ("mlp on mnist", dict(data_schema="mnist", model_config={"input_dim": 784, "hidden": []})),
    ("adam, clip", dict(train=train(optimizer="adam", lr="0.001", clip_norm="1.0"))),
    ("no pool, validation set", dict(pool=0, rule="robust", validation_cid=CID, name="x" * 64)),
    ("min = clients", dict(min_participants=3, clients_per_round=3)),
]


@pytest.mark.parametrize(("label", "changes"), VALID_SPECS, ids=[v[0] for v in VALID_SPECS])
def test_valid_specs_round_trip(label: str, changes: dict[str, Any]) -> None:
    spec = make_spec(**changes)

    decoded = decode_record(encode(TaskCreate(spec)), TaskCreate)

    assert decoded.spec == spec


INVALID_SPECS: list[tuple[dict[str, Any], str]] = [
    (dict(name=""), "name"),
    (dict(name="x" * 65), "name"),
    (dict(name="a\nb"), "printable"),
    (dict(model_id="resnet"), "unknown model id"),
    (dict(model_config={"bogus": 1}), "unknown config key"),
    (dict(model_config={"hidden": 64}), "list of positive ints"),
    (dict(model_config={"hidden": [0]}), "list of positive ints"),
    (dict(model_config={"num_classes": 5}), "classes"),
    (dict(data_schema="imagenet"), "data_schema"),
    (dict(data_schema="mnist"), "shape"),
    (dict(train=train(lr="0.10")), "to_plain"),
    (dict(train={k: v for k, v in DEFAULT_TRAIN.items() if k != "seed"}), "to_plain"),
    (dict(train=train(lr="-1.0")), "train"),
    (dict(train=train(lr="nan")), "train"),
    (dict(train=train(epochs=0)), "epochs"),
    (dict(train=train(batch_size=1 << 17)), "batch_size"),
    (dict(train=train(bogus=1)), "unknown training config keys"),
    (dict(rounds=0), "rounds"),
    (dict(rounds=10_001), "rounds"),
    (dict(clients_per_round=0), "clients_per_round"),
    (dict(clients_per_round=513), "clients_per_round"),
    (dict(min_participants=4), "min_participants"),
    (dict(min_participants=0), "min_participants"),
    (dict(round_blocks=0), "round_blocks"),
    (dict(reveal_blocks=1), "only replay"),
    (dict(pol_policy="replay", pol_k=5, reveal_blocks=0), "reveal_blocks"),
    (dict(pol_policy="bogus"), "pol_policy"),
    (dict(pol_policy="attest", pol_k=0), "pol_k"),
    (dict(pol_policy="attest", pol_k=1, train=train(deterministic=False)), "deterministic"),
    (dict(rule="avg"), "unknown aggregation rule"),
    (dict(rule_params={"beta": "0.1"}), "takes no parameters"),
    (dict(rule="trimmed", rule_params={"beta": "0.5"}), "beta"),
    (dict(rule="trimmed", rule_params={"beta": "abc"}), "beta"),
    (dict(rule="normbound"), "max_norm"),
    (dict(rule="normbound", rule_params={"max_norm": "0"}), "max_norm"),
    (dict(rule="krum", rule_params={"f": -1}), "rule_params.f"),
    (dict(rule="multikrum", rule_params={"m": "2"}), "rule_params.m"),
    (dict(rule="robust", rule_params={"bogus": 1}), "unknown screen"),
    (dict(rule="robust", rule_params={"trust": 2}), "trust"),
    (dict(rule_params={f"k{i}": 1 for i in range(17)}), "at most 16"),
    (dict(privacy="secret"), "privacy"),
    (
        dict(privacy="dp", dp_clip_q=1, dp_delta_ppb=1, rule="robust"),
        "allows only the fedavg rule",
    ),
    (dict(privacy="dp", dp_clip_q=0, dp_delta_ppb=1), "dp_clip_q"),
    (dict(privacy="dp", dp_clip_q=(1 << 40) + 1, dp_delta_ppb=1), "dp_clip_q"),
    (dict(privacy="dp", dp_clip_q=1, dp_delta_ppb=10**9), "dp_delta_ppb"),
    (dict(privacy="dp", dp_clip_q=1, dp_delta_ppb=1, dp_noise_milli=-1), "dp_noise_milli"),
    (dict(dp_clip_q=5), "no DP"),
    (
        dict(privacy="he", key_holders=(A1,), he_context_cid=CID, pol_policy="attest", pol_k=1),
        "off",
    ),
    (dict(privacy="he", he_context_cid=CID), "key_holders"),
    (dict(privacy="he", key_holders=(A1, A1), he_context_cid=CID), "distinct"),
    (dict(privacy="he", key_holders=(b"\x01" * 19,), he_context_cid=CID), "key_holders"),
    (dict(privacy="he", key_holders=(A1,)), "he_context_cid"),
    (dict(key_holders=(A1,)), "only for HE"),
    (dict(he_context_cid=CID), "only for HE"),
    (dict(pool=-1), "pool"),
    (dict(trainer_reward_cap=2**63), "trainer_reward_cap"),
    (dict(validator_share_ppm=1_000_001), "validator_share_ppm"),
    (dict(join_bond=0), "join_bond"),
    (dict(slash_ppm=2_000_000), "slash_ppm"),
    (dict(jail_after=0), "jail_after"),
    (dict(initial_model_cid=b""), "initial_model_cid"),
    (dict(validation_cid=b"x" * 65), "validation_cid"),
    (dict(validation_cid=CID), "validation_cid needs the robust rule"),
    (dict(rounds=True), "rounds"),
]


@pytest.mark.parametrize(("changes", "match"), INVALID_SPECS)
def test_invalid_specs_are_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_spec(**changes)


def test_an_invalid_spec_on_the_wire_is_a_codec_error() -> None:
    plain = to_plain(TaskCreate(make_spec()))
    plain[1][6] = 0  # TaskSpec.rounds

    with pytest.raises(CodecError, match="rounds"):
        decode_record(encode(plain), TaskCreate)


def test_spec_helpers() -> None:
    spec = make_spec(model_config={"hidden": [32]})

    assert spec.train_config().lr == 0.1
    assert spec.resolved_model_config() == {"input_dim": 64, "hidden": [32], "num_classes": 10}
    assert he_spec([A1]).uses_he and not he_spec([A1]).uses_dp


def test_names_match_the_fl_engine() -> None:
    from fl.aggregate import W_MAX
    from fl.pol import POLICIES
    from fl.privacy.pipeline import MODES
    from fl.train import TrainConfig

    assert PRIVACY_MODES == MODES
    assert POL_POLICIES == POLICIES
    assert MAX_ROUND_SAMPLES == W_MAX
    assert TrainConfig(lr=0.1, epochs=1, batch_size=32).to_plain() == DEFAULT_TRAIN


# ---------------------------------------------------------------- tx bodies

VALID_BODIES = [
    Join(1, 100, b""),
    Join(2**63 - 1, 1, b"\x09" * 32),
    SubmitUpdate(1, 1, CID, CID, 1, H32),
    SubmitUpdate(1, 10_000, CID, b"", MAX_ROUND_SAMPLES, H32),
    Reveal(1, 1, CID),
    KeyShare(1, A1, CID),
    DecryptedAggregate(1, 1, CID),
    InferenceRecord(CID, H32, H32),
    Leave(1),
]


@pytest.mark.parametrize("body", VALID_BODIES, ids=lambda b: type(b).__name__)
def test_tx_bodies_round_trip(body: object) -> None:
    assert decode_record(encode(body), type(body)) == body


INVALID_BODIES: list[tuple[type, tuple[Any, ...], str]] = [
    (Join, (0, 100, b""), "task_id"),
    (Join, (1, 0, b""), "bond"),
    (Join, (1, 100, b"\x01" * 16), "x25519_pubkey"),
    (SubmitUpdate, (1, 0, CID, CID, 1, H32), "round"),
    (SubmitUpdate, (1, 10_001, CID, CID, 1, H32), "round"),
    (SubmitUpdate, (1, 1, b"", CID, 1, H32), "update_cid"),
    (SubmitUpdate, (1, 1, b"x" * 65, CID, 1, H32), "update_cid"),
    (SubmitUpdate, (1, 1, CID, b"x" * 65, 1, H32), "transcript_cid"),
    (SubmitUpdate, (1, 1, CID, CID, 0, H32), "sample_count"),
    (SubmitUpdate, (1, 1, CID, CID, MAX_ROUND_SAMPLES + 1, H32), "sample_count"),
    (SubmitUpdate, (1, 1, CID, CID, 1, H32[:31]), "data_commitment"),
    (SubmitUpdate, (True, 1, CID, CID, 1, H32), "task_id"),
    (Reveal, (1, 1, b""), "reveal_cid"),
    (KeyShare, (1, A1[:19], CID), "trainer"),
    (KeyShare, (1, A1, b""), "encrypted_key_cid"),
    (DecryptedAggregate, (1, 1, b""), "new_model_cid"),
    (InferenceRecord, (CID, H32[:31], H32), "query_hash"),
    (InferenceRecord, (CID, H32, b""), "result_hash"),
    (InferenceRecord, (b"", H32, H32), "model_cid"),
    (Leave, (0,), "task_id"),
]


@pytest.mark.parametrize(("cls", "args", "match"), INVALID_BODIES)
def test_invalid_tx_bodies_are_refused(cls: type, args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(*args)


# ---------------------------------------------------------------- the section


def contribution(trainer: bytes = A1, **kw: Any) -> Contribution:
    base: dict[str, Any] = dict(
        trainer=trainer,
        update_cid=CID,
        samples=10,
        score=-5,
        pol_segments=(0, 3),
        checkpoint_cids=(CID,),
    )
    base.update(kw)
    return Contribution(**base)


def rejection(trainer: bytes = A2, **kw: Any) -> Rejection:
    base: dict[str, Any] = dict(
        trainer=trainer, update_cid=CID, reason="pol_failed", score=0, proven=True
    )
    base.update(kw)
    return Rejection(**base)


def result(**kw: Any) -> RoundResult:
    base: dict[str, Any] = dict(
        task_id=1,
        round=1,
        accepted=(contribution(A1), contribution(A3)),
        rejected=(rejection(A2),),
        aggregate_digest=H32,
        new_model_cid=CID,
        encrypted_aggregate_cid=b"",
    )
    base.update(kw)
    return RoundResult(**base)


def test_section_round_trips() -> None:
    section = FLSection((result(), result(task_id=2, accepted=(), aggregate_digest=b"")))

    decoded = decode_record(encode(section), FLSection)

    assert decoded == section
    assert decoded.results[0].submissions == 3


INVALID_SECTION_PARTS: list[tuple[Any, str]] = [
    (lambda: contribution(samples=0), "samples"),
    (lambda: contribution(score=2**63), "score"),
    (lambda: contribution(pol_segments=(3, 3)), "ascending"),
    (lambda: contribution(pol_segments=tuple(range(17))), "pol_segments"),
    (lambda: contribution(pol_segments=(-1,)), "pol_segments"),
    (lambda: contribution(checkpoint_cids=(CID,) * 17), "checkpoint_cids"),
    (lambda: contribution(checkpoint_cids=(b"",)), "checkpoint_cids"),
    (lambda: contribution(trainer=b"\x01"), "trainer"),
    (lambda: rejection(reason=""), "reason"),
    (lambda: rejection(reason="é"), "ASCII"),
    (lambda: rejection(reason="x" * 65), "reason"),
    (lambda: rejection(proven=1), "proven"),
    (lambda: result(accepted=(contribution(A3), contribution(A1))), "sorted"),
    (lambda: result(accepted=(contribution(A1), contribution(A1))), "sorted"),
    (lambda: result(rejected=(rejection(A1),)), "both accepted and rejected"),
    (lambda: result(aggregate_digest=H32[:31]), "aggregate_digest"),
    (lambda: result(round=0), "round"),
    (lambda: FLSection(()), "1..256"),
    (lambda: FLSection((result(), result(round=2))), "ascending task order"),
]


@pytest.mark.parametrize(("build", "match"), INVALID_SECTION_PARTS)
def test_invalid_section_parts_are_refused(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_state_records_round_trip() -> None:
    values = [
        TaskState(make_spec(), A1, "open", 1, 5, 9, CID, 100, 0),
        TrainerState(100, 1, True, b"", 2, 1, 50),
        Submission(CID, b"", 10, H32, 7, H32, CID),
        InferenceEntry(CID, H32, H32, 3, A2),
        KeyShareRecord(A1, CID, 4),
        RoundModel(CID, 0),
    ]
    for v in values:
        assert decode_record(encode(v), type(v)) == v
    with pytest.raises(ValueError, match="status"):
        TaskState(make_spec(), A1, "paused", 1, 5, 9, CID, 100, 0)
    with pytest.raises(ValueError, match="deadline"):
        TaskState(make_spec(), A1, "open", 1, 5, 5, CID, 100, 0)
    with pytest.raises(ValueError, match="round"):
        TaskState(make_spec(rounds=3), A1, "open", 4, 5, 9, CID, 100, 0)


# ---------------------------------------------------------------- derivations


def test_round_id_and_seed_are_the_documented_hashes() -> None:
    expected_round = hashlib.sha256(
        b"chain-a" + (3).to_bytes(8, "big") + (2).to_bytes(4, "big")
    ).digest()
    expected_seed = hashlib.sha256(b"fedledger/pol/seed" + H32 + A1).digest()

    assert round_id("chain-a", 3, 2) == expected_round
    assert round_id("chain-b", 3, 2) != expected_round
    assert round_id("chain-a", 3, 3) != expected_round
    assert pol_seed(H32, A1) == expected_seed
    assert pol_seed(H32, A2) != expected_seed


# ---------------------------------------------------------------- query paths

QUERY_KEYS: list[tuple[str, bytes]] = [
    ("/fl/task/3", task_key(3)),
    ("/fl/trainer/3/" + A1.hex(), trainer_key(3, A1)),
    ("/fl/trainer/3/" + A1.hex().upper(), trainer_key(3, A1)),
    (f"/fl/submission/3/2/{A2.hex()}", sub_key(3, 2, A2)),
    ("/fl/model/3/0", model_key(3, 0)),
    ("/fl/next_task", NEXT_TASK_KEY),
    (" /fl/task/1 ", task_key(1)),
]


@pytest.mark.parametrize(("path", "key"), QUERY_KEYS)
def test_query_key(path: str, key: bytes) -> None:
    assert query_key(path) == key


BAD_PATHS: list[tuple[str, str]] = [
    ("/account/x", "unknown FL query path"),
    ("/fl/", "unknown FL query path"),
    ("/fl/bogus/1", "unknown FL query path"),
    ("/fl/task", "needs a task id"),
    ("/fl/task/0", "task id"),
    ("/fl/task/-1", "task id"),
    ("/fl/task/+1", "task id"),
    ("/fl/task/1/2", "takes <id>"),
    ("/fl/trainer/1/zz", "address"),
    ("/fl/trainer/1/" + "ab" * 19, "address"),
    ("/fl/round/1/0", "round"),
    ("/fl/round/1", "takes <id>/<round>"),
    ("/fl/submissions/1/1", "lists records"),
    ("/fl/inference/0", "n must be"),
    ("/fl/next_task/1", "no arguments"),
]


@pytest.mark.parametrize(("path", "match"), BAD_PATHS)
def test_bad_query_paths(path: str, match: str) -> None:
    with pytest.raises(QueryPathError, match=match):
        query_key(path)


def test_decode_value_adds_the_key_parts_and_renders_cids() -> None:
    sub = Submission(CID, b"", 10, H32, 7, H32, b"")

    view = decode_value(sub_key(3, 2, A2), encode(sub))

    assert view["task"] == 3 and view["round"] == 2 and view["trainer"] == A2.hex()
    assert view["update_cid"] == cid_text(CID) and view["transcript_cid"] == ""
    assert view["data_commitment"] == H32.hex() and view["sample_count"] == 10
    assert decode_value(task_key(1), None) is None
    assert decode_value(NEXT_TASK_KEY, encode(4)) == {"next_task": 4}
    with pytest.raises(QueryPathError):
        decode_value(b"acc/" + A1, encode(1))
    with pytest.raises(CodecError):
        decode_value(task_key(1), encode(1))


def test_cid_text_is_the_content_store_text_form() -> None:
    from storage.cid import chunk_cid

    cid = chunk_cid(b"some chunk")

    assert cid_text(bytes(cid)) == str(cid)
    assert to_json({"x_cids": [bytes(cid)], "h": b"\x01"}) == {"x_cids": [str(cid)], "h": "01"}


def test_spec_json_is_plain() -> None:
    spec = make_spec()
    out = to_json(spec)

    assert out["initial_model_cid"] == cid_text(spec.initial_model_cid)
    assert out["train"] == DEFAULT_TRAIN and out["key_holders"] == []
    assert decode(encode(dataclasses.asdict(spec)))  # only codec-safe values inside

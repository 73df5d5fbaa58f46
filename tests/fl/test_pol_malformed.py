"""PoL bad input: malformed transcripts, checkpoints and reveals give a clear reason, never a crash."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl.data import data_commitment, load_digits
from fl.models import build_model, state_dict_of, to_safetensors
from fl.pol import (
    MemorySink,
    PolVerdict,
    Reveal,
    Transcript,
    make_reveal,
    select_segments,
    verify,
)
from fl.pol.forgeries import HonestRun, honest_run, rebuild
from ledger.codec import decode_record, encode, to_plain

DATA = load_digits().subset(np.arange(160))
SEED = b"seed-from-a-later-block"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run() -> HonestRun:
    from fl.train import TrainConfig

    cfg = TrainConfig(lr=0.05, momentum=0.9, clip_norm=1.0, epochs=2, batch_size=16, seed=2)
    return honest_run(MemorySink(), DATA, cfg, k=4)


def _verify(run: HonestRun, cid: bytes, policy: str = "attest", **kw: Any) -> PolVerdict:
    args: dict[str, Any] = dict(
        seed=SEED,
        policy=policy,
        expected_start_cid=run.transcript.start_cid,
        expected_round_id=run.round_id,
        update_cid=run.transcript.update_cid,
        expected_model="mlp",
        expected_train=run.cfg,
        expected_data_root=data_commitment(DATA),
        expected_dataset_size=len(DATA),
    )
    args.update(kw)
    return verify(cid, run.sink, **args)


def _plain_edit(index: int, value: Any) -> Callable[[list[Any]], list[Any]]:
    def edit(p: list[Any]) -> list[Any]:
        p = list(p)
        p[index] = value
        return p

    return edit


def _seg_edit(seg: int, index: int, value: Any) -> Callable[[list[Any]], list[Any]]:
    def edit(p: list[Any]) -> list[Any]:
        p = list(p)
        segs = [list(s) for s in p[10]]
        segs[seg][index] = value
        p[10] = segs
        return p

    return edit


def _train_edit(**changes: Any) -> Callable[[list[Any]], list[Any]]:
    def edit(p: list[Any]) -> list[Any]:
        p = list(p)
        p[6] = {**p[6], **changes}
        return p

    return edit


# plain layout: [501, version, round_id, start_cid, model, model_config, train, data_root,
#                dataset_size, k, segments, update_cid]; segment: [500, start, end, model_cid,
#                optim_cid, batch_hash, update_norm_q]
PLAIN_DEFECTS: list[tuple[str, Callable[[list[Any]], list[Any]], str]] = [
    ("version 2", _plain_edit(1, 2), "malformed_transcript"),
    ("short round id", _plain_edit(2, b"abc"), "malformed_transcript"),
    ("round id as str", _plain_edit(2, "x" * 32), "malformed_transcript"),
    ("empty start cid", _plain_edit(3, b""), "malformed_transcript"),
    ("unknown model", _plain_edit(4, "resnet"), "malformed_transcript"),
    ("model config key", _plain_edit(5, {"depth": 3}), "malformed_transcript"),
    ("train unknown key", _train_edit(schedule="cosine"), "malformed_transcript"),
    ("train lr not a number", _train_edit(lr="fast"), "malformed_transcript"),
    ("train lr non-canonical", _train_edit(lr="0.050"), "malformed_transcript"),
    ("train epochs str", _train_edit(epochs="2"), "malformed_transcript"),
    ("train nondeterministic", _train_edit(deterministic=False), "malformed_transcript"),
    ("train fewer epochs", _train_edit(epochs=1), "hparams_mismatch"),
    ("short data root", _plain_edit(7, b"\x00" * 31), "malformed_transcript"),
    ("zero samples", _plain_edit(8, 0), "malformed_transcript"),
    ("huge data set", _plain_edit(8, 1 << 32), "data_mismatch"),
    ("k zero", _plain_edit(9, 0), "malformed_transcript"),
    ("k differs from segments", _plain_edit(9, 5), "malformed_transcript"),
    ("no segments", _plain_edit(10, []), "malformed_transcript"),
    ("segment gap", _seg_edit(1, 1, 5), "malformed_transcript"),
    ("segment end before start", _seg_edit(0, 2, 0), "malformed_transcript"),
    ("negative norm", _seg_edit(0, 6, -1), "malformed_transcript"),
    ("short batch hash", _seg_edit(2, 5, b"\x01"), "malformed_transcript"),
    ("wrong batch hash", _seg_edit(2, 5, b"\x01" * 32), "schedule_mismatch"),
    ("wrong norm", _seg_edit(3, 6, 12345), "norm_mismatch"),
    ("zero norm", _seg_edit(3, 6, 0), "norm_mismatch"),
    ("unknown checkpoint", _seg_edit(1, 3, b"\x07" * 32), "missing_content"),
    ("segment record tag", _seg_edit(0, 0, 503), "malformed_transcript"),
    ("update not final", _plain_edit(11, b"\x09" * 32), "update_mismatch"),
]


@pytest.mark.parametrize("name,edit,code", PLAIN_DEFECTS, ids=[d[0] for d in PLAIN_DEFECTS])
def test_malformed_transcript_field_is_a_clear_rejection(
    run: HonestRun, name: str, edit: Callable[[list[Any]], list[Any]], code: str
) -> None:
    plain = edit(to_plain(run.transcript))
    cid = run.sink.put(encode(plain))
    for policy in ("attest", "replay"):
        v = _verify(run, cid, policy, reveal_cid=b"none")
        assert not v.ok and v.code == code, v.reason
        assert ": " in v.reason and len(v.reason) < 500


def test_huge_model_config_is_rejected_without_allocating(run: HonestRun) -> None:
    # 7.7e12 parameters: compared by shape against the start model on the meta device
    huge = {"hidden": [1 << 20] * 8, "input_dim": 64, "num_classes": 10}
    cid = run.sink.put(encode(_plain_edit(5, huge)(to_plain(run.transcript))))
    v = _verify(run, cid, expected_model=None)
    assert v.code == "bad_checkpoint" and "start model" in v.reason
    assert _verify(run, cid).code == "model_mismatch"


def test_without_expectations_the_schedule_still_binds_size_and_epochs(run: HonestRun) -> None:
    for edit in (_plain_edit(8, 161), _train_edit(epochs=1), _train_edit(batch_size=8)):
        cid = run.sink.put(encode(edit(to_plain(run.transcript))))
        v = _verify(
            run, cid, expected_train=None, expected_data_root=None, expected_dataset_size=None
        )
        assert v.code == "schedule_mismatch", v.reason
    cid = run.sink.put(encode(_plain_edit(8, 1 << 31)(to_plain(run.transcript))))
    v = _verify(run, cid, expected_train=None, expected_dataset_size=None, expected_data_root=None)
    assert v.code == "malformed_transcript" and "schedule larger" in v.reason


RAW_DEFECTS = [
    ("empty", b""),
    ("garbage", b"\xc1\xff\x00garbage"),
    ("a float", encode([501]) + b"\xcb" + b"\x00" * 8),
    ("plain int", encode(7)),
    ("wrong record", encode([503, 1])),
]


@pytest.mark.parametrize("name,data", RAW_DEFECTS, ids=[d[0] for d in RAW_DEFECTS])
def test_undecodable_transcript_is_a_clear_rejection(
    run: HonestRun, name: str, data: bytes
) -> None:
    v = _verify(run, run.sink.put(data))
    assert v.code == "malformed_transcript", v.reason


def test_truncated_and_extended_transcripts_are_rejected(run: HonestRun) -> None:
    good = encode(run.transcript)
    for data in (good[:-1], good[: len(good) // 2], good + b"\x00"):
        assert _verify(run, run.sink.put(data)).code == "malformed_transcript"


def test_expectations_mismatch(run: HonestRun) -> None:
    cid = run.transcript_cid
    assert _verify(run, cid).ok
    assert _verify(run, cid, expected_model="mnist_cnn").code == "model_mismatch"
    assert _verify(run, cid, expected_model_config={"hidden": [32]}).code == "model_mismatch"
    assert _verify(run, cid, expected_train={"lr": "0.1"}).code == "hparams_mismatch"
    assert _verify(run, cid, expected_train={"lr": "0.05", "epochs": 2}).ok
    assert _verify(run, cid, expected_data_root=b"\x00" * 32).code == "data_mismatch"
    assert _verify(run, cid, expected_dataset_size=161).code == "data_mismatch"
    assert _verify(run, cid, expected_k=8).code == "hparams_mismatch"
    assert _verify(run, cid, expected_k=4).ok


def test_bad_arguments_are_rejections(run: HonestRun) -> None:
    assert _verify(run, run.transcript_cid, policy="trust-me").code == "bad_policy"
    assert _verify(run, run.transcript_cid, seed=b"").code == "bad_seed"
    assert _verify(run, run.transcript_cid, seed="text").code == "bad_seed"
    assert _verify(run, "not bytes").code == "malformed_transcript"  # type: ignore[arg-type]
    assert _verify(run, b"\x00" * 32).code == "missing_content"
    assert _verify(run, run.transcript_cid, "replay").code == "no_reveal"
    assert _verify(run, run.transcript_cid, "replay", reveal_cid=b"\x05" * 32).code == "no_reveal"


def _bad_state(run: HonestRun, seg: int, slot: str, data: bytes) -> PolVerdict:
    cks = run.checkpoints()
    t, cid = rebuild(run, cks)  # honest, then swap one object's bytes under its id
    target = t.segments[seg].model_cid if slot == "model" else t.segments[seg].optim_cid
    sink = MemorySink()
    for s in t.segments:
        for c in (s.model_cid, s.optim_cid):
            sink.replace(c, run.sink.get(c))
    sink.replace(t.start_cid, run.sink.get(t.start_cid))
    sink.replace(cid, run.sink.get(cid))
    sink.replace(target, data)
    return verify(
        cid,
        sink,
        seed=SEED,
        policy="attest",
        expected_start_cid=t.start_cid,
        expected_round_id=run.round_id,
        update_cid=t.update_cid,
    )


def test_malformed_checkpoints_are_clear_rejections(run: HonestRun) -> None:
    cnn = to_safetensors(state_dict_of(build_model("mnist_cnn")))
    big = {k: v * 0 + 1e6 for k, v in state_dict_of(build_model("mlp")).items()}
    opt = run.checkpoints()[1][1]
    wrong_shape = {k: v[:1].clone() for k, v in opt.items()}
    foreign = {"velocity." + k.partition(".")[2]: v for k, v in opt.items()}
    cases = [
        ("model", b"not safetensors", "bad_checkpoint"),
        ("model", cnn, "bad_checkpoint"),
        ("model", to_safetensors(big), "bad_checkpoint"),
        ("model", b"\x08" + b"\x00" * 7 + b"{}      ", "bad_checkpoint"),
        ("optim", to_safetensors({}), "bad_checkpoint"),
        ("optim", to_safetensors(wrong_shape), "bad_checkpoint"),
        ("optim", to_safetensors(foreign), "bad_checkpoint"),
        ("optim", b"\xff" * 40, "bad_checkpoint"),
    ]
    for slot, data, code in cases:
        v = _bad_state(run, 2, slot, data)
        assert v.code == code, (slot, v.reason)


def test_a_failing_store_is_a_rejection(run: HonestRun) -> None:
    class Broken(MemorySink):
        def get(self, cid: bytes) -> bytes:
            raise RuntimeError("disk on fire")

    v = verify(
        run.transcript_cid,
        Broken(),
        seed=SEED,
        policy="attest",
        expected_start_cid=b"a",
        expected_round_id=b"b",
        update_cid=None,
    )
    assert not v.ok and v.code == "bad_content" and "disk on fire" in v.reason


def _reveal_variant(run: HonestRun, edit: Callable[[Reveal], Any]) -> PolVerdict:
    t = run.transcript
    chosen = select_segments(t, SEED)
    good = decode_record(run.sink.get(make_reveal(t, DATA, chosen, run.sink)), Reveal, 1 << 28)
    edited = edit(good)
    data = edited if isinstance(edited, bytes) else encode(edited)
    return _verify(run, run.transcript_cid, "replay", reveal_cid=run.sink.put(data))


def _swap_sample(r: Reveal, **changes: Any) -> Reveal:
    s = dataclasses.replace(r.samples[3], **changes)
    return dataclasses.replace(r, samples=r.samples[:3] + (s,) + r.samples[4:])


REVEAL_DEFECTS: list[tuple[str, Callable[[Reveal], Any], str]] = [
    ("honest", lambda r: r, "ok"),
    ("garbage", lambda r: b"\x93\x01\x02", "malformed_reveal"),
    ("another transcript", lambda r: dataclasses.replace(r, transcript_hash=b"\x00" * 32), "reveal_mismatch"),
    ("sample dropped", lambda r: dataclasses.replace(r, samples=r.samples[:3] + r.samples[4:]), "reveal_incomplete"),
    ("pixel changed", lambda r: _swap_sample(r, x=b"\x00\x00\x80\x3f" + r.samples[3].x[4:]), "bad_sample_proof"),
    ("label changed", lambda r: _swap_sample(r, y=(r.samples[3].y + 1) % 10), "bad_sample_proof"),
    ("label out of range", lambda r: _swap_sample(r, y=10), "malformed_reveal"),
    ("proof truncated", lambda r: _swap_sample(r, aunts=r.samples[3].aunts[:-1]), "bad_sample_proof"),
    ("sample shape", lambda r: _plain(r, lambda p: p.__setitem__(4, [1, 8, 9])), "malformed_reveal"),
    ("unsorted", lambda r: _plain(r, lambda p: p[5].reverse()), "malformed_reveal"),
    ("short x", lambda r: _plain(r, lambda p: p[5][0].__setitem__(2, p[5][0][2][:-4])), "malformed_reveal"),
]  # fmt: skip


def _plain(r: Reveal, edit: Callable[[list[Any]], object]) -> bytes:
    # plain layout: [503, version, transcript_hash, segments, sample_shape, samples];
    # sample: [502, position, x, y, aunts]. Edits the constructor would refuse.
    p = to_plain(r)
    edit(p)
    return encode(p)


@pytest.mark.parametrize("name,edit,code", REVEAL_DEFECTS, ids=[d[0] for d in REVEAL_DEFECTS])
def test_malformed_reveal_is_a_clear_rejection(
    run: HonestRun, name: str, edit: Callable[[Reveal], Any], code: str
) -> None:
    v = _reveal_variant(run, edit)
    assert v.code == code, v.reason


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_transcript_bytes_never_crash_and_never_pass(
    run: HonestRun, data: st.DataObject
) -> None:
    good = encode(run.transcript)
    pos = data.draw(st.integers(0, len(good) - 1))
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if kind == "flip":
        bad = good[:pos] + bytes([good[pos] ^ data.draw(st.integers(1, 255))]) + good[pos + 1 :]
    elif kind == "cut":
        bad = good[:pos] + good[pos + data.draw(st.integers(1, 8)) :]
    else:
        bad = good[:pos] + data.draw(st.binary(min_size=1, max_size=4)) + good[pos:]
    v = _verify(run, run.sink.put(bad))
    assert isinstance(v, PolVerdict) and not v.ok and ": " in v.reason


def test_transcript_record_round_trip(run: HonestRun) -> None:
    t = run.transcript
    assert decode_record(encode(t), Transcript) == t
    assert hashlib.sha256(encode(t)).digest() == run.transcript_cid  # MemorySink ids

"""PoL: honest transcripts verify (20 seeds, replay and attest), records, selection, reveals, bounds."""

from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.data import data_commitment, load_digits, load_mnist, sample_hashes
from fl.models import build_model, from_safetensors
from fl.pol import (
    MemorySink,
    MissingContent,
    PolError,
    PolVerdict,
    Recorder,
    SegmentDistance,
    Tolerance,
    Transcript,
    make_reveal,
    record_training,
    select_segments,
    transcript_hash,
    verify,
)
from fl.pol.bounds import adam_linf_bound_q, sgd_l2_bound_q, slack
from fl.pol.checkpoint import norm_q, quantized
from fl.pol.distance import compare, within
from fl.pol.forgeries import HonestRun, honest_run
from fl.pol.reveal import batch_proofs
from fl.pol.schedule import batch_hash
from fl.train import TrainConfig, batch_schedule, train_local
from ledger.codec import decode_record, encode
from ledger.merkle import leaf_hash, merkle_proof

DIGITS = load_digits()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = DIGITS.subset(np.arange(240))

# Rotated over the seeds: plain SGD, SGD with momentum + weight decay + clipping, Adam,
# Adam with clipping + weight decay; k varies so that some last segments are shorter.
CONFIGS = [
    dict(optimizer="sgd", lr=0.1),
    dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, clip_norm=1.0),
    dict(optimizer="adam", lr=0.01),
    dict(optimizer="adam", lr=0.005, weight_decay=1e-3, clip_norm=2.0),
]
KS = [3, 4, 5, 7]


def _round_id(r: int) -> bytes:
    return hashlib.sha256(b"chain-test/task-1/round" + r.to_bytes(4, "big")).digest()


def _verify(run: HonestRun, seed: bytes, policy: str, reveal: bytes | None) -> PolVerdict:
    t = run.transcript
    return verify(
        run.transcript_cid,
        run.sink,
        seed=seed,
        policy=policy,
        expected_start_cid=t.start_cid,
        expected_round_id=run.round_id,
        update_cid=t.update_cid,
        reveal_cid=reveal,
        expected_model="mlp",
        expected_model_config=None,
        expected_train=run.cfg,
        expected_data_root=data_commitment(run.dataset),
        expected_dataset_size=len(run.dataset),
    )


@pytest.mark.parametrize("seed", range(20))
def test_honest_transcript_verifies_under_replay_and_attest(seed: int) -> None:
    _honest_round(seed)


def _honest_round(seed: int) -> None:
    # Prepare: a trainer records its round (its own init, data slice, config and k)
    cfg = TrainConfig(epochs=2, batch_size=16, seed=seed, **CONFIGS[seed % 4])  # type: ignore[arg-type]
    offset = seed * 40 % 1500
    data = DIGITS.subset(np.arange(offset, offset + 200))
    run = honest_run(
        MemorySink(), data, cfg, round_id=_round_id(seed), k=KS[seed % 4], init_seed=seed
    )
    vseed = hashlib.sha256(b"block" + bytes([seed])).digest()
    chosen = select_segments(run.transcript, vseed)
    reveal = make_reveal(run.transcript, data, chosen, run.sink)
    # Execute
    attest = _verify(run, vseed, "attest", None)
    replay = _verify(run, vseed, "replay", reveal)
    # Assert: accepted, the seed's segments replayed, and on one device bit for bit
    assert attest == PolVerdict(True, "ok", [], [])
    assert replay.ok, replay.reason
    assert replay.checked == chosen and len(chosen) == min(4, len(run.transcript.segments))
    assert [d.segment for d in replay.distances] == chosen
    assert all(
        (d.l2_ppm, d.linf_ppm, d.cos_ppm, d.optim_ppm) == (0, 0, 1_000_000, 0)
        for d in replay.distances
    )


def test_honest_mnist_cnn_on_real_data(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir, part="test").subset(np.arange(96))
    cfg = TrainConfig(lr=0.05, momentum=0.9, clip_norm=5.0, epochs=1, batch_size=16, seed=7)
    sink = MemorySink()
    model = build_model("mnist_cnn", seed=3)
    res, cid, t = record_training(
        model, data, cfg, round_id=_round_id(1), k=2, sink=sink, model_id="mnist_cnn", device="cpu"
    )
    assert res.steps == 6 and len(t.segments) == 3
    chosen = select_segments(t, b"block-hash", q=1, random_picks=1)
    reveal = make_reveal(t, data, chosen, sink)
    for policy, rc in (("attest", None), ("replay", reveal)):
        v = verify(
            cid,
            sink,
            seed=b"block-hash",
            policy=policy,
            expected_start_cid=t.start_cid,
            expected_round_id=_round_id(1),
            update_cid=t.update_cid,
            reveal_cid=rc,
            q=1,
            random_picks=1,
        )
        assert v.ok, v.reason
    assert all(d.l2_ppm == 0 for d in v.distances) and v.checked == chosen


def test_off_policy_accepts_without_reading_anything() -> None:
    v = verify(
        b"nothing",
        MemorySink(),
        seed=b"s",
        policy="off",
        expected_start_cid=b"a",
        expected_round_id=b"b",
        update_cid=b"c",
    )
    assert v == PolVerdict(True, "off", [], [])


# ---------------------------------------------------------------- recording


@pytest.fixture(scope="module")
def run() -> HonestRun:
    cfg = TrainConfig(lr=0.05, momentum=0.9, clip_norm=1.0, epochs=2, batch_size=16, seed=11)
    return honest_run(MemorySink(), SMALL, cfg, round_id=_round_id(5), k=4)


def test_transcript_layout_matches_the_run(run: HonestRun) -> None:
    t = run.transcript
    sched = batch_schedule(len(SMALL), 2, 16, 11)
    assert len(sched) == 30 and t.steps == 30 and t.k == 4
    assert [(s.start, s.end) for s in t.segments] == [(i, min(i + 4, 30)) for i in range(0, 30, 4)]
    assert all(s.batch_hash == batch_hash(sched[s.start : s.end]) for s in t.segments)
    assert t.data_root == data_commitment(SMALL) and t.dataset_size == 240
    assert t.update_cid == t.segments[-1].model_cid
    assert t.train == run.cfg.to_plain() and t.model == "mlp" and t.model_config["hidden"] == [64]
    assert run.sink.get(run.transcript_cid) == encode(t)
    assert decode_record(encode(t), Transcript) == t
    # norms are exact integer norms of the quantized weight changes
    prev = quantized(run.start_state)
    for s in t.segments:
        q = quantized(from_safetensors(run.sink.get(s.model_cid)))
        assert s.update_norm_q == norm_q(q - prev) > 0
        prev = q


def test_recorder_through_train_local_equals_record_training(run: HonestRun) -> None:
    sink = MemorySink()
    model = build_model("mlp", seed=0)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rec = Recorder(sink, 4, 30, start)
    train_local(model, SMALL, run.cfg, "cpu", on_step=rec.on_step)
    assert tuple(rec.segments) == run.transcript.segments


def test_record_training_refuses_bad_inputs() -> None:
    cfg = TrainConfig(epochs=1, batch_size=16)
    sink = MemorySink()
    model = build_model("mlp", seed=0)
    other = build_model("mlp", seed=1)
    other_cid = sink.put(encode([1]))

    def rec(train: TrainConfig = cfg, **kw: object) -> None:
        args: dict[str, object] = dict(round_id=_round_id(0), k=4, sink=sink, model_id="mlp")
        args.update(kw)
        record_training(model, SMALL, train, device="cpu", **args)  # type: ignore[arg-type]

    with pytest.raises(PolError, match="round_id"):
        rec(round_id=b"short")
    with pytest.raises(PolError, match="k must"):
        rec(k=0)
    with pytest.raises(PolError, match="deterministic"):
        rec(dataclasses.replace(cfg, deterministic=False))
    with pytest.raises(PolError, match="at least one training step"):
        rec(dataclasses.replace(cfg, epochs=0))
    with pytest.raises(PolError, match="current weights"):
        rec(start_cid=sink.put(encode_state(other)))
    with pytest.raises(PolError, match="not valid weights"):
        rec(start_cid=other_cid)
    with pytest.raises(MissingContent):
        rec(start_cid=b"\x00" * 32)
    with pytest.raises(PolError, match="unknown model"):
        rec(model_id="resnet")


def encode_state(model: torch.nn.Module) -> bytes:
    from fl.models import state_dict_of, to_safetensors

    return to_safetensors(state_dict_of(model))


# ---------------------------------------------------------------- selection and reveals


def test_selection_takes_the_largest_updates_plus_seeded_picks(run: HonestRun) -> None:
    t = run.transcript
    norms = [s.update_norm_q for s in t.segments]
    top2 = sorted(sorted(range(len(norms)), key=lambda i: -norms[i])[:2])
    picks = {tuple(select_segments(t, bytes([s]), q=2, random_picks=2)) for s in range(40)}
    assert all(set(top2) <= set(p) and len(p) == 4 and list(p) == sorted(p) for p in picks)
    assert len(picks) > 5  # the seed moves the random part
    assert select_segments(t, b"x", 2, 2) == select_segments(t, b"x", 2, 2)
    assert select_segments(t, b"x", q=0, random_picks=100) == list(range(len(t.segments)))
    assert select_segments(t, b"x", q=3, random_picks=0) == sorted(
        sorted(range(len(norms)), key=lambda i: (-norms[i], i))[:3]
    )
    # bound to the transcript: the same seed picks differently for another transcript
    other = dataclasses.replace(t, round_id=_round_id(99))
    diffs = sum(
        select_segments(t, bytes([s])) != select_segments(other, bytes([s])) for s in range(20)
    )
    assert diffs > 0
    with pytest.raises(ValueError):
        select_segments(t, b"", 2, 2)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_batch_proofs_equal_rfc6962_proofs(n: int, data: st.DataObject) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    positions = data.draw(st.lists(st.integers(0, n - 1), max_size=8, unique=True))
    got = batch_proofs([leaf_hash(x) for x in leaves], positions)
    assert {p: tuple(a) for p, a in got.items()} == {
        p: merkle_proof(leaves, p).aunts for p in positions
    }


def test_reveal_holds_exactly_the_chosen_segments_samples(run: HonestRun) -> None:
    from fl.pol import Reveal

    t = run.transcript
    chosen = [1, 5]
    cid = make_reveal(t, SMALL, chosen, run.sink, hashes=sample_hashes(SMALL))
    reveal = decode_record(run.sink.get(cid), Reveal, max_size=1 << 28)
    sched = batch_schedule(240, 2, 16, 11)
    want = sorted(
        {int(i) for s in chosen for b in sched[t.segments[s].start : t.segments[s].end] for i in b}
    )
    assert [s.position for s in reveal.samples] == want
    assert reveal.transcript_hash == transcript_hash(t) and reveal.segments == (1, 5)
    s0 = reveal.samples[0]
    assert s0.x == SMALL.x[s0.position].astype("<f4").tobytes() and s0.y == int(
        SMALL.y[s0.position]
    )
    with pytest.raises(PolError):
        make_reveal(t, SMALL.subset(np.arange(100)), chosen, run.sink)


# ---------------------------------------------------------------- bounds and distances


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lr=st.sampled_from([0.5, 0.1, 0.01]),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    wd=st.sampled_from([0.0, 1e-4, 0.1]),
    clip=st.sampled_from([0.1, 1.0, 10.0]),
    steps=st.integers(1, 24),
    warm=st.integers(0, 5),
)
def test_sgd_bound_holds_for_any_gradients(
    seed: int, lr: float, momentum: float, wd: float, clip: float, steps: int, warm: int
) -> None:
    # Adversarial gradients: huge norms (clipped), aligned signs, varying scales
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(50, generator=g))
    cfg = TrainConfig(lr=lr, momentum=momentum, weight_decay=wd, clip_norm=clip)
    opt = torch.optim.SGD([w], lr=lr, momentum=momentum, weight_decay=wd, foreach=False)
    direction = torch.randn(50, generator=g)

    def step() -> None:
        scale = 10 ** float(torch.randint(-3, 4, (1,), generator=g))
        w.grad = direction * scale + 0.1 * torch.randn(50, generator=g)
        torch.nn.utils.clip_grad_norm_([w], clip, foreach=False)
        opt.step()

    for _ in range(warm):
        step()
    start = quantized({"w": w.detach()})
    buf = opt.state.get(w, {}).get("momentum_buffer")
    buf_q = norm_q(quantized({"b": buf})) + 9 if buf is not None else 0
    for _ in range(steps):
        step()
    moved = norm_q(quantized({"w": w.detach()}) - start)
    bound = sgd_l2_bound_q(cfg, norm_q(start) + 9, buf_q, steps)
    assert bound is not None and moved <= slack(bound[0], 50)
    if momentum:
        assert norm_q(quantized({"b": opt.state[w]["momentum_buffer"]})) <= slack(bound[1], 50)
    assert sgd_l2_bound_q(dataclasses.replace(cfg, clip_norm=None), 0, 0, steps) is None


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), warm=st.integers(0, 40), steps=st.integers(1, 40))
def test_adam_bound_holds_for_any_gradients(seed: int, warm: int, steps: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(64, generator=g))
    opt = torch.optim.Adam([w], lr=0.01, weight_decay=0.01, foreach=False)
    signs = torch.randn(64, generator=g).sign()
    scales = [10 ** float(torch.randint(-6, 3, (1,), generator=g)) for _ in range(warm + steps)]
    # large early gradients then tiny ones maximize m/sqrt(v): the adversarial pattern
    scales.sort(reverse=bool(seed % 2))
    for s in scales[:warm]:
        w.grad = signs * s
        opt.step()
    start = quantized({"w": w.detach()})
    for s in scales[warm:]:
        w.grad = signs * s * (1 + 0.01 * torch.rand(64, generator=g))
        opt.step()
    linf = int(np.max(np.abs(quantized({"w": w.detach()}) - start)))
    cfg = TrainConfig(optimizer="adam", lr=0.01)
    assert linf <= slack(adam_linf_bound_q(cfg, warm, steps), 1)


def test_adam_bound_values() -> None:
    cfg = TrainConfig(optimizer="adam", lr=1.0)
    one = adam_linf_bound_q(cfg, 0, 1)
    assert 1 << 24 <= one <= (1 << 24) + 1  # the first Adam step moves a coordinate <= lr
    late = Fraction(adam_linf_bound_q(cfg, 100_000, 10), 10 << 24)
    b_inf = Fraction(1, 10) / ((1 - Fraction(810, 999)) * Fraction(1, 1000)) ** Fraction(1, 2)
    assert abs(late - b_inf) < Fraction(1, 1000)  # converges to (1-b1)/sqrt((1-r)(1-b2)) = 7.27


def test_distance_of_identical_and_far_states() -> None:
    a = {"w": torch.tensor([1.0, 2.0, 3.0])}
    p = {"w": torch.tensor([0.0, 2.0, 3.0])}
    same = compare(3, a, a, p, {}, {}, {}, 7)
    assert same == SegmentDistance(3, 0, 0, 1_000_000, 0, 7)
    assert within(same, Tolerance()) is None
    far = compare(3, a, {"w": torch.tensor([1 + 1 / 64, 2.0, 3.0])}, p, {}, {}, {}, 7)
    assert (far.l2_ppm, far.linf_ppm, far.cos_ppm) == (15_625, 15_625, 1_000_000)
    assert within(far, Tolerance()) == "l2 15625 ppm > 10000 ppm"
    assert within(far, Tolerance(rel_l2_ppm=15_625)) is None
    assert within(far, Tolerance(rel_l2_ppm=15_625, rel_linf_ppm=15_624)) is not None
    opposite = compare(0, a, {"w": torch.tensor([-1.0, 2.0, 3.0])}, p, {}, {}, {}, 0)
    assert opposite.cos_ppm == -1_000_000 and opposite.l2_ppm == 2_000_000
    moved_optim = compare(
        0,
        a,
        a,
        p,
        {"momentum_buffer.w": torch.ones(3)},
        {"momentum_buffer.w": torch.ones(3) * 1.5},
        {},
        0,
    )
    assert moved_optim.optim_ppm == 500_000
    wrong_slots = compare(0, a, a, p, {"momentum_buffer.w": torch.ones(3)}, {}, {}, 0)
    assert wrong_slots.optim_ppm == 10**12


def test_tolerance_rejects_nonsense_values() -> None:
    with pytest.raises(ValueError):
        Tolerance(rel_l2_ppm=-1)
    with pytest.raises(ValueError):
        Tolerance(min_cos_ppm=2_000_000)


def test_memory_sink_round_trip() -> None:
    sink = MemorySink()
    cid = sink.put(b"abc")
    assert cid == hashlib.sha256(b"abc").digest() and sink.get(cid) == b"abc" and cid in sink
    sink.delete(cid)
    with pytest.raises(KeyError):
        sink.get(cid)
    with pytest.raises(MissingContent):
        sink.get("not bytes")  # type: ignore[arg-type]


@pytest.mark.slow
def test_honest_mnist_cnn_larger_run(mnist_dir: Path) -> None:
    # 2,000 real MNIST images, 2 epochs of batch 32 (126 steps), k = 32, default selection
    data = load_mnist(mnist_dir, part="test").subset(np.arange(2000))
    cfg = TrainConfig(lr=0.05, momentum=0.9, clip_norm=5.0, epochs=2, batch_size=32, seed=1)
    sink = MemorySink()
    _, cid, t = record_training(
        build_model("mnist_cnn", seed=0),
        data,
        cfg,
        round_id=_round_id(3),
        k=32,
        sink=sink,
        model_id="mnist_cnn",
        device="cpu",
    )
    for s in range(3):
        seed = bytes([s]) * 32
        reveal = make_reveal(t, data, select_segments(t, seed), sink)
        v = verify(
            cid,
            sink,
            seed=seed,
            policy="replay",
            expected_start_cid=t.start_cid,
            expected_round_id=_round_id(3),
            update_cid=t.update_cid,
            reveal_cid=reveal,
        )
        assert v.ok and len(v.checked) == 4, v.reason


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20, 220))
def test_honest_transcripts_many_seeds(seed: int) -> None:
    _honest_round(seed)


def test_full_fp32_disables_tf32_and_cudnn_and_restores() -> None:
    from fl.pol.precision import full_fp32

    b = torch.backends
    before = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.enabled)
    b.cudnn.allow_tf32 = b.cudnn.enabled = True
    try:
        with full_fp32():
            assert not b.cudnn.allow_tf32 and not b.cuda.matmul.allow_tf32
            assert not b.cudnn.enabled
        assert b.cudnn.allow_tf32 and b.cudnn.enabled
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.enabled = before

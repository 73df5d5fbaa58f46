"""The CUDA path: training learns, deterministic mode replays bit for bit, and a CUDA-recorded
PoL transcript verifies on CUDA and on a CPU validator. Skipped where no CUDA device exists (CI)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fl.data import load_digits, load_mnist, split
from fl.models import build_model, state_dict_of
from fl.pol import MemorySink, make_reveal, record_training, select_segments, verify
from fl.train import TrainConfig, evaluate, run_steps, select_device, train_local

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

DIGITS = load_digits()
ROUND = hashlib.sha256(b"cuda-test/round-1").digest()


def test_auto_picks_cuda_and_training_learns_on_it() -> None:
    # Prepare
    train, test = split(DIGITS, 0.2, seed=0)
    model = build_model("mlp", seed=0)
    # Execute
    res = train_local(model, train, TrainConfig(lr=0.1, momentum=0.9, epochs=3), "auto")
    # Assert: trained on the GPU, weights handed back on the CPU, and it learned
    assert select_device("auto").type == "cuda" and res.device.startswith("cuda")
    assert all(v.device.type == "cpu" for v in res.state.values())
    assert evaluate(model, test, "cuda").accuracy > 0.9


def test_deterministic_training_on_cuda_is_bit_exact() -> None:
    cfg = TrainConfig(lr=0.05, momentum=0.9, clip_norm=5.0, epochs=1, batch_size=16, seed=3)
    data = DIGITS.subset(np.arange(320))
    runs = []
    for _ in range(2):
        model = build_model("mlp", seed=1)
        runs.append(train_local(model, data, cfg, "cuda").state)
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


def test_segment_replay_on_cuda_is_bit_exact() -> None:
    cfg = TrainConfig(lr=0.05, momentum=0.9, epochs=1, batch_size=16, seed=5)
    data = DIGITS.subset(np.arange(256))
    model = build_model("mlp", seed=2)
    start = state_dict_of(model)
    full = train_local(model, data, cfg, "cuda")
    again = build_model("mlp", seed=2)
    again.load_state_dict(start)
    replayed = run_steps(again, None, data, full.schedule, cfg, "cuda")
    assert all(torch.equal(full.state[n], replayed.state[n]) for n in full.state)


@pytest.mark.parametrize("verifier_device", ["cuda", "cpu"])
def test_cuda_recorded_cnn_transcript_verifies_under_replay(
    verifier_device: str, mnist_dir: Path
) -> None:
    # Prepare: a GPU trainer records a round of the MNIST CNN on real data, 32 steps per
    # segment (the daemon's default k), so cuDNN-vs-CPU rounding would have room to grow
    data = split(load_mnist(mnist_dir), 0.2, seed=0)[0].subset(np.arange(2048))
    cfg = TrainConfig(lr=0.05, momentum=0.9, clip_norm=5.0, epochs=1, batch_size=32, seed=7)
    sink = MemorySink()
    model = build_model("mnist_cnn", seed=3)
    _, cid, t = record_training(
        model, data, cfg, round_id=ROUND, k=32, sink=sink, model_id="mnist_cnn", device="cuda"
    )
    chosen = select_segments(t, b"block-hash", q=1, random_picks=1)
    reveal = make_reveal(t, data, chosen, sink)
    # Execute: a validator replays the chosen segments on its own device
    v = verify(
        cid,
        sink,
        seed=b"block-hash",
        policy="replay",
        expected_start_cid=t.start_cid,
        expected_round_id=ROUND,
        update_cid=t.update_cid,
        reveal_cid=reveal,
        q=1,
        random_picks=1,
        device=verifier_device,
    )
    # Assert: accepted; bit-exact on the trainer's device type, far inside the 1 % across
    print(f"CUDA-recorded, replayed on {verifier_device}: {[d.l2_ppm for d in v.distances]} ppm")
    assert v.ok, v.reason
    assert v.checked == chosen and len(t.segments) == 2
    worst = max(d.l2_ppm for d in v.distances)
    assert worst == 0 if verifier_device == "cuda" else worst < 1_000

"""Local training: device choice, learning, schedules, and bit-exact segment replay (for PoL)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fl.data import load_digits, load_mnist, split
from fl.models import build_model, state_dict_of
from fl.train import (
    DeviceError,
    TrainConfig,
    batch_schedule,
    deterministic_mode,
    evaluate,
    export_optimizer_state,
    import_optimizer_state,
    make_optimizer,
    run_steps,
    select_device,
    train_local,
)

DIGITS = load_digits()


# ------------------------------------------------------------------ device


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert select_device("auto").type == expected
    assert select_device(None).type == expected


def test_device_override_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu9")


def test_deterministic_mode_restores_global_flag() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


# ------------------------------------------------------------------ schedule & config


def test_batch_schedule_is_seeded_and_covers_each_epoch() -> None:
    sched = batch_schedule(10, epochs=2, batch_size=4, seed=5)
    assert [len(b) for b in sched] == [4, 4, 2, 4, 4, 2]
    for e in range(2):
        assert sorted(np.concatenate(sched[3 * e : 3 * e + 3]).tolist()) == list(range(10))
    assert all(
        np.array_equal(a, b) for a, b in zip(sched, batch_schedule(10, 2, 4, 5), strict=True)
    )
    assert not np.array_equal(np.concatenate(sched), np.concatenate(batch_schedule(10, 2, 4, 6)))
    assert [len(b) for b in batch_schedule(10, 1, 4, 5, drop_last=True)] == [4, 4]


def test_batch_schedule_matches_documented_hash_order() -> None:
    import hashlib
    import struct

    def key(i: int) -> int:
        h = hashlib.sha256(b"fedledger/batches/v1" + struct.pack(">QIQ", 9, 0, i)).digest()
        return int.from_bytes(h[:8], "big")

    assert np.concatenate(batch_schedule(7, 1, 3, 9)).tolist() == sorted(range(7), key=key)


def test_train_config_plain_roundtrip_and_validation() -> None:
    cfg = TrainConfig(optimizer="adam", lr=0.001, clip_norm=1.5, epochs=3)
    plain = cfg.to_plain()
    assert plain["lr"] == "0.001" and plain["clip_norm"] == "1.5"
    assert TrainConfig.from_plain(plain) == cfg
    for bad in ({"optimizer": "rmsprop"}, {"lr": 0.0}, {"lr": float("nan")}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ training


def test_training_learns_digits_and_reports_progress() -> None:
    train, test = split(DIGITS, 0.2, seed=0)
    model = build_model("mlp", seed=0)
    before = evaluate(model, test, "cpu")
    calls: list[tuple[int, int]] = []
    res = train_local(model, train, TrainConfig(lr=0.1, momentum=0.9, epochs=3), "cpu",
                      progress=lambda done, total, loss: calls.append((done, total)))  # fmt: skip
    after = evaluate(model, test, "cpu")
    assert before.accuracy < 0.3 and after.accuracy > 0.9
    # about 50 reports (every 135 // 50 = 2 steps) and one after the last step
    assert res.steps == 3 * 45 and calls[-1] == (135, 135)
    assert [done for done, _ in calls] == [*range(2, 135, 2), 135]
    assert res.samples == 3 * len(train) and res.device == "cpu"


def _record(
    model_id: str, data: object, cfg: TrainConfig, every: int
) -> tuple[dict[int, tuple], list]:
    model = build_model(model_id, seed=3)
    checkpoints: dict[int, tuple] = {0: (state_dict_of(model), {})}

    def on_step(step: int, idx: np.ndarray, m: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        if (step + 1) % every == 0:
            checkpoints[step + 1] = (state_dict_of(m), export_optimizer_state(m, opt))

    res = train_local(model, data, cfg, "cpu", on_step=on_step)  # type: ignore[arg-type]
    return checkpoints, res.schedule


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            epochs=2,
            batch_size=16,
            seed=1,
        ),
        TrainConfig(optimizer="adam", lr=0.01, epochs=2, batch_size=16, clip_norm=0.5, seed=2),
        TrainConfig(optimizer="sgd", lr=0.05, epochs=3, batch_size=32, seed=3),
    ],
    ids=["sgd-momentum", "adam-clip", "sgd-plain"],
)
def test_replaying_a_segment_from_a_checkpoint_is_bit_exact(cfg: TrainConfig) -> None:
    data = DIGITS.subset(np.arange(200))
    checkpoints, schedule = _record("mlp", data, cfg, every=5)
    for start in (0, 5, 10):
        state, opt_state = checkpoints[start]
        model = build_model("mlp", seed=99)  # weights come from the checkpoint, not the seed
        model.load_state_dict(state)
        out = run_steps(model, opt_state, data, schedule[start : start + 5], cfg, "cpu")
        expected_state, expected_opt = checkpoints[start + 5]
        assert all(torch.equal(out.state[k], expected_state[k]) for k in expected_state)
        assert set(out.optimizer_state) == set(expected_opt)
        assert all(torch.equal(out.optimizer_state[k], expected_opt[k]) for k in expected_opt)


def test_replay_is_bit_exact_for_the_mnist_cnn() -> None:
    data = DIGITS.subset(np.arange(64))
    data = dataclasses.replace(
        data, x=np.ascontiguousarray(np.pad(data.x, ((0, 0), (0, 0), (10, 10), (10, 10))))
    )
    cfg = TrainConfig(lr=0.05, momentum=0.9, epochs=1, batch_size=8, seed=4)
    checkpoints, schedule = _record("mnist_cnn", data, cfg, every=4)
    model = build_model("mnist_cnn", seed=0)
    model.load_state_dict(checkpoints[4][0])
    out = run_steps(model, checkpoints[4][1], data, schedule[4:8], cfg, "cpu")
    assert all(torch.equal(out.state[k], checkpoints[8][0][k]) for k in out.state)


def test_a_different_batch_breaks_the_replay() -> None:
    data = DIGITS.subset(np.arange(100))
    cfg = TrainConfig(lr=0.1, epochs=1, batch_size=10, seed=1)
    checkpoints, schedule = _record("mlp", data, cfg, every=5)
    model = build_model("mlp")
    model.load_state_dict(checkpoints[0][0])
    forged = [schedule[0][::-1].copy()[:5], *schedule[1:5]]  # a different first batch
    out = run_steps(model, None, data, forged, cfg, "cpu")
    assert not all(torch.equal(out.state[k], checkpoints[5][0][k]) for k in out.state)


def test_optimizer_state_import_rejects_foreign_entries() -> None:
    model = build_model("mlp")
    opt = make_optimizer(model, TrainConfig(momentum=0.9))
    with pytest.raises(ValueError, match="does not belong"):
        import_optimizer_state(model, opt, {"exp_avg.net.1.weight": torch.zeros(64, 64)}, "sgd")
    with pytest.raises(ValueError, match="shape"):
        import_optimizer_state(model, opt, {"momentum_buffer.net.1.weight": torch.zeros(3)}, "sgd")


def test_bad_batch_indices_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside the local data set"):
        run_steps(
            build_model("mlp"),
            None,
            DIGITS.subset(np.arange(10)),
            [np.array([0, 10])],
            TrainConfig(),
            "cpu",
        )


def test_real_mnist_trains_a_cnn(mnist_dir: object) -> None:
    train, test = split(load_mnist(mnist_dir), 0.2, seed=0)  # type: ignore[arg-type]
    model = build_model("mnist_cnn")
    train_local(
        model, train.subset(np.arange(2000)), TrainConfig(lr=0.05, momentum=0.9, epochs=1), "cpu"
    )
    assert evaluate(model, test, "cpu").accuracy > 0.8

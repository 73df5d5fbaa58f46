"""Privacy modes in the FL harness and the CLI: HE FedAvg equals plaintext FedAvg; DP reports epsilon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.fl_cmd import app
from fl.privacy import PrivacyError, epsilon
from fl.privacy.pipeline import PrivacyConfig, PrivacyPipeline
from fl.simulate import SimConfig, run_simulation
from fl.train import TrainConfig

SMALL: dict[str, Any] = {
    "dataset": "digits",
    "clients": 20,
    "per_round": 5,
    "partition": "iid",
    "device": "cpu",
    "train": TrainConfig(lr=0.1, momentum=0.9, epochs=1, batch_size=16),
}


def test_he_fedavg_is_bit_identical_to_plaintext_fedavg() -> None:
    plain = run_simulation(SimConfig(rounds=2, **SMALL))
    enc = run_simulation(SimConfig(rounds=2, privacy=PrivacyConfig(mode="he"), **SMALL))
    assert [m.accuracy for m in enc.rounds] == [m.accuracy for m in plain.rounds]
    assert [m.loss for m in enc.rounds] == [m.loss for m in plain.rounds]
    for m in enc.rounds:
        assert m.privacy["he_equals_plaintext"] is True and m.privacy["clamped"] == 0
        assert m.privacy["ciphertext_bytes"] > 0 and m.privacy["max_residual"] < 0.1
        assert m.epsilon is None


def test_dp_reports_the_accountants_epsilon_each_round() -> None:
    cfg = SimConfig(
        rounds=2, privacy=PrivacyConfig(mode="dp", noise_multiplier=1.0, clip=0.5), **SMALL
    )
    a = run_simulation(cfg)
    q = SMALL["per_round"] / SMALL["clients"]
    assert [m.epsilon for m in a.rounds] == pytest.approx(
        [epsilon(1.0, q, r, 1e-5) for r in (1, 2)], rel=1e-12
    )
    assert all(m.privacy["dp_seconds"] > 0 for m in a.rounds)


def test_dp_with_he_adds_noise_before_encryption() -> None:
    cfg = SimConfig(
        rounds=2,
        privacy=PrivacyConfig(mode="dp+he", noise_multiplier=0.8, clip=1.0),
        **SMALL,
    )
    res = run_simulation(cfg)
    for m in res.rounds:
        assert m.epsilon is not None and m.epsilon > 0
        # The decrypted sum of the noisy, packed submissions is their exact plaintext sum.
        assert m.privacy["he_equals_plaintext"] is True and m.privacy["clamped"] == 0


def test_dp_with_he_packs_several_values_per_slot() -> None:
    pipe = PrivacyPipeline(
        PrivacyConfig(mode="dp+he", noise_multiplier=1.0, clip=1.0),
        clients=100, per_round=10, rounds=50, seed=0, max_round_weight=1000, num_params=46_730,
    )  # fmt: skip
    assert pipe.layout is not None and pipe.dp is not None
    assert pipe.layout.lanes == 2 and pipe.layout.max_weight == 16  # unit weights, 10 summands
    assert pipe.layout.max_abs >= 1.0 + 8 * pipe.dp.client_noise_std  # clip + 8 noise stds
    # finer than a quarter of the noise std and of a typical clipped coordinate
    assert pipe.layout.resolution <= min(pipe.dp.client_noise_std, 1.0 / 46_730**0.5) / 4
    tiny = PrivacyPipeline(
        PrivacyConfig(mode="dp+he", noise_multiplier=1.0, clip=1.0),
        clients=100, per_round=10, rounds=50, seed=0, max_round_weight=1000, num_params=16,
    )  # fmt: skip
    assert tiny.layout is not None and tiny.layout.lanes == 3  # small models pack three


def test_privacy_config_validation() -> None:
    with pytest.raises(PrivacyError, match="unknown privacy mode"):
        PrivacyConfig(mode="tor")
    with pytest.raises(PrivacyError, match="exactly one"):
        PrivacyConfig(mode="dp")
    with pytest.raises(PrivacyError, match="exactly one"):
        PrivacyConfig(mode="dp", epsilon=1.0, noise_multiplier=1.0)
    with pytest.raises(PrivacyError, match="HE parameters"):
        PrivacyConfig(mode="he", he_params="n2")
    with pytest.raises(ValueError, match="fedavg"):
        SimConfig(rule="krum", privacy=PrivacyConfig(mode="he"))


runner = CliRunner()
ARGS = ["simulate", "--clients", "10", "--per-round", "4", "--rounds", "2", "--epochs", "1"]


def test_cli_privacy_options() -> None:
    res = runner.invoke(
        app, [*ARGS, "--device", "cpu", "--privacy", "dp+he", "--noise-multiplier", "1.2", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["config"]["privacy"]["mode"] == "dp+he"
    assert out["rounds"][0]["epsilon"] < out["rounds"][1]["epsilon"] < 100
    assert out["rounds"][1]["privacy"]["he_equals_plaintext"] is True
    res = runner.invoke(app, [*ARGS, "--privacy", "dp"])
    assert res.exit_code == 2 and "--epsilon or --noise-multiplier" in res.output
    res = runner.invoke(app, [*ARGS, "--privacy", "he", "--rule", "median"])
    assert res.exit_code == 2 and "fedavg" in res.output


def test_short_mnist_he_fedavg_matches_plaintext(mnist_dir: Path) -> None:
    """Acceptance 4 (CI version): encrypted and plaintext FedAvg on real MNIST, same accuracy."""
    base: dict[str, Any] = {
        "dataset": "mnist",
        "data_dir": str(mnist_dir),
        "clients": 100,
        "per_round": 5,
        "rounds": 2,
        "device": "cpu",
        "train": TrainConfig(lr=0.1, momentum=0.9, epochs=1, batch_size=32),
    }
    plain = run_simulation(SimConfig(**base))
    enc = run_simulation(SimConfig(privacy=PrivacyConfig(mode="he"), **base))
    assert [m.accuracy for m in enc.rounds] == [m.accuracy for m in plain.rounds]
    assert all(m.privacy["he_equals_plaintext"] for m in enc.rounds)
    assert enc.final_accuracy > enc.initial_accuracy  # it trains (2 short rounds: ~12 %)
    assert np.isfinite(enc.rounds[-1].loss)

"""The in-process FL harness: metrics bookkeeping, attacks, and the short MNIST acceptance run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl.simulate import RoundUpdates, SimConfig, run_simulation
from fl.train import TrainConfig

SMALL = {
    "dataset": "digits",
    "clients": 20,
    "per_round": 5,
    "partition": "iid",
    "device": "cpu",
    "train": TrainConfig(lr=0.1, momentum=0.9, epochs=2, batch_size=16),
}


def test_fedavg_on_digits_learns_and_reports_rounds() -> None:
    res = run_simulation(SimConfig(rounds=6, **SMALL))  # type: ignore[arg-type]
    assert [m.round for m in res.rounds] == list(range(1, 7))
    assert res.initial_accuracy < 0.3 < 0.75 < res.final_accuracy
    assert all(m.submitted == 5 and m.accepted == 5 and m.poisoned == 0 for m in res.rounds)
    assert res.poisoned_rejected_fraction is None and res.honest_rejected_fraction == 0.0
    plain = res.to_plain()
    assert plain["config"]["train"]["lr"] == "0.1" and len(plain["rounds"]) == 6


def test_centralized_baseline() -> None:
    res = run_simulation(SimConfig(rounds=3, centralized=True, **SMALL))  # type: ignore[arg-type]
    assert all(m.submitted == 1 for m in res.rounds) and res.final_accuracy > 0.8


def test_same_config_same_result() -> None:
    cfg = SimConfig(rounds=2, rule="robust", attack="sign_flip", malicious=0.4, **SMALL)  # type: ignore[arg-type]
    a, b = run_simulation(cfg), run_simulation(cfg)
    assert [m.accuracy for m in a.rounds] == [m.accuracy for m in b.rounds]


@pytest.mark.parametrize(
    ("attack", "rule"),
    [
        ("sign_flip", "robust"),
        ("free_rider", "robust"),
        ("free_rider_copy", "robust"),
        ("scaling", "krum"),
    ],
)
def test_attacks_are_counted_and_rejected(attack: str, rule: str) -> None:
    res = run_simulation(SimConfig(rounds=4, rule=rule, attack=attack, malicious=0.3, **SMALL))  # type: ignore[arg-type]
    poisoned = sum(m.poisoned for m in res.rounds)
    assert poisoned > 0
    assert res.poisoned_rejected_fraction == 1.0
    assert all(m.honest + m.poisoned == m.submitted for m in res.rounds)


def test_on_updates_sees_each_rounds_updates_and_verdicts() -> None:
    # Prepare
    seen: list[RoundUpdates] = []
    cfg = SimConfig(rounds=2, rule="robust", attack="sign_flip", malicious=0.4, **SMALL)  # type: ignore[arg-type]

    # Execute
    res = run_simulation(cfg, on_updates=seen.append)

    # Assert: one call per round, aligned with the round's metrics
    assert [r.round for r in seen] == [1, 2]
    for r, m in zip(seen, res.rounds, strict=True):
        assert len(r.updates) == len(r.malicious) == len(r.result.verdicts) == m.submitted
        assert sum(r.malicious) == m.poisoned
        assert sum(not v.accepted and b for v, b in zip(r.result.verdicts, r.malicious,
                                                        strict=True)) == m.poisoned_rejected
    assert not (seen[0].global_q == seen[1].global_q).all()  # each round's own start


def test_config_validation() -> None:
    for bad in ({"attack": "nope"}, {"malicious": 1.0}, {"per_round": 0}, {"partition": "x"},
                {"validation": -1}, {"validation": 10}, {"validation": 10, "rule": "median"}):
        with pytest.raises(ValueError):
            SimConfig(**bad)  # type: ignore[arg-type]


def test_short_mnist_fedavg_run(mnist_dir: Path) -> None:
    """CI version of acceptance 1 (the full 50-round run is benchmarks/fl_mnist.py)."""
    cfg = SimConfig(
        dataset="mnist", data_dir=str(mnist_dir), rounds=12, device="cpu", eval_every=12
    )
    res = run_simulation(cfg)
    # The full run passes 0.93 by round 13 and 0.955 at round 50; round 12 is at 0.89 on CPU.
    assert res.final_accuracy >= 0.80


@pytest.mark.parametrize(("attack", "malicious"), [("sign_flip", 0.3), ("scaling", 0.2)])
def test_short_mnist_default_rule_rejects_sign_flip_and_scaling(
        mnist_dir: Path, attack: str, malicious: float) -> None:
    """CI version of acceptance 2 for the attacks the shape-aware checks are for (ADR 0403).
    Before them, 10 rounds rejected 18.5 % of these sign flips and 19 % of these scaled
    updates; the full campaign is benchmarks/fl_robustness.py."""
    cfg = SimConfig(dataset="mnist", data_dir=str(mnist_dir), rounds=10, device="cpu",
                    eval_every=10, rule="robust", attack=attack, malicious=malicious)
    res = run_simulation(cfg)
    assert sum(m.poisoned for m in res.rounds) >= 15
    assert res.poisoned_rejected_fraction is not None and res.poisoned_rejected_fraction >= 0.95
    assert res.honest_rejected_fraction is not None and res.honest_rejected_fraction <= 0.05


def test_short_mnist_validation_set_rejects_label_flips_once_the_model_learns(
        mnist_dir: Path) -> None:
    """CI version of the validation-set row of acceptance 2 (ADR 0404): without the set the
    robust screen rejects 43 % of label flips at 30 % malicious over 50 rounds; with it
    every flip is rejected once the model has learnt (round 14 on in the 50-round run, where
    the check itself rejected no honest update)."""
    cfg = SimConfig(dataset="mnist", data_dir=str(mnist_dir), rounds=18, device="cpu",
                    eval_every=18, rule="robust", attack="label_flip", malicious=0.3,
                    validation=256)
    res = run_simulation(cfg)
    late = res.rounds[13:]
    assert sum(m.poisoned for m in late) >= 5
    assert all(m.poisoned_rejected == m.poisoned for m in late), [
        (m.round, m.poisoned, m.poisoned_rejected) for m in late]
    assert sum(m.reasons.get("raises_validation_loss", 0) for m in res.rounds) >= 1
    assert res.honest_rejected_fraction is not None and res.honest_rejected_fraction <= 0.05
    assert res.final_accuracy >= 0.85

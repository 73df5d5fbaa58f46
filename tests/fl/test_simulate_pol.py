"""Proof of learning in the simulator (fl/simulate_pol.py) and the ``absent`` baseline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fl.simulate import RoundUpdates, SimConfig, SimResult, run_simulation
from fl.train import TrainConfig

SMALL: dict[str, Any] = {
    "dataset": "digits",
    "clients": 20,
    "per_round": 5,
    "partition": "iid",
    "device": "cpu",
    "rounds": 3,
    "train": TrainConfig(lr=0.1, momentum=0.9, epochs=2, batch_size=16),
}
CLIPPED = dataclasses.replace(SMALL["train"], clip_norm=1.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reasons(res: SimResult) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in res.rounds:
        for k, v in m.reasons.items():
            out[k] = out.get(k, 0) + v
    return out


def test_replay_rejects_no_honest_trainer_and_trains_the_same_model() -> None:
    # Prepare
    off = SimConfig(rule="robust", **SMALL)

    # Execute
    plain = run_simulation(off)
    pol = run_simulation(dataclasses.replace(off, pol="replay"))

    # Assert: recording changes no weight, and every honest transcript replays
    assert [m.accuracy for m in pol.rounds] == [m.accuracy for m in plain.rounds]
    assert pol.honest_rejected_fraction == 0.0
    assert all(m.pol_seconds > 0 for m in pol.rounds)
    assert all(m.pol_seconds == 0 for m in plain.rounds)


# FedAvg rejects nothing, so every rejection here is the PoL stage's. None: PoL accepts.
# The iid digits clients train 10 steps: 2 segments at the default k = 8, one at k = 16.
POL_CASES = [
    ("scaling", "replay", {}, "pol_replay_mismatch"),
    ("alie", "replay", {}, "pol_replay_mismatch"),
    ("free_rider_copy", "replay", {}, "pol_replay_mismatch"),
    ("free_rider", "replay", {}, "pol_replay_mismatch"),
    ("free_rider", "attest", {"pol_k": 16}, "pol_no_progress"),  # the only segment is empty
    ("scaling", "attest", {"train": CLIPPED}, "pol_step_bound"),
    # SGD without clipping has no data-free step bound (ADR 0502): attest cannot see these
    ("scaling", "attest", {}, None),
    ("free_rider", "attest", {}, None),  # the last segment steps back to the start
    # the flipper trained for real on the labels it committed to: PoL has nothing to reject
    ("label_flip", "replay", {}, None),
]


@pytest.mark.parametrize(("attack", "policy", "extra", "reason"), POL_CASES)
def test_pol_stage_rejects_forged_transcripts(
    attack: str, policy: str, extra: dict[str, Any], reason: str | None
) -> None:
    cfg = SimConfig(attack=attack, malicious=0.4, pol=policy, **{**SMALL, **extra})
    res = run_simulation(cfg)
    assert sum(m.poisoned for m in res.rounds) >= 3
    assert res.honest_rejected_fraction == 0.0
    if reason is None:
        assert res.poisoned_rejected_fraction == 0.0 and _reasons(res) == {}
    else:
        assert res.poisoned_rejected_fraction == 1.0
        assert set(_reasons(res)) == {reason}


def test_screen_sees_only_the_pol_valid_updates() -> None:
    # Prepare
    seen: list[RoundUpdates] = []
    cfg = SimConfig(rule="robust", attack="scaling", malicious=0.4, pol="replay", **SMALL)

    # Execute
    res = run_simulation(cfg, on_updates=seen.append)

    # Assert: the PoL rejections never reach the screen; the metrics count them
    for r, m in zip(seen, res.rounds, strict=True):
        assert not any(r.malicious)
        assert len(r.updates) == len(r.result.verdicts) == m.honest
        assert m.poisoned_rejected == m.poisoned == m.reasons.get("pol_replay_mismatch", 0)


def test_absent_attackers_submit_nothing() -> None:
    # Prepare
    attacked = SimConfig(rule="robust", attack="sign_flip", malicious=0.4, **SMALL)

    # Execute
    a = run_simulation(attacked)
    b = run_simulation(dataclasses.replace(attacked, attack="absent"))

    # Assert: the same clients are missing that attacked, and nothing counts as poisoned
    assert [m.submitted for m in b.rounds] == [m.honest for m in a.rounds]
    assert all(m.poisoned == 0 for m in b.rounds) and b.poisoned_rejected_fraction is None
    assert sum(m.poisoned for m in a.rounds) > 0


def test_absent_round_without_updates_keeps_the_model() -> None:
    cfg = SimConfig(**{**SMALL, "clients": 5, "rounds": 2}, attack="absent", malicious=0.99)
    res = run_simulation(cfg)
    assert all(m.submitted == 0 for m in res.rounds)
    assert res.final_accuracy == res.initial_accuracy


def test_pol_config_validation() -> None:
    for bad in ({"pol": "full"}, {"pol": "replay", "centralized": True}, {"pol_k": 0}):
        with pytest.raises(ValueError):
            SimConfig(**bad)  # type: ignore[arg-type]
    from fl.privacy.pipeline import PrivacyConfig

    with pytest.raises(ValueError, match="PoL"):
        SimConfig(pol="attest", privacy=PrivacyConfig(mode="dp", noise_multiplier=1.0))


def test_short_mnist_replay_rejects_every_scaled_update(mnist_dir: Path) -> None:
    """CI version of the robust+val+pol column (docs/BENCHMARKS.md): the screen alone lets
    1-4 % of scaled updates through over 50 rounds; replay rejects them before it."""
    cfg = SimConfig(dataset="mnist", data_dir=str(mnist_dir), rounds=4, device="cpu",
                    eval_every=4, rule="robust", attack="scaling", malicious=0.3,
                    validation=256, pol="replay")  # fmt: skip
    res = run_simulation(cfg)
    assert sum(m.poisoned for m in res.rounds) >= 8
    assert res.poisoned_rejected_fraction == 1.0
    assert _reasons(res)["pol_replay_mismatch"] == sum(m.poisoned for m in res.rounds)

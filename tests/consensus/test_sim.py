"""Acceptance 3: the pure core under a seeded fake network with drops, delays, duplicates,
GST and equivocating validators: safety always, liveness after GST, on 2,000 seeds (CI) and
20,000 more with ``-m slow``. A failing seed prints ``python -m tests.consensus.sim --seed N``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import consensus.core.votekeeper as votekeeper
from tests.consensus.sim import make_config, reproduce_command, run_seed, simulate

CI_SEEDS = 2_000
SLOW_SEEDS = 20_000
CHUNK = 50


def _check(seeds: range) -> None:
    failures = [r for r in map(run_seed, seeds) if not r.ok]
    if failures:
        lines = [f"{r.summary()}\n    reproduce: {reproduce_command(r.seed)}" for r in failures]
        pytest.fail(f"{len(failures)} failing seed(s):\n" + "\n".join(lines), pytrace=False)


@pytest.mark.parametrize(
    "first", range(0, CI_SEEDS, CHUNK), ids=lambda f: f"seeds{f}-{f + CHUNK - 1}"
)
def test_safety_and_liveness(first: int) -> None:
    _check(range(first, first + CHUNK))


@pytest.mark.slow
@pytest.mark.parametrize(
    "first",
    range(CI_SEEDS, CI_SEEDS + SLOW_SEEDS, 500),
    ids=lambda f: f"seeds{f}-{f + 499}",
)
def test_safety_and_liveness_many_seeds(first: int) -> None:
    _check(range(first, first + 500))


def test_one_seed(request: pytest.FixtureRequest) -> None:
    """``pytest tests/consensus/test_sim.py --sim-seed N -k one_seed`` reruns one seed."""
    seed = request.config.getoption("--sim-seed", default=None)
    if seed is None:
        pytest.skip("pass --sim-seed N to run one seed")
    print(make_config(seed))
    _check(range(seed, seed + 1))


def test_runs_are_deterministic() -> None:
    a, b = run_seed(12345), run_seed(12345)
    assert a.ok and b.ok
    assert (a.steps, a.sim_time_ms, a.decided, a.evidence) == (
        b.steps,
        b.sim_time_ms,
        b.decided,
        b.evidence,
    )


def test_scenarios_cover_the_adversary() -> None:
    configs = [make_config(seed) for seed in range(CI_SEEDS)]
    assert {len(c.powers) for c in configs} == {4, 5, 6, 7}
    assert sum(bool(c.byzantine) for c in configs) > CI_SEEDS // 2
    assert sum(len(c.byzantine) >= 2 for c in configs) > CI_SEEDS // 5
    assert sum(c.gst_ms > 0 for c in configs) > CI_SEEDS // 2
    assert {c.byzantine_mode for c in configs} == {"split", "amplify"}
    for c in configs:
        assert 3 * sum(c.powers[i] for i in c.byzantine) < sum(c.powers)


def test_checker_catches_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    # a core that takes more than 1/2 (not 2/3) of the power as a quorum must fork somewhere
    monkeypatch.setattr(votekeeper, "is_quorum", lambda power, total: 2 * power > total)
    results = map(run_seed, range(200))
    assert any(r.reason.startswith("safety") for r in results)  # stops at the first fork


def test_checker_catches_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    # counting only each validator's first vote loses polkas that byzantine twins hide
    monkeypatch.setattr(votekeeper, "MAX_VOTES_PER_SLOT", 1)
    results = map(run_seed, range(100))
    assert any(r.reason.startswith("liveness") for r in results)  # stops at the first stall


def test_liveness_bound_is_enforced() -> None:
    # three heights cannot be decided within 5 ms of GST: reported as a liveness failure
    cfg = replace(make_config(7), liveness_bound_ms=5)
    result = simulate(cfg)
    assert not result.ok and result.reason.startswith("liveness"), result.reason
    assert run_seed(7).ok

"""DP-FedAvg: clipping bounds, the noise scale, seeded replay, and the RDP accountant's epsilon."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fl.aggregate.exact import sq_norm
from fl.aggregate.fixed import SCALE_BITS
from fl.privacy import (
    DpError,
    DpParams,
    PrivacyAccountant,
    clip_to_grid,
    epsilon,
    gaussian_noise,
    max_rounds_for,
    noise_multiplier_for,
    noise_seed,
    privatize,
)
from ledger.codec import decode_record, encode

finite = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, width=32)


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip": "0"}, "clip must be positive"),
        ({"clip": "-1"}, "clip must be positive"),
        ({"clip": "one"}, "not a decimal"),
        ({"clip": "NaN"}, "finite"),
        ({"noise_multiplier": "-0.5"}, "noise_multiplier"),
        ({"delta": "1"}, "delta"),
        ({"delta": "0"}, "delta"),
        ({"clients_per_round": 0}, "clients_per_round"),
        ({"clients_per_round": 101}, "clients_per_round"),
    ],
)
def test_bad_params_are_rejected(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "clip": "1.0",
        "noise_multiplier": "1.1",
        "delta": "1e-5",
        "clients": 100,
        "clients_per_round": 10,
    }
    with pytest.raises(DpError, match=message):
        DpParams(**{**base, **kwargs})  # type: ignore[arg-type]


def test_params_are_canonical_records_with_derived_scales() -> None:
    p = DpParams.of(0.5, 1.2, 1e-5, 100, 16)
    assert (p.clip, p.noise_multiplier, p.delta) == ("0.5", "1.2", "1e-05")
    assert decode_record(encode(p), DpParams) == p
    assert p.sampling_rate == 0.16
    assert p.client_noise_std == pytest.approx(1.2 * 0.5 / 4)  # z S / sqrt(m)
    assert p.local_noise_multiplier == pytest.approx(0.3)


# ---------------------------------------------------------------- clipping


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float32, st.integers(1, 300), elements=finite),
    clip=st.sampled_from(["0.001", "0.05", "1", "3.5"]),
    frac_bits=st.sampled_from([24, 16, 10]),
)
def test_clipping_bounds_every_update_exactly_on_the_grid(
    x: np.ndarray, clip: str, frac_bits: int
) -> None:
    res = clip_to_grid(x, clip, frac_bits)
    bound = Fraction(clip) * (1 << frac_bits)
    assert sq_norm(res.values) <= bound * bound  # exact integers, after rounding to the grid
    norm = float(np.linalg.norm(x.astype(np.float64)))
    if norm <= float(clip) * 0.999 and frac_bits == 24:
        # An update inside the ball is only quantized: within half a grid step per coordinate.
        assert np.abs(res.values / 2.0**24 - x.astype(np.float64)).max() <= 2.0**-25 + 1e-12
        assert res.factor == 1.0


def test_clipping_keeps_the_direction_and_reaches_the_bound() -> None:
    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
    res = clip_to_grid(x, "1.5")
    got = res.values / 2.0**24
    assert math.sqrt(sq_norm(res.values)) / 2**24 == pytest.approx(1.5, rel=1e-6)
    # measured in float64: numpy 2.4's float32 norm of x is off by 3e-8 relative, which
    # alone put the cosine under 1 - 1e-9 (the clip itself is at 1 - 7e-13)
    x64 = x.astype(np.float64)
    cos = float(got @ x64) / (np.linalg.norm(got) * np.linalg.norm(x64))
    assert cos > 1 - 1e-9 and res.norm == pytest.approx(float(np.linalg.norm(x64)), rel=1e-6)


def test_coarse_grid_rounding_is_pulled_back_inside_the_bound() -> None:
    # 40,000 coordinates at grid 1/64: rounding alone would lengthen the vector by ~1.4 %.
    x = np.random.default_rng(1).normal(size=40_000) * (1.0 / 200)
    res = clip_to_grid(x, "1", frac_bits=6)
    assert 0 < res.factor < 1 and sq_norm(res.values) <= (1 << 6) ** 2


def test_clip_rejects_non_finite_and_bad_shapes() -> None:
    with pytest.raises(DpError, match="NaN"):
        clip_to_grid(np.array([1.0, np.nan]), "1")
    with pytest.raises(DpError, match="1-D"):
        clip_to_grid(np.zeros((2, 2)), "1")


# ---------------------------------------------------------------- noise


def test_noise_has_the_configured_scale() -> None:
    # Fixed seed: deterministic, so this statistical test cannot flake.
    n, std = 200_000, 0.37
    z = gaussian_noise(n, std, noise_seed("scale-test"))
    se_std = std / math.sqrt(2 * n)  # standard error of the sample std
    assert abs(z.std() - std) < 4 * se_std
    assert abs(z.mean()) < 4 * std / math.sqrt(n)
    # Tails of a normal: P(|z| > 2 std) = 4.55 %, P(|z| > 3 std) = 0.27 %.
    assert abs(np.mean(np.abs(z) > 2 * std) - 0.0455) < 0.002
    assert abs(np.mean(np.abs(z) > 3 * std) - 0.0027) < 0.0006
    assert np.isfinite(z).all()


def test_seeded_noise_replays_and_fresh_noise_differs() -> None:
    s = noise_seed(7, 3, 12)
    assert np.array_equal(gaussian_noise(1001, 1.0, s), gaussian_noise(1001, 1.0, s))
    assert not np.array_equal(
        gaussian_noise(1001, 1.0, s), gaussian_noise(1001, 1.0, noise_seed(7, 3, 13))
    )
    assert not np.array_equal(gaussian_noise(64, 1.0), gaussian_noise(64, 1.0))
    with pytest.raises(DpError, match="128 bits"):
        gaussian_noise(4, 1.0, b"short")


def test_privatize_clips_then_adds_the_client_share() -> None:
    p = DpParams.of(1.0, 2.0, 1e-5, 100, 16)  # share std = 2 * 1 / 4 = 0.5
    x = np.full(50_000, 0.01, dtype=np.float32)  # norm 2.236 > 1: clipped
    out = privatize(x, p, seed=noise_seed("p"))
    assert out.clipped and out.norm == pytest.approx(math.sqrt(50_000) * 0.01, rel=1e-6)
    clipped = clip_to_grid(x, p.clip).values
    noise = (out.values - clipped) / 2.0**24
    assert abs(noise.std() - 0.5) < 4 * 0.5 / math.sqrt(2 * x.size)
    again = privatize(x, p, seed=noise_seed("p"))
    assert np.array_equal(out.values, again.values)


def test_privatize_on_a_coarse_grid_gives_multiples_of_the_grid() -> None:
    p = DpParams.of(1.0, 1.0, 1e-5, 100, 10)
    out = privatize(np.ones(1000, dtype=np.float32), p, seed=noise_seed(1), frac_bits=9)
    assert out.values.dtype == np.int64
    assert not np.any(out.values % (1 << (SCALE_BITS - 9)))


def test_sum_of_shares_has_the_aggregate_scale() -> None:
    # m clients with std z S / sqrt(m) each: their sum has std z S.
    p = DpParams.of(0.8, 1.5, 1e-5, 100, 25)
    total = np.sum(
        [gaussian_noise(40_000, p.client_noise_std, noise_seed("sum", i)) for i in range(25)],
        axis=0,
    )
    assert abs(total.std() - 1.5 * 0.8) < 4 * 1.2 / math.sqrt(2 * 40_000)


# ---------------------------------------------------------------- accountant


def _dp_accounting_epsilon(z: float, q: float, rounds: int, delta: float) -> float:
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize(
    ("z", "q", "rounds", "delta"),
    [(1.0, 0.1, 50, 1e-5), (3.0, 0.1, 50, 1e-5), (0.8, 0.5, 20, 1e-6)],
)
def test_reported_epsilon_is_the_accountants(z: float, q: float, rounds: int, delta: float) -> None:
    assert epsilon(z, q, rounds, delta) == _dp_accounting_epsilon(z, q, rounds, delta)


def test_full_participation_matches_the_gaussian_closed_form() -> None:
    # q = 1: each round is the Gaussian mechanism, RDP(alpha) = alpha / (2 z^2) per round;
    # conversion of Balle et al. 2020 (Prop. 12) minimised over the orders.
    z, rounds, delta = 4.0, 50, 1e-5
    orders = [1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
    best = min(
        rounds * a / (2 * z * z) + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        for a in orders
    )
    assert epsilon(z, 1.0, rounds, delta) == pytest.approx(best, rel=1e-9)


def test_epsilon_agrees_with_an_independent_rdp_implementation() -> None:
    from opacus.accountants.analysis import rdp  # a test dependency (pyproject [test])

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    theirs, _ = rdp.get_privacy_spent(
        orders=orders,
        rdp=rdp.compute_rdp(q=0.1, noise_multiplier=1.0, steps=50, orders=orders),
        delta=1e-5,
    )
    assert epsilon(1.0, 0.1, 50, 1e-5) == pytest.approx(theirs, rel=0.03)


def test_accountant_reports_after_each_round() -> None:
    acc = PrivacyAccountant(1.0, 0.1, 1e-5)
    got = [acc.step() for _ in range(3)]
    assert got == sorted(got) and acc.rounds == 3
    assert got[-1] == pytest.approx(epsilon(1.0, 0.1, 3, 1e-5), rel=1e-12)
    assert PrivacyAccountant(0.0, 0.1, 1e-5).step() == math.inf  # clipping alone is not DP
    assert epsilon(1.0, 0.1, 0, 1e-5) == 0.0


def test_noise_multiplier_for_a_target_epsilon() -> None:
    z = noise_multiplier_for(4.0, 1e-5, 0.1, 50, tol=1e-2)
    assert epsilon(z, 0.1, 50, 1e-5) <= 4.0 < epsilon(z - 0.02, 0.1, 50, 1e-5)


def test_max_rounds_for_a_budget() -> None:
    z = 4.0  # q = 1: cheap closed-form RDP
    rounds = max_rounds_for(6.0, 1e-5, z, 1.0, limit=1000)
    assert epsilon(z, 1.0, rounds, 1e-5) <= 6.0 < epsilon(z, 1.0, rounds + 1, 1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [((-1.0, 0.1, 5, 1e-5), "noise multiplier"), ((1.0, 0.0, 5, 1e-5), "sampling rate"),
     ((1.0, 0.1, 5, 1.5), "delta"), ((1.0, 0.1, -1, 1e-5), "rounds")],
)  # fmt: skip
def test_accountant_rejects_impossible_settings(
    args: tuple[float, float, int, float], message: str
) -> None:
    with pytest.raises(DpError, match=message):
        epsilon(*args)

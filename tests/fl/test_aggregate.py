"""Fixed-point aggregation rules (Prepare / Execute / Assert), exact integer math, bounds, screening."""

from __future__ import annotations

import dataclasses
import random
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.aggregate import (
    Q_MAX,
    SCALE,
    AggregationError,
    ScreenConfig,
    ScreenContext,
    Update,
    Verdict,
    aggregate,
    apply_delta,
    coordinate_median,
    dequantize,
    dot,
    fedavg,
    krum,
    krum_scores,
    multi_krum,
    norm_bound,
    pairwise_sq_dists,
    quantize,
    score_updates,
    screen,
    sq_dist,
    sq_norm,
    trimmed_mean,
    vector_digest,
)
from fl.aggregate.labels import LabelBasis, _eliminate, _solve
from fl.models.exact import LabelDirections
from ledger.codec import decode_record, encode


def v(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


# ------------------------------------------------------------------ fixed point


def test_quantize_scale_and_rounding() -> None:
    # Prepare
    x = np.array([1.0, -0.5, 2.0**-25, 3 * 2.0**-25, 0.0], dtype=np.float32)
    # Execute
    q = quantize(x)
    # Assert: exact 2^-24 units, ties to even
    assert q.tolist() == [SCALE, -SCALE // 2, 0, 2, 0]
    np.testing.assert_array_equal(
        dequantize(q), np.array([1.0, -0.5, 0.0, 2.0**-23, 0.0], np.float32)
    )


@pytest.mark.parametrize(
    ("vec", "message"),
    [
        (np.array([np.nan], np.float32), "NaN"),
        (np.array([np.inf], np.float32), "NaN or infinity"),
        (np.array([70000.0], np.float32), "65536"),
        (np.array([1.0]), "float32"),
        (np.zeros((2, 2), np.float32), "1-D"),
    ],
)
def test_quantize_rejects_out_of_range(vec: np.ndarray, message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        quantize(vec)


def test_quantize_dequantize_roundtrip_is_exact_for_float32_models() -> None:
    x = np.random.default_rng(0).normal(0, 0.1, 10_000).astype(np.float32)
    assert np.array_equal(quantize(dequantize(quantize(x))), quantize(x))


# ------------------------------------------------------------------ exact integer math


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**41) + 1, 2**41 - 1), st.integers(-(2**41) + 1, 2**41 - 1)),
        min_size=1,
        max_size=40,
    )
)
def test_exact_dot_matches_python_ints(pairs: list[tuple[int, int]]) -> None:
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    assert dot(a, b) == sum(x * y for x, y in pairs)
    assert sq_dist(a, b) == sum((x - y) ** 2 for x, y in pairs)


def test_exact_dot_large_vectors_do_not_overflow() -> None:
    # Prepare: 2^20 coordinates at 2^40: the true sum 2^100 is far beyond int64
    a = np.full(1 << 20, 1 << 40, dtype=np.int64)
    # Execute / Assert
    assert sq_norm(a) == (1 << 100)
    assert dot(a, -a) == -(1 << 100)


def test_pairwise_distances_match_direct() -> None:
    rng = np.random.default_rng(1)
    xs = [rng.integers(-(2**30), 2**30, 50).astype(np.int64) for _ in range(5)]
    d = pairwise_sq_dists(xs)
    assert all(d[i][j] == sq_dist(xs[i], xs[j]) for i in range(5) for j in range(5))


# ------------------------------------------------------------------ rules


def test_fedavg_weights_by_samples_and_rounds_half_up() -> None:
    # Prepare
    updates, weights = [v(10, 0, 1), v(20, 3, 2)], [1, 3]
    # Execute
    out = fedavg(updates, weights)
    # Assert: (10 + 60) / 4 = 17.5 -> 18; 9/4 = 2.25 -> 2; 7/4 = 1.75 -> 2
    assert out.tolist() == [18, 2, 2]


def test_fedavg_rejects_overflow_instead_of_wrapping() -> None:
    big = np.full(3, 2**41 - 1, dtype=np.int64)
    with pytest.raises(AggregationError, match="int64"):
        fedavg([big, big], [2**21, 2**21])
    with pytest.raises(AggregationError, match="total weight"):
        fedavg([v(1), v(1)], [2**22, 1])
    with pytest.raises(AggregationError, match="positive ints"):
        fedavg([v(1)], [0])
    with pytest.raises(AggregationError, match="bound"):
        fedavg([np.array([2**42], dtype=np.int64)], [1])


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        ([v(1, 9), v(5, -1), v(3, 4)], [3, 4]),
        ([v(1, 10), v(4, -3), v(2, 0), v(100, 5)], [3, 2]),  # even: floor of the middle pair's mean
        ([v(-3), v(-4)], [-4]),
    ],
)
def test_coordinate_median(updates: list[np.ndarray], expected: list[int]) -> None:
    assert coordinate_median(updates).tolist() == expected


def test_trimmed_mean_drops_extremes() -> None:
    # Prepare: beta 0.2 of 5 updates trims one from each side per coordinate
    updates = [v(1, 100), v(2, 0), v(3, 1), v(4, 2), v(1000, -50)]
    # Execute
    out = trimmed_mean(updates, "0.2")
    # Assert: mean of (2, 3, 4) and (0, 1, 2)
    assert out.tolist() == [3, 1]
    assert trimmed_mean(updates, 0).tolist() == fedavg(updates, [1] * 5).tolist()
    with pytest.raises(AggregationError, match="trim fraction"):
        trimmed_mean(updates, "0.5")


def test_krum_picks_the_update_nearest_to_its_neighbours() -> None:
    # Prepare: four clustered honest updates and one far outlier
    updates = [v(0, 0), v(1, 0), v(0, 1), v(1, 1), v(100, 100)]
    # Execute
    chosen, index = krum(updates, f=1)
    scores = krum_scores(updates, f=1)
    # Assert
    assert index in (0, 1, 2, 3) and scores[4] == max(scores)
    assert index == min(range(5), key=lambda i: (scores[i], i))
    with pytest.raises(AggregationError, match="n - f - 2"):
        krum(updates, f=3)


def test_multi_krum_averages_the_best_m() -> None:
    updates = [v(0, 0), v(2, 0), v(0, 2), v(2, 2), v(100, -100)]
    out, chosen = multi_krum(updates, [1, 1, 1, 1, 1], f=1, m=4)
    assert chosen == [0, 1, 2, 3]
    assert out.tolist() == [1, 1]


def test_norm_bound_clips_only_large_updates() -> None:
    # Prepare: norms 5 and 50, bound 10
    small, large = v(3, 4), v(30, 40)
    # Execute
    out = norm_bound([small, large], 10)
    # Assert
    assert out[0].tolist() == [3, 4]
    assert out[1].tolist() == [6, 8]


# ------------------------------------------------------------------ the chain's entry point


def _updates(seed: int, n: int = 8, size: int = 300) -> list[Update]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.01, size)
    out = []
    for i in range(n):
        d = quantize((base + rng.normal(0, 0.01, size)).astype(np.float32))
        out.append(Update.of(d, weight=int(rng.integers(10, 100)), order=i))
    return out


@pytest.mark.parametrize("rule", ["fedavg", "median", "trimmed", "krum", "multikrum", "robust"])
def test_aggregate_is_independent_of_input_order(rule: str) -> None:
    ups = _updates(3)
    shuffled = ups[:]
    random.Random(1).shuffle(shuffled)
    a, b = aggregate(rule, ups), aggregate(rule, shuffled)
    assert a.digest == b.digest == vector_digest(a.delta)
    # verdicts follow the caller's order
    by_id_a = {u.id: vd for u, vd in zip(ups, a.verdicts, strict=True)}
    by_id_b = {u.id: vd for u, vd in zip(shuffled, b.verdicts, strict=True)}
    assert by_id_a == by_id_b


def test_aggregate_normbound_and_errors() -> None:
    ups = _updates(4)
    res = aggregate("normbound", ups, {"max_norm": "0.05"})
    assert {vd.reason for vd in res.verdicts} <= {"ok", "clipped"} and "clipped" in {
        vd.reason for vd in res.verdicts
    }
    with pytest.raises(AggregationError, match="unknown aggregation rule"):
        aggregate("mean-ish", ups)
    with pytest.raises(AggregationError, match="share one id"):
        aggregate("fedavg", [ups[0], ups[0]])
    with pytest.raises(AggregationError, match="shape"):
        aggregate("fedavg", [ups[0], Update.of(np.zeros(3, np.int64), 1)])
    with pytest.raises(AggregationError, match="no updates"):
        aggregate("fedavg", [])
    with pytest.raises(AggregationError, match="unknown screen parameters"):
        aggregate("robust", ups, {"nonsense": 1})


def test_apply_delta_rejects_leaving_the_model_range() -> None:
    g = np.array([Q_MAX - 1], dtype=np.int64)
    assert apply_delta(g, v(1)).tolist() == [Q_MAX]
    with pytest.raises(AggregationError):
        apply_delta(g, v(2))


def test_verdict_is_a_canonical_record() -> None:
    vd = Verdict(False, "duplicate", -12)
    assert decode_record(encode(vd), Verdict) == vd


# ------------------------------------------------------------------ screening


def _honest(rng: np.random.Generator, n: int, size: int = 2000) -> list[np.ndarray]:
    signal = rng.normal(0, 1, size)
    return [
        quantize((0.01 * (signal + rng.normal(0, 2, size))).astype(np.float32)) for _ in range(n)
    ]


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        (lambda h, rng: np.zeros_like(h[0]), "no_progress"),
        (lambda h, rng: h[0] * 10, "norm_too_large"),
        (lambda h, rng: h[0].copy(), "duplicate"),
        (lambda h, rng: -h[0], "opposes_consensus"),
        (lambda h, rng: -np.mean(h, axis=0).astype(np.int64) // 2, "opposes_consensus"),
        (
            lambda h, rng: (np.mean(h, axis=0) - 0.5 * np.std(h, axis=0)).astype(np.int64),
            "one_sided",
        ),
        (lambda h, rng: np.rint(np.mean(h, axis=0)).astype(np.int64), "derived_from_others"),
    ],
    ids=["free-rider", "scaling", "copy", "sign-flip", "ipm", "alie", "mean-of-others"],
)
def test_screen_names_the_reason_and_keeps_honest(make_bad: object, reason: str) -> None:
    # Prepare: 8 honest updates, one malicious submitted last
    rng = np.random.default_rng(7)
    honest = _honest(rng, 8)
    bad = make_bad(honest, rng)  # type: ignore[operator]
    # Execute
    verdicts = screen([*honest, bad], list(range(9)))
    # Assert
    assert [vd.accepted for vd in verdicts[:8]] == [True] * 8
    assert verdicts[8] == Verdict(False, reason, verdicts[8].score)


def test_screen_thresholds_are_configurable() -> None:
    rng = np.random.default_rng(8)
    honest = _honest(rng, 6)
    lenient = ScreenConfig.from_params({"max_norm": 20})
    assert screen([*honest, honest[0] * 10], list(range(7)), lenient)[6].accepted
    strict = ScreenConfig.from_params({"min_cos": "0.99"})
    assert not any(vd.accepted for vd in screen(honest, list(range(6)), strict))


def _non_iid(rng: np.random.Generator, n: int, size: int = 2000,
             head: tuple[int, int] = (1800, 2000)) -> list[np.ndarray]:
    """Updates whose bodies barely agree (non-IID clients) while their output-layer weights
    all move down, as behind a ReLU and a softmax the rows of absent classes do. The output
    layer holds about twice its share of the parameters of the squared norm (real updates:
    2.7x and up on the MNIST CNN); much less and the screen takes them for noise."""
    out = []
    for _ in range(n):
        v = rng.normal(0, 1, size)  # the body: each client its own direction
        a, b = head
        v[a:b] = -1.5 * np.abs(rng.normal(0.5, 1, b - a))
        out.append(quantize((0.01 * v).astype(np.float32)))
    return out


def test_screen_rejects_a_sign_flip_the_output_layer_gives_away() -> None:
    # Prepare: 8 non-IID honest updates and the attacker's own honest update negated, whose
    # whole-vector cosine to the median is too close to 0 for the opposes_consensus check
    rng = np.random.default_rng(11)
    *honest, own = _non_iid(rng, 9)
    flipped = -own
    ctx = ScreenContext(head=(1800, 2000))
    # Execute
    blind = screen([*honest, flipped], list(range(9)))
    seeing = screen([*honest, flipped], list(range(9)), context=ctx)
    # Assert: only the output-layer check catches it, and it keeps every honest update
    assert blind[8].accepted
    assert [vd.accepted for vd in seeing[:8]] == [True] * 8
    assert seeing[8].reason == "opposes_output_layer"
    with pytest.raises(AggregationError, match="output layer range"):
        screen(honest, list(range(8)), context=ScreenContext(head=(1900, 2100)))


def test_screen_rejects_noise_even_where_it_is_the_majority() -> None:
    # Prepare: non-IID honest updates, Gaussian noise of the honest updates' norm, and a
    # round where noise of 50x that norm is seven of ten (30 % malicious clients draw such
    # rounds); the noise spreads its energy evenly, the output layer gets its 10 % share
    rng = np.random.default_rng(13)
    honest = _non_iid(rng, 10)
    scale = float(np.linalg.norm(honest[0].astype(np.float64))) / np.sqrt(2000)

    def noise(k: float) -> np.ndarray:
        return np.rint(rng.normal(0, k * scale, 2000)).astype(np.int64)

    ctx = ScreenContext(head=(1800, 2000))
    # Execute
    one = screen([*honest[:8], noise(1)], list(range(9)), context=ctx)
    blind = screen([*honest[:8], noise(1)], list(range(9)))
    off = screen([*honest[:8], noise(1)], list(range(9)),
                 ScreenConfig.from_params({"min_head_energy": 0}), context=ctx)
    most = screen([*honest[:3], *(noise(50) for _ in range(7))], list(range(10)), context=ctx)
    # Assert: noise is rejected as such; the honest minority keeps a median norm of its own
    # (with the median of all ten, its updates were no_progress)
    assert [vd.accepted for vd in one[:8]] == [True] * 8
    assert one[8].reason == "noise_like"
    assert blind[8].accepted and off[8].accepted
    assert [vd.reason for vd in most] == ["ok"] * 3 + ["noise_like"] * 7


def test_screen_finds_the_mean_of_others_that_include_a_rejected_honest_update() -> None:
    # Prepare: eight honest updates, one of them from a small client with a large step (the
    # norm-per-step check rejects it), and ALIE with one attacker (z = 0): the mean of all eight
    rng = np.random.default_rng(14)
    samples = [300, 200, 250, 400, 350, 150, 300, 20]
    honest = _sized(rng, samples)
    honest[7] = honest[7] * 40  # 1 step, with 3x the norm of the largest client's 13
    alie = np.rint(np.mean(honest, axis=0)).astype(np.int64)
    ctx = ScreenContext(local_batch=32)
    # Execute
    verdicts = screen([*honest, alie], list(range(9)), weights=[*samples, 300], context=ctx)
    # Assert: against the accepted updates' mean alone it is far from the others
    assert verdicts[7].reason == "norm_per_step_too_large"
    assert [vd.accepted for vd in verdicts[:7]] == [True] * 7
    assert verdicts[8].reason == "derived_from_others"


def _output_rows(rng: np.random.Generator, means: np.ndarray, held: list[int],
                 label: dict[int, int]) -> np.ndarray:
    """An output layer's update (classes x hidden) as SGD makes it from a near-random model:
    row ``label[c]`` gains the features of the held classes' inputs, every row loses a tenth
    of them (softmax p = 1/10), plus noise."""
    rows = np.zeros_like(means)
    for c in held:
        n = rng.integers(20, 60)
        rows[label[c]] += n * means[c]
        rows -= n * 0.1 * means[c]
    return rows + rng.normal(0, 0.05 * np.abs(rows).mean(), rows.shape)


def _head_directions(sums: np.ndarray, counts: list[int], start: int) -> LabelDirections:
    """Directions of a model without a hidden layer: class c's summed inputs in row k."""
    rows, hidden = sums.shape
    present = [c for c in range(rows) if counts[c]]
    blocks = []
    for c in present:
        for k in range(rows):
            b = np.zeros((rows, hidden), np.int64)
            b[k] = sums[c]
            blocks.append(b.ravel())
    matrix = np.stack(blocks) if blocks else np.zeros((0, rows * hidden), np.int64)
    return LabelDirections(matrix, np.arange(start, start + rows * hidden), present, rows)


def test_screen_label_mismatch_finds_a_flipped_mapping() -> None:
    # Prepare: ten classes whose mean features are positive and nearly collinear (as a ReLU
    # layer's are), eight honest trainers of two classes each and one that labels c as 9 - c;
    # the other checks off, to see this one alone
    rng = np.random.default_rng(15)
    hidden = 16
    means = 1.0 + 0.3 * rng.random((10, hidden))
    counts = [25] * 10
    sums = np.rint(means * (1 << 14) * 25).astype(np.int64)
    ident = {c: c for c in range(10)}
    rows = [_output_rows(rng, means, rng.choice(10, 2, replace=False).tolist(), ident)
            for _ in range(8)]
    rows.append(_output_rows(rng, means, [1, 2], {c: 9 - c for c in range(10)}))
    body = 40
    ups = [quantize(np.concatenate([rng.normal(0, 1e-4, body), 1e-3 * r.ravel()])
                    .astype(np.float32)) for r in rows]
    dirs = _head_directions(sums, counts, body)
    ctx = ScreenContext(head=(body, body + 10 * hidden), label_directions=lambda: dirs)
    quiet = {"max_skew": 1, "min_residual": 0, "min_cos": -1, "head_cos": -1,
             "min_head_energy": 0, "max_norm": 100, "min_norm": 0}
    # Execute
    off = screen(ups, list(range(9)),
                 ScreenConfig.from_params({**quiet, "max_label_mismatch": 1}), context=ctx)
    on = screen(ups, list(range(9)),
                ScreenConfig.from_params({**quiet, "max_label_mismatch": "0.9"}), context=ctx)
    blind = screen(ups, list(range(9)), ScreenConfig.from_params(quiet),
                   context=ScreenContext(head=(body, body + 10 * hidden)))
    # Assert: it rejects the flipper alone; 1 turns it off, as does a task without a set
    assert [vd.reason for vd in on] == ["ok"] * 8 + ["label_mismatch"]
    assert all(vd.accepted for vd in off) and all(vd.accepted for vd in blind)
    assert ScreenConfig().max_label_mismatch < 1
    # ... and with the fixed bound out of reach, the floor that follows the global model's
    # validation loss: at chance (2.3 nats) it rejects the flipper, at 0.1 nats it does not
    lax = ScreenConfig.from_params({**quiet, "max_label_mismatch": "0.9999", "max_val_rise": 9})
    for nats, last in (("2.3", "label_mismatch"), ("0.1", "ok")):
        level = int(Fraction(nats) * VAL_ONE)
        seen = screen(ups, list(range(9)), lax, context=dataclasses.replace(
            ctx, validation=lambda d, level=level: level))
        assert [vd.reason for vd in seen] == ["ok"] * 8 + [last]
    assert screen(ups, list(range(9)), lax, context=ctx)[8].accepted  # no loss: no floor


def test_label_mismatch_without_features_to_decompose_on_keeps_every_update() -> None:
    # Prepare: a dead hidden layer (all features zero), and a set of one class only
    rng = np.random.default_rng(16)
    ups = [quantize(rng.normal(0, 1e-3, 200).astype(np.float32)) for _ in range(5)]
    quiet = ScreenConfig.from_params({"max_skew": 1, "min_residual": 0, "min_cos": -1,
                                      "min_head_energy": 0, "max_label_mismatch": "0.5"})
    dead = (np.zeros((10, 16), np.int64), [5] * 10)
    one = (np.ones((10, 16), np.int64) * np.arange(10)[:, None], [0, 0, 0, 7] + [0] * 6)
    blind = screen(ups, list(range(5)), quiet, context=ScreenContext(head=(40, 200)))
    # Execute / Assert: nothing to decompose on, the verdicts of a task without a set (and no
    # division by zero)
    for feats in (dead, one):
        dirs = _head_directions(*feats, 40)
        ctx = ScreenContext(head=(40, 200), label_directions=lambda d=dirs: d)  # type: ignore[misc]
        assert screen(ups, list(range(5)), quiet, context=ctx) == blind
    with pytest.raises(AggregationError, match="label_ridge must be positive"):
        ScreenConfig.from_params({"label_ridge": 0})


def _sized(rng: np.random.Generator, samples: list[int], batch: int = 32) -> list[np.ndarray]:
    """Honest updates whose norms grow with their local SGD steps, as real ones do."""
    ups = []
    for w in samples:
        v = rng.normal(0, 1, 1000)
        v *= -(-w // batch) / np.linalg.norm(v)
        ups.append(quantize((0.01 * v).astype(np.float32)))
    return ups


def test_screen_rejects_scaling_by_norm_per_step() -> None:
    # Prepare: clients of 10 to 600 samples (1 to 19 steps), and a 10x scaled small client,
    # still smaller than the largest honest update in raw norm; then half the round scaled
    rng = np.random.default_rng(12)
    samples = [10, 40, 80, 150, 300, 450, 600, 20]
    honest = _sized(rng, samples)
    scaled = honest[1] * 10
    ctx = ScreenContext(local_batch=32)
    # Execute
    blind = screen([*honest, scaled], list(range(9)), weights=[*samples, 40])
    seeing = screen([*honest, scaled], list(range(9)), weights=[*samples, 40], context=ctx)
    half = honest[:5] + [u * 10 for u in honest[:5]]
    many = screen(half, list(range(10)), weights=samples[:5] * 2, context=ctx)
    # Assert: only the per-step check catches it; the lower third keeps its reference honest
    # when half the round is scaled (the median would not)
    assert blind[8].accepted
    assert [vd.accepted for vd in seeing[:8]] == [True] * 8
    assert seeing[8].reason == "norm_per_step_too_large"
    assert not any(vd.accepted for vd in many[5:])
    assert {vd.reason for vd in many[5:]} == {"norm_per_step_too_large", "norm_too_large"}
    assert all(vd.accepted for vd in many[:5])


VAL_ONE = 1 << 28


def test_screen_rejects_what_raises_the_validation_loss() -> None:
    # Prepare: a loss oracle that rises with the first coordinate (the validation set's
    # view of a poisoned direction), and a poisoned update the other checks cannot see
    rng = np.random.default_rng(13)
    honest = _honest(rng, 8)
    bad = _honest(rng, 1)[0]
    bad[0] = 1 << 24
    calls: list[int] = []

    def loss(delta: np.ndarray) -> int:
        calls.append(int(delta[0]))
        return 2 * VAL_ONE + max(0, int(delta[0])) * 256

    # Execute
    blind = screen([*honest, bad], list(range(9)))
    seeing = screen([*honest, bad], list(range(9)), context=ScreenContext(validation=loss))
    # Assert: the step is 1/10 of each update (floored), the base is the zero delta
    assert blind[8].accepted
    assert [vd.accepted for vd in seeing[:8]] == [True] * 8
    assert seeing[8].reason == "raises_validation_loss"
    assert calls[0] == 0 and calls[-1] == (1 << 24) // 10 and len(calls) == 10


def test_a_majority_the_validation_check_rejects_leaves_the_reference_to_the_rest() -> None:
    # Prepare: six poisoned updates (the honest kind shifted up in every coordinate, as
    # a flipped labelling moves a round's median) and four honest ones; the validation
    # oracle sees the shift
    rng = np.random.default_rng(21)
    honest = _honest(rng, 4)
    shift = np.int64(1 << 19)
    bad = [u + shift for u in _honest(rng, 6)]

    def loss(delta: np.ndarray) -> int:
        return 2 * VAL_ONE + max(0, int(delta.mean())) * 65536

    # Execute
    blind = screen([*honest, *bad], list(range(10)))
    seeing = screen([*honest, *bad], list(range(10)), context=ScreenContext(validation=loss))
    # Assert: against the poisoned majority's median the honest updates are one-sided; once
    # the validation check has rejected that majority, they are judged against each other
    assert [vd.reason for vd in blind[:4]] == ["one_sided"] * 4
    assert all(vd.accepted for vd in seeing[:4])
    assert not any(vd.accepted for vd in seeing[4:])


def test_updates_the_validation_check_rejects_leave_the_size_medians() -> None:
    # Prepare: four honest updates, a fifth honest one 7/100 of their size (a client whose
    # data the model already fits), and five poisoned ones three times their size, as late
    # label flips are; the validation oracle sees the poison
    rng = np.random.default_rng(22)
    honest = _honest(rng, 5)
    honest[4] = (honest[4] * 7) // 100
    shift = np.int64(1 << 18)
    bad = [3 * u + shift for u in _honest(rng, 5)]

    def loss(delta: np.ndarray) -> int:
        return 2 * VAL_ONE + max(0, int(delta.mean())) * 65536

    # Execute
    blind = screen([*honest, *bad], list(range(10)))
    seeing = screen([*honest, *bad], list(range(10)), context=ScreenContext(validation=loss))
    # Assert: against the median of all ten the small update made no progress; with the
    # poisoned five out of the size medians it is one of five honest updates (ADR 0409)
    assert blind[4].reason == "no_progress"
    assert [vd.reason for vd in seeing[:5]] == ["ok"] * 5
    assert not any(vd.accepted for vd in seeing[5:])
    # the lift is the only change: the small update alone, with no poison, passes too
    assert screen(honest, list(range(5)))[4].accepted


@pytest.mark.parametrize(("rise", "accepted"), [(1344861634, True), (1344861635, False)])
def test_validation_threshold_is_exact(rise: int, accepted: bool) -> None:
    # base 10 nats: threshold 1/2 * 10 + 1/100 = 5.01 nats = 1344861634.56 units
    honest = _honest(np.random.default_rng(14), 6)
    ctx = ScreenContext(validation=lambda d: 10 * VAL_ONE + (rise if d.any() else 0))
    verdicts = screen(honest, list(range(6)), context=ctx)
    assert {vd.accepted for vd in verdicts} == {accepted}
    with pytest.raises(AggregationError, match="val_step"):
        screen(honest, list(range(6)), ScreenConfig.from_params({"val_step": 2}), context=ctx)


def test_iid_updates_near_the_mean_are_not_derived_but_the_mean_is() -> None:
    # Prepare: IID clients, each update the shared direction plus a little of its own, so
    # every one is within 2/5 of its norm of the mean of the others; then the exact mean
    rng = np.random.default_rng(14)
    signal = rng.normal(0, 1, 2000)
    iid = [quantize((0.01 * (signal + 0.5 * rng.normal(0, 1, 2000))).astype(np.float32))
           for _ in range(8)]
    mean = np.rint(np.mean(iid, axis=0)).astype(np.int64)
    # Execute
    alone = screen(iid, list(range(8)))
    with_mean = screen([*iid, mean], list(range(9)))
    # Assert
    assert all(vd.accepted for vd in alone)
    assert with_mean[8].reason == "derived_from_others"
    assert all(vd.accepted for vd in with_mean[:8])


def test_free_riders_do_not_lower_the_size_checks_median() -> None:
    # Prepare: half the round resubmits the global model (zero deltas); one honest update
    # is 6x the others, inside max_norm 8 x the honest median but not 8 x the median of all
    rng = np.random.default_rng(13)
    honest = _honest(rng, 5)
    honest[4] = honest[4] * 6
    zeros = [np.zeros_like(honest[0]) for _ in range(5)]
    # Execute
    verdicts = screen([*honest, *zeros], list(range(10)))
    # Assert
    assert [vd.reason for vd in verdicts] == ["ok"] * 5 + ["no_progress"] * 5


def test_score_updates_default_rule() -> None:
    ups = _updates(5)
    verdicts = score_updates(ups)
    assert len(verdicts) == len(ups) and all(vd.accepted for vd in verdicts)
    assert all(0 < vd.score <= 10**6 for vd in verdicts)


def test_trust_weighting_gives_opposing_accepted_updates_no_weight() -> None:
    # Prepare: the cosine check disabled, so a sign-flipped update is accepted
    rng = np.random.default_rng(9)
    honest = _honest(rng, 7)
    flipped = -honest[0]
    ups = [Update.of(d, 50, i) for i, d in enumerate([*honest, flipped])]
    # Execute
    trusted = aggregate("robust", ups, {"min_cos": "-1", "trust": 1})
    plain = aggregate("robust", ups, {"min_cos": "-1", "trust": 0})
    # Assert: accepted either way, but only the sample-weighted mean moves towards it
    assert trusted.verdicts[7].accepted and trusted.verdicts[7].score < 0
    assert dot(trusted.delta, flipped) < dot(plain.delta, flipped)
    with pytest.raises(AggregationError, match="trust"):
        aggregate("robust", ups, {"trust": 2})


def test_label_basis_fixed_point_solve_matches_a_float_solve() -> None:
    # Prepare: a ridge-regularised Gram matrix of random integer directions, as the screen has
    rng = np.random.default_rng(21)
    d = rng.integers(-(1 << 17), 1 << 17, size=(30, 500)).astype(np.float64)
    gram = d @ d.T
    gram += 0.1 * np.trace(gram) / 30 * np.eye(30)
    g_int = [[int(v) for v in row] for row in gram]
    rhs = [int(v) for v in rng.integers(-(1 << 40), 1 << 40, size=30)]
    # Execute
    upper, lower = _eliminate(g_int)
    x = np.array(_solve(upper, lower, rhs), dtype=np.float64) / 2.0**48
    # Assert
    want = np.linalg.solve(np.array(g_int, dtype=np.float64), np.array(rhs, dtype=np.float64))
    assert np.abs(x - want).max() < 1e-9 * np.abs(want).max()


def test_label_basis_share_matches_its_float_definition() -> None:
    # Prepare: directions for 4 classes x 5 logits over 60 parameters, and an update that
    # combines the directions of (class 1, logit 3) and (class 2, logit 2) with noise
    rng = np.random.default_rng(22)
    matrix = rng.integers(0, 1 << 30, size=(20, 60), dtype=np.int64)
    dirs = LabelDirections(matrix, np.arange(10, 70), [0, 1, 2, 4], 5)
    u = np.zeros(80, np.int64)
    u[10:70] = (3 * matrix[1 * 5 + 3] + 2 * matrix[2 * 5 + 2]) >> 12
    u[10:70] += rng.integers(-(1 << 14), 1 << 14, size=60)
    # Execute
    share = LabelBasis(dirs, Fraction(1, 10)).mismatch(u)
    # Assert: the float definition (ridge coefficients, centred per logit over the classes,
    # the positive mass off the diagonal: class 1 taught logit 3, class 2 logit 2)
    f = (matrix >> 12).astype(np.float64)
    g = f @ f.T
    coef = np.linalg.solve(g + 0.1 * np.trace(g) / 20 * np.eye(20), f @ u[10:70]).reshape(4, 5)
    centred = coef - coef.mean(0, keepdims=True)
    pos = np.maximum(centred, 0)
    diag = sum(pos[ci, c] for ci, c in enumerate([0, 1, 2, 4]) if c < 5)
    assert share is not None
    assert abs(float(share) - (pos.sum() - diag) / pos.sum()) < 1e-4  # the cuts to 23 bits


@pytest.mark.parametrize(
    ("shares", "params", "flagged"),
    [
        # the relative bound (ADR 0407, off by default since ADR 0408), early round: honest
        # shares about 0.5, a flip at 0.92 (diagonal 0.08 < 0.5 / 5)
        ({0: "0.5", 1: "0.45", 2: "0.6", 3: "0.92"}, {"label_rel": "1/5"}, [3]),
        # late round: honest about 0.8, an honest 0.93 (0.07 >= 0.18 / 5) stays, a flip 0.99 goes
        ({0: "0.8", 1: "0.78", 2: "0.93", 3: "0.99", 4: "0.82"}, {"label_rel": "1/5"}, [3]),
        # the fixed bound alone (the default without the validation loss) misses the early flip
        ({0: "0.5", 1: "0.45", 2: "0.6", 3: "0.92"}, {}, []),
        # above the fixed bound whatever the round
        ({0: "0.995", 1: "0.999", 2: "0.992", 3: "0.99"}, {}, [0, 1, 2]),
        # nothing to decompose: no verdict
        ({0: None, 1: None}, {}, []),
        # one update: its own median, never below a fifth of itself
        ({0: "0.9"}, {"label_rel": "1/5"}, []),
    ],
)
def test_label_mismatch_bounds(shares: dict[int, str | None], params: dict[str, object],
                               flagged: list[int]) -> None:
    from fl.aggregate.screen import _mismatched

    cfg = ScreenConfig.from_params(params)  # type: ignore[arg-type]
    got = _mismatched({i: None if v is None else Fraction(v) for i, v in shares.items()}, cfg)
    assert got == flagged


@pytest.mark.parametrize(
    ("nats", "params", "flagged"),
    [
        # at chance (ln 10 nats): floor 13/200 x 2.3026 = 0.1497; the flips at diagonal
        # 0.12 and 0.14 are under it (and above 1/5 of the median's 0.45, ADR 0407's bound)
        ("2.3026", {}, [3, 4]),
        ("2.3026", {"label_rel": "1/5"}, [3, 4]),
        # the floor at a flip's diagonal 0.14 (13/200 x 28/13 nats): not below it
        (str(Fraction(28, 13)), {}, [3]),
        # half trained (0.5 nats): floor 0.0325
        ("0.5", {}, []),
        # the floor off
        ("2.3026", {"label_loss_floor": 0}, []),
    ],
)
def test_label_mismatch_floor_follows_the_validation_loss(
    nats: str, params: dict[str, object], flagged: list[int]
) -> None:
    from fl.aggregate.screen import VAL_ONE, _mismatched

    # Prepare: a round at half flips, where the median's diagonal share is an honest 0.45
    shares = {0: "0.55", 1: "0.5", 2: "0.45", 3: "0.88", 4: "0.86"}
    base = int(Fraction(nats) * VAL_ONE)  # floored: the floor lands just under 0.14
    # Execute
    got = _mismatched({i: Fraction(v) for i, v in shares.items()},
                      ScreenConfig.from_params(params), base)  # type: ignore[arg-type]
    # Assert
    assert got == flagged


def test_label_basis_refuses_a_lost_pivot_and_the_screen_then_skips_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A zero pivot: not positive definite
    with pytest.raises(ArithmeticError):
        _eliminate([[0, 1], [1, 0]])
    # Prepare: the flipped-mapping round of the test above would reject its flipper
    rng = np.random.default_rng(23)
    ups = [quantize(rng.normal(0, 1e-3, 200).astype(np.float32)) for _ in range(4)]
    dirs = _head_directions(rng.integers(1, 1 << 20, size=(10, 16)), [5] * 10, 40)
    quiet = ScreenConfig.from_params({"max_skew": 1, "min_residual": 0, "min_cos": -1,
                                      "min_head_energy": 0, "max_label_mismatch": "0.01"})
    blind = screen(ups, list(range(4)), quiet, context=ScreenContext(head=(40, 200)))
    ctx = ScreenContext(head=(40, 200), label_directions=lambda: dirs)
    assert screen(ups, list(range(4)), quiet, context=ctx) != blind  # the check does reject

    def lost(*args: object) -> None:
        raise ArithmeticError("label basis is not positive definite")

    monkeypatch.setattr(sys.modules["fl.aggregate.screen"], "LabelBasis", lost)
    # Execute / Assert: the verdicts of a task without a validation set, no exception
    assert screen(ups, list(range(4)), quiet, context=ctx) == blind

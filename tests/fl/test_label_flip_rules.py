"""The scoring helpers of benchmarks/label_flip_rules.py (the simulation itself is a benchmark)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from benchmarks.label_flip_rules import RIDGE, mismatch, off_share, relative_flags
from fl.aggregate.screen import _ClassBasis


def test_off_share_is_0_on_the_diagonal_and_1_off_it() -> None:
    assert off_share(np.eye(4)) == 0.0
    assert off_share(np.eye(4)[::-1] - 0.5) == 1.0  # y -> 3 - y, negatives ignored
    assert off_share(-np.ones((3, 3))) == 0.0  # no positive mass at all


def test_float_mismatch_matches_the_screens_exact_statistic() -> None:
    # Prepare: class feature sums and counts as ValidationLoss.class_features gives them,
    # and an output-layer update (classes x hidden), all integers.
    rng = np.random.default_rng(7)
    sums = rng.integers(0, 1 << 20, size=(10, 16), dtype=np.int64)
    counts = [int(c) for c in rng.integers(5, 40, size=10)]
    w = rng.integers(-(1 << 18), 1 << 18, size=(10, 16), dtype=np.int64)
    means = sums.astype(np.float64) / np.array(counts, float)[:, None]
    # Execute
    exact = _ClassBasis((sums, counts), Fraction(RIDGE).limit_denominator(1000)).mismatch(w)
    approx = mismatch({"gram": means @ means.T, "dots": w.astype(np.float64) @ means.T})
    # Assert
    assert exact is not None
    assert abs(float(exact) - approx) < 1e-9


def test_relative_flags_follow_the_rounds_lower_third() -> None:
    # Two rounds: one early (honest scores near 0.6), one late (near 0.85). The same score
    # 0.93 is an outlier early and ordinary late.
    rows: list[dict[str, Any]] = [{"run": (0.3, 0, 1)}] * 4 + [{"run": (0.3, 0, 40)}] * 4
    s = np.array([0.55, 0.6, 0.62, 0.93, 0.84, 0.86, 0.88, 0.93])
    live = np.ones(len(s), bool)
    flags = relative_flags(rows, s, live, 0.2)
    assert flags.tolist() == [False, False, False, True, False, False, False, False]
    # Updates another check rejected do not set the reference.
    live[:3] = False
    assert not relative_flags(rows, s, live, 0.2)[3]

"""Aggregation rules as pure integer functions over quantized updates.

Every function takes updates as a sequence of equal-length 1-D int64 arrays
(quantized *deltas*, new model minus global model, in 2^-24 units) and returns an
int64 delta; the caller adds it to the quantized global model. Integer division
rounds half up (``floor((s + d // 2) / d)``) everywhere, so one input has one
output on every machine. Order matters only for tie-breaking (Krum), which picks
the lowest index: callers pass updates in canonical order (sorted by update id,
see :func:`fl.aggregate.api.aggregate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from fl.aggregate.exact import isqrt, pairwise_sq_dists, sq_norm
from fl.aggregate.fixed import W_MAX, AggregationError, check_range

__all__ = [
    "coordinate_median",
    "div_round",
    "fedavg",
    "weighted_mean",
    "krum",
    "krum_scores",
    "multi_krum",
    "norm_bound",
    "scale_vector",
    "trimmed_mean",
]

IntVec = npt.NDArray[np.int64]
_DELTA_BOUND = 1 << 41


def _stack(updates: Sequence[IntVec]) -> npt.NDArray[np.int64]:
    if not updates:
        raise AggregationError("no updates to aggregate")
    size = updates[0].shape
    for i, u in enumerate(updates):
        check_range(u, _DELTA_BOUND, f"update {i}")
        if u.shape != size:
            raise AggregationError(f"update {i} has shape {u.shape}, expected {size}")
    return np.stack(updates)


def div_round(num: IntVec, den: int) -> IntVec:
    """Elementwise num / den rounded half up, for den > 0 (exact integer arithmetic)."""
    if den <= 0:
        raise AggregationError("divisor must be positive")
    return (num + den // 2) // den


def fedavg(updates: Sequence[IntVec], weights: Sequence[int]) -> IntVec:
    """Sample-weighted mean (McMahan et al. 2017): sum(w_i u_i) / sum(w_i)."""
    if any(type(w) is not int or w < 1 for w in weights):
        raise AggregationError("weights must be positive ints (sample counts)")
    total = sum(weights)
    if total > W_MAX:
        raise AggregationError(f"total weight {total} exceeds the fixed-point bound {W_MAX}")
    return weighted_mean(updates, weights)


def weighted_mean(updates: Sequence[IntVec], weights: Sequence[int]) -> IntVec:
    """sum(w_i u_i) / sum(w_i) for non-negative int weights with a positive sum.

    Rejects (never wraps) when ``max|u| * sum(w) >= 2^62``: below that bound every
    partial sum fits int64 in any order.
    """
    if not updates:
        raise AggregationError("no updates to aggregate")
    if len(weights) != len(updates):
        raise AggregationError(f"{len(updates)} updates but {len(weights)} weights")
    size = updates[0].shape
    for i, u in enumerate(updates):
        check_range(u, _DELTA_BOUND, f"update {i}")
        if u.shape != size:
            raise AggregationError(f"update {i} has shape {u.shape}, expected {size}")
    if any(type(w) is not int or w < 0 for w in weights):
        raise AggregationError("weights must be non-negative ints")
    total = sum(weights)
    if total < 1:
        raise AggregationError("weights sum to zero")
    acc = np.zeros(size, dtype=np.int64)
    biggest = max((max(int(u.max()), -int(u.min())) for u in updates if u.size), default=0)
    if biggest * total >= 1 << 62:
        raise AggregationError("weighted sum would leave int64; rejecting instead of wrapping")
    tmp = np.empty(size, dtype=np.int64)
    for w, u in zip(weights, updates, strict=True):
        if w:
            np.multiply(u, np.int64(w), out=tmp)
            acc += tmp
    return div_round(acc, total)


def coordinate_median(updates: Sequence[IntVec]) -> IntVec:
    """Coordinate-wise median (Yin et al. 2018); for an even count, the floor of the middle pair's mean."""
    x = np.sort(_stack(updates), axis=0)
    n = x.shape[0]
    if n % 2:
        return x[n // 2].copy()
    return (x[n // 2 - 1] + x[n // 2]) >> 1


def trim_count(n: int, beta: Fraction | float | str) -> int:
    b = beta if isinstance(beta, Fraction) else Fraction(str(beta))
    if not 0 <= b < Fraction(1, 2):
        raise AggregationError(f"trim fraction must be in [0, 1/2), got {beta}")
    return int(b * n)  # floor


def trimmed_mean(updates: Sequence[IntVec], beta: Fraction | float | str) -> IntVec:
    """Coordinate-wise mean after dropping the floor(beta * n) largest and smallest values (Yin et al. 2018)."""
    x = np.sort(_stack(updates), axis=0)
    n = x.shape[0]
    k = trim_count(n, beta)
    kept = x[k : n - k]
    return div_round(kept.sum(axis=0), n - 2 * k)


def krum_scores(
    updates: Sequence[IntVec], f: int, dists: list[list[int]] | None = None
) -> list[int]:
    """Krum score of each update: the sum of squared distances to its n - f - 2 nearest others."""
    n = len(updates)
    if f < 0 or n - f - 2 < 1:
        raise AggregationError(f"Krum needs n - f - 2 >= 1 (n={n}, f={f})")
    _stack(updates)
    d = pairwise_sq_dists(updates) if dists is None else dists
    k = n - f - 2
    return [sum(sorted(d[i][j] for j in range(n) if j != i)[:k]) for i in range(n)]


def krum(updates: Sequence[IntVec], f: int) -> tuple[IntVec, int]:
    """Blanchard et al. (2017): the update with the lowest Krum score (lowest index on ties)."""
    scores = krum_scores(updates, f)
    best = min(range(len(updates)), key=lambda i: (scores[i], i))
    return updates[best].copy(), best


def multi_krum(
    updates: Sequence[IntVec], weights: Sequence[int], f: int, m: int | None = None
) -> tuple[IntVec, list[int]]:
    """Multi-Krum: the sample-weighted mean of the m updates with the lowest Krum scores (default n - f)."""
    n = len(updates)
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise AggregationError(f"Multi-Krum m must be in 1..{n}, got {m}")
    scores = krum_scores(updates, f)
    chosen = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
    return fedavg([updates[i] for i in chosen], [weights[i] for i in chosen]), chosen


def scale_vector(u: IntVec, num: int, den: int) -> IntVec:
    """u * num / den (0 <= num <= den), rounded half up, exact for |u| < 2^41 without overflow."""
    if not 0 <= num <= den or den <= 0:
        raise AggregationError("scale must be a fraction in [0, 1]")
    if num == den:
        return u.copy()
    # Reduce num/den to a 21-bit fixed-point ratio so u * r stays within int64.
    shift = 21
    r = (num << shift) // den
    return div_round(u * np.int64(r), 1 << shift)


def norm_bound(updates: Sequence[IntVec], max_norm: int) -> list[IntVec]:
    """Clip each update to L2 norm ``max_norm`` (in 2^-24 units), as in Sun et al. (2019)."""
    if max_norm <= 0:
        raise AggregationError("max_norm must be positive")
    _stack(updates)
    out = []
    for u in updates:
        norm = isqrt(sq_norm(u))
        out.append(u.copy() if norm <= max_norm else scale_vector(u, max_norm, norm))
    return out

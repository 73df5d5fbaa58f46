"""Exact integer inner products, norms and distances over int64 vectors.

Results are Python ints, computed without floats and without silent overflow:
when ``max|a| * max|b| * n < 2^63`` numpy's int64 dot is exact (every partial sum
is bounded by the sum of absolute products, whatever the summation order);
otherwise values below 2^41 (the delta bound of :mod:`fl.aggregate.fixed`) are
split into 21-bit limbs whose products are summed in chunks that provably fit
int64 and are recombined in Python ints; anything larger falls back to Python ints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fl.aggregate.fixed import AggregationError

__all__ = ["dot", "gram", "maxabs", "isqrt", "pairwise_sq_dists", "sq_dist", "sq_norm"]

IntVec = npt.NDArray[np.int64]
_LIMB = 21
_INPUT_BOUND = 1 << 41
_CHUNK = 1 << 19  # 2^19 products of limbs below 2^21 * 2^21 sum below 2^61


def maxabs(a: IntVec) -> int:
    """max |a_i| without a temporary array (0 for an empty vector)."""
    return max(int(a.max()), -int(a.min())) if a.size else 0


def _dot_limbs(a: IntVec, b: IntVec) -> int:
    total = 0
    for s in range(0, a.size, _CHUNK):
        ca, cb = a[s : s + _CHUNK], b[s : s + _CHUNK]
        ah, al = (
            ca >> _LIMB,
            ca & ((1 << _LIMB) - 1),
        )  # floor split: a = ah * 2^21 + al, 0 <= al < 2^21
        bh, bl = cb >> _LIMB, cb & ((1 << _LIMB) - 1)
        hh = int(np.dot(ah, bh))
        mid = int(np.dot(ah, bl)) + int(np.dot(al, bh))
        ll = int(np.dot(al, bl))
        total += (hh << (2 * _LIMB)) + (mid << _LIMB) + ll
    return total


def dot(a: IntVec, b: IntVec, bound_a: int | None = None, bound_b: int | None = None) -> int:
    if a.shape != b.shape or a.dtype != np.int64 or b.dtype != np.int64:
        raise AggregationError(f"dot needs two int64 vectors of one shape, got {a.shape} {b.shape}")
    ma = maxabs(a) if bound_a is None else bound_a
    mb = maxabs(b) if bound_b is None else bound_b
    if ma * mb * max(a.size, 1) < 1 << 63:
        return int(np.dot(a, b))
    if ma < _INPUT_BOUND and mb < _INPUT_BOUND:
        return _dot_limbs(a, b)
    # Beyond the limb bound only in adversarial corner cases: slow, exact Python ints.
    return sum(int(x) * int(y) for x, y in zip(a.tolist(), b.tolist(), strict=True))


def sq_norm(a: IntVec) -> int:
    return dot(a, a)


def sq_dist(a: IntVec, b: IntVec) -> int:
    if a.shape != b.shape:
        raise AggregationError("sq_dist needs vectors of one shape")
    if maxabs(a) + maxabs(b) < 1 << 62:
        d = a - b  # cannot overflow: |a - b| <= |a| + |b| < 2^62
        return dot(d, d)
    return dot(a, a) + dot(b, b) - 2 * dot(a, b)


def gram(vectors: Sequence[IntVec]) -> list[list[int]]:
    """All pairwise inner products (symmetric), exact."""
    n = len(vectors)
    bounds = [maxabs(v) for v in vectors]
    g = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            g[i][j] = g[j][i] = dot(vectors[i], vectors[j], bounds[i], bounds[j])
    return g


def pairwise_sq_dists(
    vectors: Sequence[IntVec], g: list[list[int]] | None = None
) -> list[list[int]]:
    """``|v_i - v_j|^2`` for all pairs via the Gram matrix (exact, so no cancellation error)."""
    g = gram(vectors) if g is None else g
    n = len(vectors)
    return [[g[i][i] + g[j][j] - 2 * g[i][j] for j in range(n)] for i in range(n)]


def isqrt(v: int) -> int:
    return math.isqrt(v)

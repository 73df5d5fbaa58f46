"""Fixed-point encoding of model vectors: int64 at a 2^-24 scale, with explicit bounds.

A float32 value x is stored as ``q = round_half_even(x * 2^24)``; the product is exact
in float64 (a power-of-two scale on a float32), so quantization is the same IEEE
operation on every machine. Dequantization ``q / 2^24`` is exact in float64 for
``|q| < 2^53`` and is then rounded once to float32.

Bounds (all checked; a violation raises :class:`AggregationError`, nothing wraps):

* a quantized *model* or *update* coordinate satisfies ``|q| <= Q_MAX = 2^40``
  (``|x| <= 65536``); a delta of two in-range models may reach 2^41 and is checked again;
* the total weight (sum of sample counts) of one aggregation is at most ``W_MAX = 2^22``,
  so ``sum(w_i * q_i)`` stays below ``2^62`` and int64 accumulation cannot overflow
  in any order.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

__all__ = [
    "AggregationError",
    "Q_MAX",
    "SCALE",
    "SCALE_BITS",
    "W_MAX",
    "check_range",
    "dequantize",
    "quantize",
    "quantize_delta",
    "vector_digest",
]

SCALE_BITS = 24
SCALE = 1 << SCALE_BITS
Q_MAX = 1 << 40
W_MAX = 1 << 22

IntVec = npt.NDArray[np.int64]


class AggregationError(ValueError):
    """Input outside the fixed-point bounds, mismatched shapes, or an impossible rule setting."""


def check_range(q: IntVec, bound: int = Q_MAX, what: str = "vector") -> None:
    if q.dtype != np.int64 or q.ndim != 1:
        raise AggregationError(f"{what} must be a 1-D int64 array, got {q.dtype} {q.shape}")
    # max/min instead of abs(): no temporary copy of a large vector.
    if q.size and max(int(q.max()), -int(q.min())) > bound:
        raise AggregationError(
            f"{what} has a coordinate beyond the fixed-point bound 2^{bound.bit_length() - 1}"
        )


def quantize(vec: npt.ArrayLike) -> IntVec:
    """float32 vector -> int64 fixed point (2^-24 units); non-finite or |x| > 65536 is rejected."""
    x = np.asarray(vec)
    if x.dtype != np.float32:
        raise AggregationError(f"quantize takes float32, got {x.dtype}")
    if x.ndim != 1:
        raise AggregationError(f"quantize takes a 1-D vector, got shape {x.shape}")
    x64 = x.astype(np.float64) * float(SCALE)
    if not np.isfinite(x64).all():
        raise AggregationError("vector contains NaN or infinity")
    if x64.size and float(np.abs(x64).max()) > Q_MAX:
        raise AggregationError("vector has a value beyond +-65536, outside the fixed-point range")
    return np.rint(x64).astype(np.int64)


def dequantize(q: IntVec) -> npt.NDArray[np.float32]:
    check_range(q, 1 << 52, "fixed-point vector")
    return (q.astype(np.float64) / float(SCALE)).astype(np.float32)


def quantize_delta(new: npt.ArrayLike, base: npt.ArrayLike) -> IntVec:
    """Update as an exact integer difference of two quantized float32 models."""
    d = quantize(np.asarray(new)) - quantize(np.asarray(base))
    return d


def vector_digest(q: IntVec) -> bytes:
    """SHA-256 of the vector's int64 little-endian bytes (update ids, aggregate hashes)."""
    if q.dtype != np.int64:
        raise AggregationError("vector_digest takes int64")
    return hashlib.sha256(np.ascontiguousarray(q, dtype="<i8").tobytes()).digest()

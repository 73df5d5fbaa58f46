"""The default robustness screen: integer-only per-update checks with a reason for each rejection.

Checks, in order (the first that fails names the reason):

1. ``no_progress``: L2 norm below ``min_norm`` x the round's median norm (free riders
   resubmitting the global model);
2. ``norm_too_large``: norm above ``max_norm`` x the median norm (scaling / model
   replacement, noise);
3. ``duplicate``: within relative distance ``dup`` of an earlier-submitted update
   (free riders copying another trainer; colluding identical submissions);
4. ``opposes_consensus``: cosine similarity to the coordinate-wise median of all
   updates at most ``min_cos`` (sign flip, IPM, label flip);
5. ``one_sided``: among the coordinates where the update differs from the median,
   the share above minus the share below exceeds ``max_skew`` in absolute value.
   Independent honest updates scatter on both sides; ALIE's mean - z * std is below
   the centre in almost every coordinate (sign statistics as in SignGuard, Xu et al. 2022);
6. ``derived_from_others``: ``|u - mean(others)|^2 < min_residual * |u|^2`` with the
   mean over the other non-duplicate updates: an update that is (nearly) the average
   of the rest carries no independent training signal (ALIE with z = 0, averaging
   free riders).

All quantities are Python ints from exact integer arithmetic; every threshold is a
rational number, compared by cross-multiplication, so the verdicts are identical on
every machine. The median statistics assume honest updates are a majority of the round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from fl.aggregate.exact import dot, isqrt, maxabs, sq_norm
from fl.aggregate.fixed import AggregationError
from fl.aggregate.types import Verdict

__all__ = ["ScreenConfig", "screen"]

IntVec = npt.NDArray[np.int64]
COS_SCALE = 10**6


def _frac(v: Any) -> Fraction:
    if isinstance(v, Fraction):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise AggregationError(f"threshold must be a number or decimal string, got {v!r}")
    return Fraction(str(v))


@dataclass(frozen=True)
class ScreenConfig:
    """Thresholds (exact rationals), calibrated on MNIST Dirichlet(0.5) so that about
    1-2 % of honest updates fail a check (see docs/fl.md for the measured quantiles)."""

    min_norm: Fraction = Fraction(1, 20)
    max_norm: Fraction = Fraction(8)
    dup: Fraction = Fraction(1, 1000)
    min_cos: Fraction = Fraction(-3, 10)
    max_skew: Fraction = Fraction(9, 20)
    min_residual: Fraction = Fraction(2, 5)
    clip: Fraction = Fraction(1)  # accepted updates are clipped to clip x their median norm; 0: off
    # 1: weight accepted updates by samples x ReLU(cosine to the reference), FLTrust-style.
    # Off by default: on MNIST it slowed clean training and collapsed under 30 % sign flip
    # (rounds with a malicious majority make the reference itself malicious).
    trust: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> ScreenConfig:
        params = dict(params or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(params) - known
        if unknown:
            raise AggregationError(f"unknown screen parameters {sorted(unknown)}")
        kwargs: dict[str, Any] = {k: _frac(v) for k, v in params.items() if k != "trust"}
        if "trust" in params:
            if params["trust"] not in (0, 1) or isinstance(params["trust"], bool):
                raise AggregationError("trust must be 0 or 1")
            kwargs["trust"] = params["trust"]
        return cls(**kwargs)


def _median_int(values: Sequence[int]) -> int:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


def _cos_micro(num: int, na2: int, nb2: int) -> int:
    """floor(10^6 * num / sqrt(na2 * nb2)) for the score (exact: integer square root)."""
    if na2 == 0 or nb2 == 0:
        return 0
    den = isqrt(na2 * nb2 * COS_SCALE * COS_SCALE)  # floor(sqrt) of the scaled denominator
    sign = -1 if num < 0 else 1
    return sign * ((abs(num) * COS_SCALE * COS_SCALE) // max(den, 1))


def _cos_at_most(num: int, na2: int, nb2: int, t: Fraction) -> bool:
    """cos = num / sqrt(na2 nb2) <= t, decided exactly."""
    if na2 == 0 or nb2 == 0:
        return True
    lhs_neg, rhs_neg = num < 0, t < 0
    if lhs_neg != rhs_neg:
        return lhs_neg
    # Same sign: compare squares (the inequality flips for negatives).
    lhs = num * num * t.denominator**2
    rhs = t.numerator**2 * na2 * nb2
    return lhs <= rhs if not lhs_neg else lhs >= rhs


def _median_without(s: npt.NDArray[np.int64], v: IntVec, member: bool) -> IntVec:
    """Coordinate-wise median of the sorted rows ``s`` with one occurrence of ``v`` removed.

    When ``v`` is not among the rows (``member`` False) it is the plain median. With k
    rows and v removed: for even k the median of the k - 1 others is s[k/2] where
    v <= s[k/2 - 1], else s[k/2 - 1]; for odd k it is the floored mean of the middle
    pair left over, which depends on whether v is below, at or above s[(k - 1)/2].
    """
    k = s.shape[0]
    if not member or k == 1:
        return s[k // 2].copy() if k % 2 else (s[k // 2 - 1] + s[k // 2]) >> 1
    if k % 2 == 0:
        m = k // 2
        return np.where(v <= s[m - 1], s[m], s[m - 1])
    m = (k - 1) // 2
    lo = np.where(v < s[m], s[m], s[m - 1])
    hi = np.where(v > s[m], s[m], s[m + 1])
    return (lo + hi) >> 1


def screen(
    updates: Sequence[IntVec], orders: Sequence[int], config: ScreenConfig | None = None
) -> list[Verdict]:
    """Verdicts for ``updates`` (given in canonical order; ``orders`` are submission orders)."""
    cfg = config or ScreenConfig()
    n = len(updates)
    if n == 0:
        return []
    x = np.stack(updates)
    bounds = [maxabs(u) for u in updates]
    norms2 = [dot(u, u, b, b) for u, b in zip(updates, bounds, strict=True)]
    norms = [isqrt(v) for v in norms2]
    med_norm = _median_int(norms)
    reasons: list[str | None] = [None] * n
    scores = [0] * n

    for i in range(n):
        if (
            norms[i] * cfg.min_norm.denominator < cfg.min_norm.numerator * med_norm
            or norms2[i] == 0
        ):
            reasons[i] = "no_progress"
        elif norms[i] * cfg.max_norm.denominator > cfg.max_norm.numerator * med_norm:
            reasons[i] = "norm_too_large"

    # Duplicates: of two near-identical updates the later submission is the copy.
    by_time = sorted(range(n), key=lambda i: (orders[i], i))
    for pos, i in enumerate(by_time):
        if reasons[i] is not None:
            continue
        for j in by_time[:pos]:
            if reasons[j] in ("no_progress", "norm_too_large"):
                continue
            # |u_i - u_j| >= | |u_i| - |u_j| |: a cheap exact filter before the full distance.
            gap = abs(norms[i] - norms[j]) - 1
            if (
                gap > 0
                and gap * cfg.dup.denominator > cfg.dup.numerator * min(norms[i], norms[j]) + 1
            ):
                continue
            d2 = norms2[i] + norms2[j] - 2 * dot(updates[i], updates[j], bounds[i], bounds[j])
            bound = min(norms2[i], norms2[j])
            if d2 * cfg.dup.denominator**2 <= cfg.dup.numerator**2 * bound:
                reasons[i] = "duplicate"
                break

    # The reference for update i is the coordinate-wise median of the *other* distinct,
    # plausibly sized updates: copies count once, and an update cannot pull its own
    # reference towards itself (with itself included, a sign-flipped update moves the
    # median enough to look aligned with it).
    pool = [i for i in range(n) if reasons[i] is None] or list(range(n))
    sorted_pool = np.sort(x[pool], axis=0)
    for i in range(n):
        ref = _median_without(sorted_pool, updates[i], i in pool)
        ref_bound = maxabs(ref)
        ref2 = dot(ref, ref, ref_bound, ref_bound)
        dots = dot(updates[i], ref, bounds[i], ref_bound)
        scores[i] = _cos_micro(dots, norms2[i], ref2)
        if reasons[i] is not None:
            continue
        if _cos_at_most(dots, norms2[i], ref2, cfg.min_cos):
            reasons[i] = "opposes_consensus"
            continue
        diff = updates[i] - ref
        above, below = int(np.count_nonzero(diff > 0)), int(np.count_nonzero(diff < 0))
        if abs(above - below) * cfg.max_skew.denominator > cfg.max_skew.numerator * (above + below):
            reasons[i] = "one_sided"

    # Residual against the mean of the other distinct updates, without division:
    # |u - S'/(k)|^2 < r |u|^2  <=>  |k u - S'|^2 < r k^2 |u|^2, S' = sum of the k others.
    distinct = pool
    total = x[distinct].sum(axis=0)
    for i in range(n):
        if reasons[i] is not None or i not in distinct:
            continue
        k = len(distinct) - 1
        if k < 2:
            continue
        resid = np.int64(k + 1) * updates[i] - total  # = k u - (S - u)
        r2 = sq_norm(resid)
        if r2 * cfg.min_residual.denominator < cfg.min_residual.numerator * k * k * norms2[i]:
            reasons[i] = "derived_from_others"

    return [Verdict(r is None, r or "ok", s) for r, s in zip(reasons, scores, strict=True)]

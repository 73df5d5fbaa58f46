"""Replay distances in exact integer arithmetic, relative to the replayed step (ppm).

Vectors are mapped to int64 with one power-of-two scale shared by the vectors being
compared (the largest magnitude lands near 2^40), which is exact for float32 inputs up
to the dropped low bits and identical on every machine; norms, inner products and the
ratios are then Python ints (:mod:`fl.aggregate.exact`), so two verifiers with the same
replay agree on every digit and on the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch

from fl.aggregate import dot, sq_norm
from fl.models import flatten
from fl.pol.checkpoint import optimizer_slots
from fl.pol.records import PPM, SegmentDistance, Tolerance

__all__ = ["CAP", "common_fixed", "compare", "within"]

CAP = 10**12  # "infinitely far": a distance where the reference step is zero
_TOP_BITS = 40


def common_fixed(*vectors: npt.NDArray[np.float32]) -> list[npt.NDArray[np.int64]]:
    """int64 images of float vectors under one power-of-two scale (max |value| ~ 2^40)."""
    peak = max((float(np.max(np.abs(v))) for v in vectors if v.size), default=0.0)
    if not math.isfinite(peak):
        raise ValueError("cannot compare non-finite values")
    if peak == 0.0:
        return [np.zeros(v.shape, dtype=np.int64) for v in vectors]
    shift = _TOP_BITS - math.frexp(peak)[1]
    return [np.rint(np.ldexp(v.astype(np.float64), shift)).astype(np.int64) for v in vectors]


def _ratio_ppm(sq_num: int, sq_den: int) -> int:
    """floor(10^6 * sqrt(sq_num / sq_den)), CAP when the denominator is zero."""
    if sq_den == 0:
        return 0 if sq_num == 0 else CAP
    return min(CAP, math.isqrt(PPM * PPM * sq_num // sq_den))


def _cos_ppm(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> int:
    """floor(10^6 * cos(a, b)); 10^6 when both are zero, 0 when one is."""
    sa, sb = sq_norm(a), sq_norm(b)
    if sa == 0 or sb == 0:
        return PPM if sa == sb else 0
    ab = dot(a, b)
    mag = math.isqrt(PPM * PPM * ab * ab // (sa * sb))
    if ab >= 0:
        return mag
    exact = PPM * PPM * ab * ab == mag * mag * sa * sb
    return -mag if exact else -(mag + 1)


def _linf_ppm(d: npt.NDArray[np.int64], ref: npt.NDArray[np.int64]) -> int:
    num = int(np.max(np.abs(d))) if d.size else 0
    den = int(np.max(np.abs(ref))) if ref.size else 0
    if den == 0:
        return 0 if num == 0 else CAP
    return min(CAP, PPM * num // den)


def _optim_ppm(
    replay: Mapping[str, torch.Tensor],
    recorded: Mapping[str, torch.Tensor],
    previous: Mapping[str, torch.Tensor],
) -> int:
    if set(replay) != set(recorded):
        return CAP
    rep, rec, prev = optimizer_slots(replay), optimizer_slots(recorded), optimizer_slots(previous)
    worst = 0
    for slot, a in rep.items():
        b = rec[slot]
        if a.shape != b.shape:
            return CAP
        if slot == "step":  # step counters are integers: equal or wrong
            if not np.array_equal(a, b):
                return CAP
            continue
        p = prev.get(slot, np.zeros_like(a))
        qa, qb, qp = common_fixed(a, b, p)
        worst = max(worst, _ratio_ppm(sq_norm(qa - qb), sq_norm(qa - qp)))
    return worst


def compare(
    segment: int,
    replay: Mapping[str, torch.Tensor],
    recorded: Mapping[str, torch.Tensor],
    previous: Mapping[str, torch.Tensor],
    replay_optim: Mapping[str, torch.Tensor],
    recorded_optim: Mapping[str, torch.Tensor],
    previous_optim: Mapping[str, torch.Tensor],
    step_l2_q: int,
) -> SegmentDistance:
    """Distances of a replayed segment end (weights W', optimizer state) from its checkpoint W.

    ``l2_ppm = |W' - W| / |W' - W_prev|``, ``linf_ppm`` likewise with max norms,
    ``cos_ppm = cos(W' - W_prev, W - W_prev)``, ``optim_ppm`` the worst relative L2
    distance over the optimizer-state slots (step counters must be equal).
    """
    a, b, p = common_fixed(flatten(replay), flatten(recorded), flatten(previous))
    d, step = a - b, a - p
    return SegmentDistance(
        segment=segment,
        l2_ppm=_ratio_ppm(sq_norm(d), sq_norm(step)),
        linf_ppm=_linf_ppm(d, step),
        cos_ppm=_cos_ppm(step, b - p),
        optim_ppm=_optim_ppm(replay_optim, recorded_optim, previous_optim),
        step_l2_q=step_l2_q,
    )


def within(dist: SegmentDistance, tol: Tolerance) -> str | None:
    """None when the distance is within tolerance, else which bound it breaks."""
    if dist.l2_ppm > tol.rel_l2_ppm:
        return f"l2 {dist.l2_ppm} ppm > {tol.rel_l2_ppm} ppm"
    if dist.linf_ppm > tol.rel_linf_ppm:
        return f"linf {dist.linf_ppm} ppm > {tol.rel_linf_ppm} ppm"
    if dist.cos_ppm < tol.min_cos_ppm:
        return f"cosine {dist.cos_ppm} ppm < {tol.min_cos_ppm} ppm"
    if dist.optim_ppm > tol.rel_optim_ppm:
        return f"optimizer state {dist.optim_ppm} ppm > {tol.rel_optim_ppm} ppm"
    return None

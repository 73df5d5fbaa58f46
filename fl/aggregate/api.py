"""The aggregation entry point the chain calls: canonical order, rule dispatch, verdicts, digest.

Rules and their parameters (ints, or decimal strings for fractions):

========== ===================================================== ===========================
rule       what it does                                          params
========== ===================================================== ===========================
fedavg     sample-weighted mean of all updates                   (none)
median     coordinate-wise median                                (none)
trimmed    coordinate-wise trimmed mean                          beta (default "0.2")
krum       the single update with the best Krum score            f (default floor((n-3)/2))
multikrum  weighted mean of the m best Krum scores               f, m (default n - f)
normbound  clip every update to max_norm, then fedavg            max_norm (float units, str)
robust     :func:`fl.aggregate.screen.screen`, then fedavg of    see ScreenConfig
           the accepted updates (the default rule)
========== ===================================================== ===========================
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from fl.aggregate.exact import isqrt, sq_norm
from fl.aggregate.fixed import SCALE, AggregationError, check_range, vector_digest
from fl.aggregate.rules import (
    coordinate_median,
    fedavg,
    krum_scores,
    norm_bound,
    trim_count,
    trimmed_mean,
    weighted_mean,
)
from fl.aggregate.screen import ScreenConfig, ScreenContext, screen
from fl.aggregate.types import AggregateResult, Update, Verdict, canonical_order

__all__ = ["DEFAULT_RULE", "RULES", "aggregate", "apply_delta", "score_updates"]

DEFAULT_RULE = "robust"
RULES = ("fedavg", "median", "trimmed", "krum", "multikrum", "normbound", "robust")
_DELTA_BOUND = 1 << 41
_MAX_SCORE = (1 << 63) - 1


def _param_int(params: dict[str, Any], key: str, default: int) -> int:
    v = params.get(key, default)
    if type(v) is not int:
        raise AggregationError(f"parameter {key!r} must be an int, got {v!r}")
    return v


def _validate(updates: Sequence[Update]) -> None:
    if not updates:
        raise AggregationError("no updates to aggregate")
    ids = [u.id for u in updates]
    if len(set(ids)) != len(ids):
        raise AggregationError("two updates share one id")
    size = updates[0].delta.shape
    for u in updates:
        check_range(u.delta, _DELTA_BOUND, f"update {u.id.hex()[:16]}")
        if u.delta.shape != size:
            raise AggregationError(
                f"update {u.id.hex()[:16]} has shape {u.delta.shape}, expected {size}"
            )
        if type(u.weight) is not int or u.weight < 1:
            raise AggregationError(f"update {u.id.hex()[:16]} needs a positive int weight")


TRUST_LEVELS = 256


def _trust_weighted(
    updates: list[np.ndarray], samples: list[int], cos_micro: list[int], trust: bool
) -> np.ndarray:
    """FedAvg with each update's weight = samples x ReLU(cosine to its reference) in 1/256 steps.

    FLTrust (Cao et al. 2021) weights by the ReLU of the cosine to a trusted update; the
    reference here is the leave-one-out median. Falls back to sample weights when no update
    has a positive cosine, or when the larger weights would leave the fixed-point bound.
    """
    if trust:
        levels = [max(0, (c * TRUST_LEVELS) // 10**6) for c in cos_micro]
        w = [s * q for s, q in zip(samples, levels, strict=True)]
        if sum(w) > 0:
            try:
                return weighted_mean(updates, w)
            except AggregationError:
                pass
    return fedavg(updates, samples)


def _default_f(n: int) -> int:
    return max(0, (n - 3) // 2)


def score_updates(
    updates: Sequence[Update], rule: str = DEFAULT_RULE, params: dict[str, Any] | None = None,
    context: ScreenContext | None = None,
) -> list[Verdict]:
    """Per-update verdicts (aligned with ``updates`` as given) under ``rule``."""
    return aggregate(rule, updates, params, context).verdicts


def aggregate(
    rule: str, updates: Sequence[Update], params: dict[str, Any] | None = None,
    context: ScreenContext | None = None,
) -> AggregateResult:
    """Aggregate quantized deltas under ``rule``; bit-identical for any input order on any machine.

    ``context`` (the output layer's range, the local batch size) enables the ``robust``
    screen's checks that need the model's shape; the other rules ignore it."""
    params = dict(params or {})
    ups = list(updates)
    _validate(ups)
    order = canonical_order(ups)
    deltas = [ups[i].delta for i in order]
    weights = [ups[i].weight for i in order]
    n = len(order)
    canon_verdicts: list[Verdict]
    if rule == "fedavg":
        delta = fedavg(deltas, weights)
        canon_verdicts = [Verdict(True, "ok", 0)] * n
    elif rule == "median":
        delta = coordinate_median(deltas)
        canon_verdicts = [Verdict(True, "ok", 0)] * n
    elif rule == "trimmed":
        beta = Fraction(str(params.get("beta", "0.2")))
        trim_count(n, beta)
        delta = trimmed_mean(deltas, beta)
        canon_verdicts = [Verdict(True, "ok", 0)] * n
    elif rule in ("krum", "multikrum"):
        f = _param_int(params, "f", _default_f(n))
        scores = krum_scores(deltas, f)
        m = 1 if rule == "krum" else _param_int(params, "m", n - f)
        if not 1 <= m <= n:
            raise AggregationError(f"m must be in 1..{n}")
        best = set(sorted(range(n), key=lambda i: (scores[i], i))[:m])
        delta = (
            deltas[min(best)].copy()
            if rule == "krum"
            else fedavg([deltas[i] for i in sorted(best)], [weights[i] for i in sorted(best)])
        )
        # Scores in float units squared times 2^24 (the raw value is in 2^-48 units).
        canon_verdicts = [
            Verdict(
                i in best,
                "ok" if i in best else "krum_excluded",
                min(scores[i] >> 24, _MAX_SCORE),
            )
            for i in range(n)
        ]
    elif rule == "normbound":
        if "max_norm" not in params:
            raise AggregationError("normbound needs max_norm")
        max_norm = int(Fraction(str(params["max_norm"])) * SCALE)
        clipped = norm_bound(deltas, max_norm)
        delta = fedavg(clipped, weights)
        canon_verdicts = []
        for d in deltas:
            norm = isqrt(sq_norm(d))
            canon_verdicts.append(Verdict(True, "clipped" if norm > max_norm else "ok", norm))
    elif rule == "robust":
        cfg = ScreenConfig.from_params(params)
        canon_verdicts = screen(deltas, [ups[i].order for i in order], cfg, weights, context)
        kept = [i for i, v in enumerate(canon_verdicts) if v.accepted]
        if kept:
            chosen = [deltas[i] for i in kept]
            if cfg.clip > 0:
                # Bound what any one accepted update can contribute (Sun et al. 2019): a scaled
                # or noisy update that passed the screen moves the model no further than an honest one.
                norms = sorted(isqrt(sq_norm(d)) for d in chosen)
                k = len(norms)
                med = norms[k // 2] if k % 2 else (norms[k // 2 - 1] + norms[k // 2]) // 2
                bound = (med * cfg.clip.numerator) // cfg.clip.denominator
                if bound > 0:
                    chosen = norm_bound(chosen, bound)
            delta = _trust_weighted(chosen, [weights[i] for i in kept],
                                    [canon_verdicts[i].score for i in kept], cfg.trust == 1)  # fmt: skip
        else:
            delta = np.zeros_like(deltas[0])
    else:
        raise AggregationError(f"unknown aggregation rule {rule!r} (known: {', '.join(RULES)})")
    verdicts: list[Verdict] = [Verdict(False, "", 0)] * n
    for pos, i in enumerate(order):
        verdicts[i] = canon_verdicts[pos]
    return AggregateResult(rule, delta, verdicts, vector_digest(delta))


def apply_delta(global_q: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """New quantized global model; rejected (not wrapped) if it leaves the model range."""
    check_range(global_q, 1 << 40, "global model")
    new = global_q + delta
    check_range(new, 1 << 40, "new global model")
    return new

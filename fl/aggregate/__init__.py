"""Deterministic fixed-point aggregation: FedAvg, median, trimmed mean, (Multi-)Krum, norm bound, screening."""

from fl.aggregate.api import DEFAULT_RULE, RULES, aggregate, apply_delta, score_updates
from fl.aggregate.exact import dot, gram, pairwise_sq_dists, sq_dist, sq_norm
from fl.aggregate.fixed import (
    Q_MAX,
    SCALE,
    SCALE_BITS,
    W_MAX,
    AggregationError,
    dequantize,
    quantize,
    quantize_delta,
    vector_digest,
)
from fl.aggregate.rules import (
    coordinate_median,
    fedavg,
    krum,
    krum_scores,
    multi_krum,
    norm_bound,
    trimmed_mean,
)
from fl.aggregate.screen import ScreenConfig, ScreenContext, screen
from fl.aggregate.types import AggregateResult, Update, Verdict, canonical_order

__all__ = [
    "DEFAULT_RULE",
    "Q_MAX",
    "RULES",
    "SCALE",
    "SCALE_BITS",
    "W_MAX",
    "AggregateResult",
    "AggregationError",
    "ScreenConfig",
    "ScreenContext",
    "Update",
    "Verdict",
    "aggregate",
    "apply_delta",
    "canonical_order",
    "coordinate_median",
    "dequantize",
    "dot",
    "fedavg",
    "gram",
    "krum",
    "krum_scores",
    "multi_krum",
    "norm_bound",
    "pairwise_sq_dists",
    "quantize",
    "quantize_delta",
    "score_updates",
    "screen",
    "sq_dist",
    "sq_norm",
    "trimmed_mean",
    "vector_digest",
]

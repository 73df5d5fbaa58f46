"""Value types of aggregation: an update, a verdict on it, and an aggregation result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fl.aggregate.fixed import vector_digest
from ledger.codec import record

__all__ = ["AggregateResult", "Update", "Verdict", "canonical_order"]


@dataclass(frozen=True, eq=False)
class Update:
    """One trainer's quantized delta (new model minus global, 2^-24 units).

    ``id`` is the canonical sort key: the chain uses the update's content id bytes;
    :func:`Update.of` defaults it to the SHA-256 of the delta. ``weight`` is the
    sample count. ``order`` is the submission order (lower = earlier); it decides
    only which of two near-identical updates counts as the copy.
    """

    id: bytes
    delta: npt.NDArray[np.int64]
    weight: int
    order: int = 0

    @classmethod
    def of(
        cls, delta: npt.NDArray[np.int64], weight: int, order: int = 0, id: bytes | None = None
    ) -> Update:
        return cls(vector_digest(delta) if id is None else id, delta, weight, order)


@record(400)
@dataclass(frozen=True)
class Verdict:
    """Accept/reject decision for one update, as recorded on chain.

    ``reason`` is ``"ok"`` or a short code (see docs/fl.md); ``score`` is the
    rule's integer score (for the default screen: cosine similarity to the
    coordinate-wise median, times 10^6, floored).
    """

    accepted: bool
    reason: str
    score: int


@dataclass(frozen=True, eq=False)
class AggregateResult:
    rule: str
    delta: npt.NDArray[np.int64]  # the aggregated delta to add to the quantized global model
    verdicts: list[Verdict]  # aligned with the updates as given (not the canonical order)
    digest: bytes  # SHA-256 of the delta's int64 little-endian bytes

    @property
    def accepted(self) -> list[int]:
        return [i for i, v in enumerate(self.verdicts) if v.accepted]


def canonical_order(updates: list[Update]) -> list[int]:
    """Indices of ``updates`` sorted by id (then submission order); duplicate ids are an error upstream."""
    return sorted(range(len(updates)), key=lambda i: (updates[i].id, updates[i].order))

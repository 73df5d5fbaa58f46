"""Segments of the seeded batch schedule and the hash that commits to each segment's batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fl.train import TrainConfig, batch_schedule
from ledger.codec import encode, sha256

__all__ = [
    "BATCH_DOMAIN",
    "MAX_SCHEDULE_POSITIONS",
    "batch_hash",
    "schedule_for",
    "segment_bounds",
    "schedule_positions",
]

BATCH_DOMAIN = b"fedledger/pol/batches/v1"
# Recomputing a schedule costs one SHA-256 per sample per epoch; bound what a transcript
# can make a verifier do (16M hashes, about 15 s of CPU).
MAX_SCHEDULE_POSITIONS = 1 << 24


def batch_hash(batches: Sequence[npt.NDArray[np.int64]]) -> bytes:
    """``SHA-256(domain || canonical_msgpack([[i, ...], ...]))`` over a segment's index lists."""
    return sha256(BATCH_DOMAIN + encode([[int(i) for i in b] for b in batches]))


def segment_bounds(steps: int, k: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: segments of k steps, the last one possibly shorter."""
    return [(s, min(s + k, steps)) for s in range(0, steps, k)]


def schedule_positions(n: int, config: TrainConfig) -> int:
    return n * config.epochs


def schedule_for(n: int, config: TrainConfig) -> list[npt.NDArray[np.int64]]:
    """The batch schedule a run with ``config`` on ``n`` samples uses (refuses oversize ones)."""
    if schedule_positions(n, config) > MAX_SCHEDULE_POSITIONS:
        raise ValueError(
            f"{config.epochs} epochs over {n} samples exceed the {MAX_SCHEDULE_POSITIONS} "
            "schedule positions a verifier recomputes"
        )
    return batch_schedule(n, config.epochs, config.batch_size, config.seed, config.drop_last)

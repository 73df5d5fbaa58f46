"""Seeded batch schedules as explicit index lists, reproducible in any language.

Epoch e's order sorts the positions 0..n-1 by the key
``SHA-256(b"fedledger/batches/v1" || seed (u64 BE) || e (u32 BE) || i (u64 BE))``
(first 8 bytes, big-endian; ties by i), then cuts it into batches of
``batch_size`` (the last one shorter unless ``drop_last``). Positions refer to
the trainer's local data set, the same positions its data commitment uses.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import numpy.typing as npt

__all__ = ["batch_schedule", "epoch_order"]

_DOMAIN = b"fedledger/batches/v1"


def epoch_order(n: int, seed: int, epoch: int) -> npt.NDArray[np.int64]:
    if not 0 <= seed < 1 << 64 or not 0 <= epoch < 1 << 32:
        raise ValueError("seed must fit in u64 and epoch in u32")
    prefix = _DOMAIN + struct.pack(">QI", seed, epoch)
    keys = np.fromiter(
        (
            int.from_bytes(hashlib.sha256(prefix + struct.pack(">Q", i)).digest()[:8], "big")
            for i in range(n)
        ),
        dtype=np.uint64,
        count=n,
    )
    return np.argsort(keys, kind="stable").astype(np.int64)


def batch_schedule(
    n: int, epochs: int, batch_size: int, seed: int, drop_last: bool = False
) -> list[npt.NDArray[np.int64]]:
    """One index array per optimizer step, all epochs in order."""
    if n < 1 or epochs < 0 or batch_size < 1:
        raise ValueError("need n >= 1, epochs >= 0 and batch_size >= 1")
    out: list[npt.NDArray[np.int64]] = []
    for e in range(epochs):
        order = epoch_order(n, seed, e)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            if drop_last and len(batch) < batch_size:
                break
            out.append(batch)
    return out

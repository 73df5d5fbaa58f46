"""Acceptance 3: the same updates aggregate to the same SHA-256 in separate processes and any order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import random, sys
import numpy as np
from fl.aggregate import ScreenContext, Update, aggregate, quantize

rule, seed, shuffle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
base = rng.normal(0, 0.01, 47_000)
ups = [Update.of(quantize((base + rng.normal(0, 0.01, 47_000)).astype(np.float32)), int(rng.integers(5, 200)), i)
       for i in range(12)]
ups.append(Update.of(quantize((-3 * base).astype(np.float32)), 50, 12))
if shuffle:
    random.Random(shuffle).shuffle(ups)
# the screen's shape-aware checks too: an output layer at the end, local batches of 32
res = aggregate(rule, ups, None, ScreenContext((46_000, 47_000), 32))
import hashlib
from ledger.codec import encode
verdicts = sorted((u.id, v) for u, v in zip(ups, res.verdicts))
print(res.digest.hex(), hashlib.sha256(encode([[i, v] for i, v in verdicts])).hexdigest())
"""

ROOT = Path(__file__).resolve().parents[2]


def _run(rule: str, shuffle: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, rule, "11", str(shuffle)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.mark.parametrize("rule", ["fedavg", "multikrum", "robust"])
def test_aggregate_digest_is_identical_across_processes_and_orders(rule: str) -> None:
    digests = {_run(rule, shuffle) for shuffle in (0, 1, 2)}
    assert len(digests) == 1
    assert len(next(iter(digests))) == 64 * 2 + 1  # aggregate digest, then the verdicts' digest

"""Poisoning and free-riding attacks, for evaluation only (never enabled by default).

Model-update attacks act on float32 deltas (new model minus global model) and may
read the honest deltas of the same round (the omniscient attacker of the ALIE and
IPM papers). ``label_flip`` acts on the attacker's data instead. Names:

* ``sign_flip``: the attacker's own honest delta, negated (and scaled by ``scale``);
* ``gaussian``: the delta replaced by N(0, sigma^2) noise per coordinate;
* ``scaling``: the attacker's own delta times ``factor`` (model replacement, Bagdasaryan et al. 2020);
* ``label_flip``: train honestly on labels mapped y -> C - 1 - y;
* ``alie``: mean - z * std of the honest deltas, z from Baruch et al. (2019), eq. for z_max;
* ``ipm``: -eps times the mean of the honest deltas (Xie et al. 2020, inner-product manipulation);
* ``free_rider``: resubmits the global model (a zero delta);
* ``free_rider_copy``: copies another trainer's delta of the same round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from fl.data.dataset import Dataset

__all__ = ["ATTACKS", "AttackContext", "alie_z", "craft", "flip_labels", "needs_own_training"]

FloatVec = npt.NDArray[np.float32]

ATTACKS = (
    "sign_flip",
    "gaussian",
    "scaling",
    "label_flip",
    "alie",
    "ipm",
    "free_rider",
    "free_rider_copy",
)


@dataclass
class AttackContext:
    honest: Sequence[FloatVec]  # this round's honest deltas (omniscient attacker)
    own: FloatVec | None  # the attacker's own honestly trained delta, if it trained
    num_clients: int  # updates in this round, malicious included
    num_malicious: int  # malicious updates in this round
    rng: np.random.Generator
    params: dict[str, Any] = field(default_factory=dict)


def needs_own_training(attack: str) -> bool:
    return attack in ("sign_flip", "scaling", "label_flip")


def flip_labels(dataset: Dataset) -> Dataset:
    return Dataset(
        dataset.name + "-flipped",
        dataset.x,
        dataset.num_classes - 1 - dataset.y,
        dataset.num_classes,
    )


def alie_z(n: int, f: int) -> float:
    """z_max of Baruch et al.: the largest shift that keeps s = floor(n/2 + 1) - f honest updates farther out."""
    s = n // 2 + 1 - f
    p = (n - s) / n
    return NormalDist().inv_cdf(p) if 0 < p < 1 else 0.0


def _mean_std(
    honest: Sequence[FloatVec],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    h = np.stack([np.asarray(v, dtype=np.float64) for v in honest])
    return h.mean(axis=0), h.std(axis=0)


def craft(attack: str, ctx: AttackContext) -> FloatVec:
    """The malicious delta for ``attack`` in this round."""
    p = ctx.params
    size = len(ctx.own) if ctx.own is not None else len(ctx.honest[0])
    if attack in ("sign_flip", "scaling", "label_flip"):
        if ctx.own is None:
            raise ValueError(f"{attack} needs the attacker's own trained delta")
        own = np.asarray(ctx.own, dtype=np.float64)
        if attack == "sign_flip":
            out = -float(p.get("scale", 1.0)) * own
        elif attack == "scaling":
            out = float(p.get("factor", 10.0)) * own
        else:
            out = own  # the poison is in the training data
    elif attack == "gaussian":
        out = ctx.rng.normal(0.0, float(p.get("sigma", 0.1)), size=size)
    elif attack == "alie":
        mu, sd = _mean_std(ctx.honest)
        z = float(p["z"]) if "z" in p else alie_z(ctx.num_clients, ctx.num_malicious)
        out = mu - z * sd
    elif attack == "ipm":
        mu, _ = _mean_std(ctx.honest)
        out = -float(p.get("eps", 0.5)) * mu
    elif attack == "free_rider":
        out = np.zeros(size)
    elif attack == "free_rider_copy":
        if not ctx.honest:
            out = np.zeros(size)
        else:
            out = np.asarray(ctx.honest[int(ctx.rng.integers(len(ctx.honest)))], dtype=np.float64)
    else:
        raise ValueError(f"unknown attack {attack!r} (known: {', '.join(ATTACKS)})")
    vec = np.asarray(out, dtype=np.float32)
    if not math.isfinite(float(np.abs(vec).max(initial=0.0))):
        raise ValueError(f"{attack} produced a non-finite delta")
    return vec

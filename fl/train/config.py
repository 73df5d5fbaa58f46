"""Local-training hyperparameters, with an exact plain form for task records."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["TrainConfig"]

_FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "clip_norm")


@dataclass(frozen=True)
class TrainConfig:
    """SGD or Adam for ``epochs`` passes in batches; ``clip_norm`` bounds each step's gradient norm.

    The learning rate is constant (no schedule), so any segment of steps can be
    replayed from a checkpoint without knowing where in training it sits.
    """

    optimizer: str = "sgd"  # "sgd" | "adam"
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 32
    clip_norm: float | None = None
    seed: int = 0
    deterministic: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")
        if not 0 <= self.seed < 1 << 64:
            raise ValueError("seed must fit in u64")

    def to_plain(self) -> dict[str, Any]:
        """Canonical-codec form: floats become their shortest round-trip decimal strings."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = repr(float(v)) if f.name in _FLOAT_FIELDS and v is not None else v
        return out

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(plain) - known
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        kwargs = dict(plain)
        for name in _FLOAT_FIELDS:
            if kwargs.get(name) is not None:
                kwargs[name] = float(kwargs[name])
        return cls(**kwargs)

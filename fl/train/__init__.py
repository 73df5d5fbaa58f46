"""Local training (replayable in segments), evaluation and device choice.

``TrainConfig`` imports without torch (the chain validates task hyperparameters with it on
the gossip path, where a multi-second ``import torch`` would stall the node); everything
else loads torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fl.train.config import TrainConfig

if TYPE_CHECKING:
    from fl.train.device import DeviceError, deterministic_mode, select_device
    from fl.train.evaluation import EvalResult, evaluate
    from fl.train.loop import (
        OnStep,
        Progress,
        StepsResult,
        TrainResult,
        export_optimizer_state,
        import_optimizer_state,
        make_optimizer,
        run_steps,
        train_local,
    )
    from fl.train.schedule import batch_schedule, epoch_order

_LAZY = {
    "DeviceError": "device", "deterministic_mode": "device", "select_device": "device",
    "EvalResult": "evaluation", "evaluate": "evaluation",
    "OnStep": "loop", "Progress": "loop", "StepsResult": "loop", "TrainResult": "loop",
    "export_optimizer_state": "loop", "import_optimizer_state": "loop",
    "make_optimizer": "loop", "run_steps": "loop", "train_local": "loop",
    "batch_schedule": "schedule", "epoch_order": "schedule",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'fl.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fl.train.{mod}"), name)


__all__ = [
    "DeviceError",
    "EvalResult",
    "OnStep",
    "Progress",
    "StepsResult",
    "TrainConfig",
    "TrainResult",
    "batch_schedule",
    "deterministic_mode",
    "epoch_order",
    "evaluate",
    "export_optimizer_state",
    "import_optimizer_state",
    "make_optimizer",
    "run_steps",
    "select_device",
    "train_local",
]

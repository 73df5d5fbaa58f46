"""Local training (replayable in segments), evaluation and device choice."""

from fl.train.config import TrainConfig
from fl.train.device import DeviceError, deterministic_mode, select_device
from fl.train.evaluate import EvalResult, evaluate
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

"""The local training loop, built to be replayed in segments (proof of learning).

Training is a sequence of optimizer steps over explicit batch index lists
(:func:`fl.train.schedule.batch_schedule`). :func:`train_local` runs all of them and
calls ``on_step`` after each; :func:`run_steps` runs a given slice of them from a
checkpoint (model weights + exported optimizer state) with exactly the same code,
so in deterministic mode on the same device type the replay reproduces the
original weights bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fl.data.dataset import Dataset
from fl.models.weights import StateDict, state_dict_of
from fl.train.config import TrainConfig
from fl.train.device import deterministic_mode, select_device
from fl.train.schedule import batch_schedule

__all__ = [
    "OnStep",
    "Progress",
    "StepsResult",
    "TrainResult",
    "export_optimizer_state",
    "import_optimizer_state",
    "make_optimizer",
    "run_steps",
    "train_local",
]

OnStep = Callable[[int, npt.NDArray[np.int64], nn.Module, torch.optim.Optimizer], None]
Progress = Callable[[int, int, float], None]

_OPT_KEYS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq", "step")}


@dataclass
class StepsResult:
    state: StateDict  # CPU float32 weights after the last step
    optimizer_state: dict[str, torch.Tensor]  # see export_optimizer_state
    steps: int
    samples: int
    mean_loss: float


@dataclass
class TrainResult(StepsResult):
    seconds: float
    device: str
    schedule: list[npt.NDArray[np.int64]]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    # foreach=False: one kernel path on every device, so CPU replays match CPU training exactly.
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            foreach=False,
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, foreach=False)


def export_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Optimizer state as plain CPU float32 tensors named ``<slot>.<parameter name>``.

    SGD with momentum has ``momentum_buffer``; Adam has ``exp_avg``, ``exp_avg_sq`` and
    ``step`` (a scalar). Before the first step the dict is empty. Safe to store as safetensors.
    """
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        for slot, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{slot}.{name}"] = (
                    value.detach().to("cpu", torch.float32, copy=True).contiguous()
                )
    return out


def import_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, torch.Tensor], kind: str
) -> None:
    """Load what :func:`export_optimizer_state` produced; unknown or misshaped entries raise ValueError."""
    params = dict(model.named_parameters())
    slots = _OPT_KEYS[kind]
    per_param: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        slot, _, name = key.partition(".")
        if slot not in slots or name not in params:
            raise ValueError(f"optimizer state entry {key!r} does not belong to this {kind} model")
        want = () if slot == "step" else tuple(params[name].shape)
        if tuple(value.shape) != want:
            raise ValueError(
                f"optimizer state {key!r} has shape {tuple(value.shape)}, expected {want}"
            )
        per_param.setdefault(name, {})[slot] = value
    optimizer.state.clear()
    for name, entries in per_param.items():
        if set(entries) != set(slots):
            raise ValueError(f"optimizer state for {name!r} needs {slots}, got {sorted(entries)}")
        p = params[name]
        optimizer.state[p] = {
            s: v.to(p.device, torch.float32).clone() if s != "step" else v.to(torch.float32).clone()
            for s, v in entries.items()
        }


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    sel: torch.Tensor,
    clip_norm: float | None,
) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x.index_select(0, sel)), y.index_select(0, sel))
    loss.backward()
    if clip_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm, foreach=False)
    optimizer.step()
    # The loss stays on the device: reading it here would wait for the GPU every step.
    return loss.detach()


def _tensors(dataset: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(dataset.x).to(device), torch.from_numpy(dataset.y).to(device)


def _on_device(
    batches: Sequence[npt.NDArray[np.int64]], device: torch.device
) -> tuple[torch.Tensor, ...]:
    """All batch indices in one host-to-device copy (one per step would synchronize each step)."""
    if not batches:
        return ()
    flat = torch.from_numpy(np.concatenate([np.asarray(b, dtype=np.int64) for b in batches]))
    return flat.to(device).split([len(b) for b in batches])


def _progress_every(total: int) -> int:
    """Report about 50 times per run: each report reads the loss, which waits for the GPU."""
    return max(1, total // 50)


def _check_batches(batches: Sequence[npt.NDArray[np.int64]], n: int) -> None:
    for i, b in enumerate(batches):
        if b.ndim != 1 or len(b) == 0 or int(b.min()) < 0 or int(b.max()) >= n:
            raise ValueError(f"batch {i} has indices outside the local data set of {n} samples")


def train_local(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    device: str | torch.device | None = "auto",
    *,
    schedule: Sequence[npt.NDArray[np.int64]] | None = None,
    optimizer_state: dict[str, torch.Tensor] | None = None,
    on_step: OnStep | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` and return the final weights and metrics.

    The batch schedule is ``batch_schedule(len(dataset), epochs, batch_size, seed)``
    unless given. ``on_step(step, batch_indices, model, optimizer)`` runs after step
    ``step`` (0-based) has been applied, so after it the model has taken ``step + 1``
    steps; a PoL recorder checkpoints there. ``progress(done, total, loss)`` follows it about
    50 times per run and after the last step (each call reads the loss from the device).
    """
    dev = select_device(device)
    if schedule is None:
        schedule = batch_schedule(
            len(dataset), config.epochs, config.batch_size, config.seed, config.drop_last
        )
    _check_batches(schedule, len(dataset))
    started = time.perf_counter()
    with deterministic_mode(config.deterministic, dev):
        model.to(dev).train()
        optimizer = make_optimizer(model, config)
        if optimizer_state:
            import_optimizer_state(model, optimizer, optimizer_state, config.optimizer)
        x, y = _tensors(dataset, dev)
        total_loss, samples = torch.zeros((), device=dev), 0
        every, total = _progress_every(len(schedule)), len(schedule)
        for step, (idx, sel) in enumerate(zip(schedule, _on_device(schedule, dev), strict=True)):
            loss = _step(model, optimizer, x, y, sel, config.clip_norm)
            total_loss += loss * len(idx)
            samples += len(idx)
            if on_step is not None:
                on_step(step, idx, model, optimizer)
            if progress is not None and ((step + 1) % every == 0 or step + 1 == total):
                progress(step + 1, total, float(loss))
        opt_state = export_optimizer_state(model, optimizer)
    return TrainResult(
        state=state_dict_of(model),
        optimizer_state=opt_state,
        steps=len(schedule),
        samples=samples,
        mean_loss=float(total_loss) / samples if samples else 0.0,
        seconds=time.perf_counter() - started,
        device=str(dev),
        schedule=list(schedule),
    )


def run_steps(
    model: nn.Module,
    optimizer_state: dict[str, torch.Tensor] | None,
    dataset: Dataset,
    batch_index_lists: Sequence[npt.NDArray[np.int64]],
    hparams: TrainConfig,
    device: str | torch.device | None = "cpu",
) -> StepsResult:
    """Re-execute the given steps from a checkpoint: ``model`` holds its weights, plus its optimizer state.

    Uses the same step function as :func:`train_local`, so with ``hparams.deterministic``
    the result equals the original run's weights after those steps, bit for bit, on the
    same device type. ``model`` is updated in place.
    """
    dev = select_device(device)
    batches = [np.asarray(b, dtype=np.int64) for b in batch_index_lists]
    _check_batches(batches, len(dataset))
    with deterministic_mode(hparams.deterministic, dev):
        model.to(dev).train()
        optimizer = make_optimizer(model, hparams)
        if optimizer_state:
            import_optimizer_state(model, optimizer, optimizer_state, hparams.optimizer)
        x, y = _tensors(dataset, dev)
        total_loss, samples = torch.zeros((), device=dev), 0
        for idx, sel in zip(batches, _on_device(batches, dev), strict=True):
            total_loss += _step(model, optimizer, x, y, sel, hparams.clip_norm) * len(idx)
            samples += len(idx)
        opt_state = export_optimizer_state(model, optimizer)
    return StepsResult(
        state=state_dict_of(model),
        optimizer_state=opt_state,
        steps=len(batches),
        samples=samples,
        mean_loss=float(total_loss) / samples if samples else 0.0,
    )

"""Model evaluation: accuracy and mean cross-entropy loss on a data set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fl.data.dataset import Dataset
from fl.train.device import select_device

__all__ = ["EvalResult", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    correct: int
    n: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    device: str | torch.device | None = "auto",
    batch_size: int = 1024,
) -> EvalResult:
    dev = select_device(device)
    model.to(dev).eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(dataset), batch_size):
        x = torch.from_numpy(dataset.x[start : start + batch_size]).to(dev)
        y = torch.from_numpy(dataset.y[start : start + batch_size]).to(dev)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    n = len(dataset)
    model.train()
    return EvalResult(correct / n if n else 0.0, loss_sum / n if n else 0.0, correct, n)

"""A task's public validation set as bytes: safetensors with ``x`` (float32) and ``y`` (int64).

TaskCreate's ``validation_cid`` names such an object in the content store; every validator
evaluates each round's updates on it with exact integer inference (ADR 0404), so it must
parse the same everywhere and be small: at most ``MAX_SAMPLES`` samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fl.data.dataset import Dataset, DatasetError

__all__ = [
    "MAX_SAMPLES",
    "draw_validation",
    "validation_for_model",
    "validation_from_bytes",
    "validation_to_bytes",
]

MAX_SAMPLES = 4096
_MAX_BYTES = 64 << 20


def draw_validation(dataset: Dataset, samples: int, seed: int | Sequence[int] = 0) -> Dataset:
    """``samples`` of ``dataset`` drawn without replacement (seeded), in dataset order."""
    if not 1 <= samples <= len(dataset):
        raise DatasetError(f"{dataset.name} has {len(dataset)} samples, cannot draw {samples}")
    pick = np.sort(np.random.default_rng(seed).choice(len(dataset), samples, replace=False))
    return dataset.subset(pick, f"{dataset.name}-validation")


def validation_to_bytes(dataset: Dataset) -> bytes:
    """The canonical bytes of ``dataset`` as a validation set."""
    from safetensors.numpy import save

    if not 1 <= len(dataset) <= MAX_SAMPLES:
        raise DatasetError(f"a validation set holds 1 to {MAX_SAMPLES} samples, not {len(dataset)}")
    return save({"x": np.ascontiguousarray(dataset.x), "y": np.ascontiguousarray(dataset.y)})


def validation_from_bytes(
    data: bytes, sample_shape: tuple[int, ...], num_classes: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Parse and check a validation set for a model of ``sample_shape`` inputs and
    ``num_classes`` outputs; any defect is a :class:`DatasetError`."""
    from safetensors.numpy import load

    if len(data) > _MAX_BYTES:
        raise DatasetError(f"validation set of {len(data)} bytes exceeds {_MAX_BYTES}")
    try:
        tensors = load(bytes(data))
    except Exception as e:  # safetensors raises several types on garbage
        raise DatasetError(f"validation set is not valid safetensors: {e}") from e
    if sorted(tensors) != ["x", "y"]:
        raise DatasetError(f"validation set needs tensors x and y, has {sorted(tensors)}")
    x, y = tensors["x"], tensors["y"]
    if x.dtype != np.float32 or y.dtype != np.int64:
        raise DatasetError(f"validation set x must be float32 and y int64, not {x.dtype}, {y.dtype}")
    if y.ndim != 1 or not 1 <= len(y) <= MAX_SAMPLES:
        raise DatasetError(f"validation set y must hold 1 to {MAX_SAMPLES} labels, has {y.shape}")
    # As the training data: a sample of the model's input size in another shape (the 1x8x8
    # digits for the MLP's 64 inputs) is reshaped in row-major order.
    if x.ndim < 1 or x.shape[0] != len(y) or (
        int(np.prod(x.shape[1:])) != int(np.prod(sample_shape))
    ):
        raise DatasetError(f"validation set x has shape {x.shape}, expected {(len(y), *sample_shape)}")
    x = x.reshape(len(y), *sample_shape)
    if not np.isfinite(x).all():
        raise DatasetError("validation set x contains NaN or infinity")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DatasetError(f"validation set label outside 0..{num_classes - 1}")
    return x, y


def validation_for_model(
    data: bytes, model_id: str, model_config: Mapping[str, Any]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """:func:`validation_from_bytes` for a registry model's input shape and class count."""
    from fl.models import input_shape, resolve_config

    config = resolve_config(model_id, dict(model_config))
    return validation_from_bytes(data, input_shape(model_id, config), int(config["num_classes"]))

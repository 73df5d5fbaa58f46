"""Weights as bytes and vectors: safetensors (never pickle) and a stable flat order.

Parameter order: the state dict's entries sorted by name (UTF-8 byte order), each
tensor flattened in row-major (C) order. ``flatten`` concatenates them into one
float32 vector; ``unflatten`` is its inverse against a template state dict. This
order is what aggregation, PoL checkpoints and HE packing index into; it depends
only on parameter names and shapes, not on module registration order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "ModelFormatError",
    "check_compatible",
    "flatten",
    "from_safetensors",
    "num_params",
    "output_weight_range",
    "parameter_order",
    "state_dict_of",
    "to_safetensors",
    "unflatten",
]

StateDict = dict[str, torch.Tensor]

# A 1M-parameter float32 model is 4 MB; 1 GiB bounds anything a task could use.
MAX_SAFETENSORS_BYTES = 1 << 30


class ModelFormatError(ValueError):
    """Weights bytes are not valid safetensors or do not match the model's shapes."""


def state_dict_of(model: torch.nn.Module) -> StateDict:
    """A detached CPU float32 copy of the model's state dict."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def parameter_order(state: Mapping[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(state[k].shape)) for k in sorted(state, key=lambda s: s.encode("utf-8"))]


def output_weight_range(model: torch.nn.Module) -> tuple[int, int]:
    """[start, end) of the output layer's weight (the last ``nn.Linear``) in the flat order.

    The robustness screen reads sign statistics there: behind a ReLU and a softmax, every
    honest client moves most of that matrix the same way (see docs/fl.md)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ModelFormatError("the model has no linear output layer")
    target = f"{linears[-1]}.weight" if linears[-1] else "weight"
    offset = 0
    for name, shape in parameter_order(model.state_dict()):
        n = int(np.prod(shape, dtype=np.int64))
        if name == target:
            return offset, offset + n
        offset += n
    raise ModelFormatError(f"{target} is not in the state dict")


def num_params(state: Mapping[str, torch.Tensor]) -> int:
    return sum(int(v.numel()) for v in state.values())


def to_safetensors(state: Mapping[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    tensors = {}
    for k, v in state.items():
        if v.dtype != torch.float32:
            raise ModelFormatError(f"{k}: only float32 tensors are stored, got {v.dtype}")
        tensors[k] = v.detach().to("cpu").contiguous()
    return bytes(save(tensors))


def from_safetensors(data: bytes, max_size: int = MAX_SAFETENSORS_BYTES) -> StateDict:
    """Parse safetensors bytes (float32 tensors only); any defect is a ModelFormatError."""
    from safetensors.torch import load

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise ModelFormatError(f"{len(data)} bytes exceeds the {max_size}-byte limit")
    if len(data) < 8:
        raise ModelFormatError("too short for a safetensors header")
    try:
        state = load(bytes(data))
    except Exception as e:  # safetensors raises SafetensorError and others on garbage
        raise ModelFormatError(f"invalid safetensors data: {e}") from e
    # sorted by name (UTF-8 bytes, the documented parameter order): the loader's own order
    # depends on the process's hashing, and errors must read the same on every validator
    state = {k: state[k] for k in sorted(state, key=lambda n: n.encode())}
    for k, v in state.items():
        if v.dtype != torch.float32:
            raise ModelFormatError(f"{k}: expected float32, got {v.dtype}")
        if not bool(torch.isfinite(v).all()):
            raise ModelFormatError(f"{k}: contains NaN or infinity")
    return state


def check_compatible(
    state: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor]
) -> None:
    """Raise ModelFormatError unless ``state`` has exactly the template's names and shapes."""
    if set(state) != set(template):
        missing, extra = sorted(set(template) - set(state)), sorted(set(state) - set(template))
        raise ModelFormatError(f"tensor names differ: missing {missing}, unexpected {extra}")
    for k, t in template.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise ModelFormatError(f"{k}: shape {tuple(state[k].shape)}, expected {tuple(t.shape)}")


def flatten(state: Mapping[str, torch.Tensor]) -> npt.NDArray[np.float32]:
    parts = [
        state[k].detach().to("cpu", torch.float32).reshape(-1).numpy()
        for k, _ in parameter_order(state)
    ]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def unflatten(vec: npt.ArrayLike, template: Mapping[str, torch.Tensor]) -> StateDict:
    v = np.asarray(vec)
    total = num_params(template)
    if v.ndim != 1 or v.shape[0] != total:
        raise ModelFormatError(f"vector of shape {v.shape} does not fit {total} parameters")
    out: StateDict = {}
    offset = 0
    for name, shape in parameter_order(template):
        n = int(np.prod(shape, dtype=np.int64))
        piece = np.array(v[offset : offset + n], dtype=np.float32).reshape(shape)
        out[name] = torch.from_numpy(piece)
        offset += n
    return out

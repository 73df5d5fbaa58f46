"""Model registry, weights serialization (safetensors) and the flat parameter order.

The registry's metadata (ids, configs, input shapes) imports without torch: the chain
checks task specs with it on the gossip path. Building models and handling weights loads
torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fl.models.registry import (
    ModelConfigError,
    build_model,
    default_config,
    input_shape,
    model_ids,
    resolve_config,
)

if TYPE_CHECKING:
    from fl.models.weights import (
        ModelFormatError,
        StateDict,
        check_compatible,
        flatten,
        from_safetensors,
        num_params,
        output_weight_range,
        parameter_order,
        state_dict_of,
        to_safetensors,
        unflatten,
    )

_WEIGHTS = {"ModelFormatError", "StateDict", "check_compatible", "flatten", "from_safetensors",
            "num_params", "output_weight_range", "parameter_order", "state_dict_of",
            "to_safetensors", "unflatten"}


def __getattr__(name: str) -> Any:
    if name not in _WEIGHTS:
        raise AttributeError(f"module 'fl.models' has no attribute {name!r}")
    return getattr(importlib.import_module("fl.models.weights"), name)


__all__ = [
    "ModelConfigError",
    "ModelFormatError",
    "StateDict",
    "build_model",
    "check_compatible",
    "default_config",
    "flatten",
    "from_safetensors",
    "input_shape",
    "model_ids",
    "num_params",
    "output_weight_range",
    "parameter_order",
    "resolve_config",
    "state_dict_of",
    "to_safetensors",
    "unflatten",
]

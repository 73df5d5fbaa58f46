"""Model registry, weights serialization (safetensors) and the flat parameter order."""

from fl.models.registry import (
    ModelConfigError,
    build_model,
    default_config,
    input_shape,
    model_ids,
    resolve_config,
)
from fl.models.weights import (
    ModelFormatError,
    StateDict,
    check_compatible,
    flatten,
    from_safetensors,
    num_params,
    parameter_order,
    state_dict_of,
    to_safetensors,
    unflatten,
)

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
    "parameter_order",
    "resolve_config",
    "state_dict_of",
    "to_safetensors",
    "unflatten",
]

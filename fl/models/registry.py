"""Model registry: a model id plus a small int-only config (recorded on chain) builds a module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads on first build: the chain checks configs on the gossip path
    from torch import nn

__all__ = ["ModelConfigError", "ModelSpec", "build_model", "default_config", "model_ids"]


class ModelConfigError(ValueError):
    """Unknown model id, unknown config key, or a config value of the wrong type."""


@dataclass(frozen=True)
class ModelSpec:
    defaults: dict[str, Any]
    build: Callable[[dict[str, Any]], nn.Module]
    input_shape: Callable[[dict[str, Any]], tuple[int, ...]]


_REGISTRY: dict[str, ModelSpec] = {
    "mlp": ModelSpec(
        {"input_dim": 64, "hidden": [64], "num_classes": 10},
        lambda c: _nets().MLP(c["input_dim"], c["hidden"], c["num_classes"]),
        lambda c: (c["input_dim"],),
    ),
    "mnist_cnn": ModelSpec(
        {"in_channels": 1, "channels": [16, 32], "hidden": 64, "num_classes": 10, "image_size": 28},
        lambda c: _nets().MnistCNN(
            c["in_channels"], c["channels"], c["hidden"], c["num_classes"], c["image_size"]
        ),
        lambda c: (c["in_channels"], c["image_size"], c["image_size"]),
    ),
    "cifar_cnn": ModelSpec(
        {"channels": [32, 64, 64], "hidden": 128, "num_classes": 10},
        lambda c: _nets().CifarCNN(c["channels"], c["hidden"], c["num_classes"]),
        lambda c: (3, 32, 32),
    ),
}

_LIST_LENGTHS = {
    ("mnist_cnn", "channels"): (2, 2),
    ("cifar_cnn", "channels"): (1, 5),
    ("mlp", "hidden"): (0, 8),
}


def _nets() -> Any:
    from fl.models import nets

    return nets


def model_ids() -> list[str]:
    return sorted(_REGISTRY)


def _spec(model_id: str) -> ModelSpec:
    spec = _REGISTRY.get(model_id)
    if spec is None:
        raise ModelConfigError(f"unknown model id {model_id!r} (known: {', '.join(model_ids())})")
    return spec


def default_config(model_id: str) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, list) else v for k, v in _spec(model_id).defaults.items()}


def resolve_config(model_id: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``config``; every value a positive int or a list of them."""
    full = default_config(model_id)
    for key, value in (config or {}).items():
        if key not in full:
            raise ModelConfigError(
                f"{model_id}: unknown config key {key!r} (known: {sorted(full)})"
            )
        expect_list = isinstance(full[key], list)
        items = value if expect_list and isinstance(value, list) else [value]
        if (expect_list and not isinstance(value, list)) or not all(
            type(v) is int and 0 < v <= 1 << 20 for v in items
        ):
            kind = "a list of positive ints" if expect_list else "a positive int"
            raise ModelConfigError(f"{model_id}: config {key!r} must be {kind}, got {value!r}")
        lo, hi = _LIST_LENGTHS.get((model_id, key), (0, 1 << 10))
        if expect_list and not lo <= len(value) <= hi:
            raise ModelConfigError(f"{model_id}: config {key!r} needs {lo}..{hi} entries")
        full[key] = list(value) if expect_list else value
    return full


def input_shape(model_id: str, config: dict[str, Any] | None = None) -> tuple[int, ...]:
    """Shape of one input sample (without the batch dimension)."""
    return _spec(model_id).input_shape(resolve_config(model_id, config))


def build_model(model_id: str, config: dict[str, Any] | None = None, seed: int = 0) -> nn.Module:
    """Build ``model_id`` with initial weights drawn from ``seed`` (deterministic on CPU).

    The global torch RNG is left untouched (the draw happens in a forked RNG scope).
    """
    import torch

    spec = _spec(model_id)
    cfg = resolve_config(model_id, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = spec.build(cfg)
        except ValueError as e:
            raise ModelConfigError(f"{model_id}: {e}") from e
    return model.float()

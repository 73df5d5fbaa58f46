"""Checkpoints as content objects: weights and optimizer state as safetensors, plus exact norms."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch

from fl.aggregate import AggregationError, quantize, sq_norm
from fl.models import ModelFormatError, StateDict, flatten, from_safetensors, to_safetensors
from fl.pol.errors import MissingContent, PolError
from fl.pol.sink import ContentSink

__all__ = [
    "fetch",
    "load_state",
    "norm_q",
    "optimizer_slots",
    "put_state",
    "quantized",
]

IntVec = npt.NDArray[np.int64]


def put_state(sink: ContentSink, state: Mapping[str, torch.Tensor]) -> bytes:
    """Store a state dict (weights or exported optimizer state) as safetensors; returns the id."""
    return sink.put(to_safetensors(state))


def fetch(sink: ContentSink, cid: bytes, what: str) -> bytes:
    """``sink.get`` with every failure turned into MissingContent / PolError naming ``what``."""
    try:
        data = sink.get(cid)
    except KeyError as e:
        raise MissingContent(f"{what} {bytes(cid).hex()} does not resolve") from e
    except Exception as e:  # a store may raise its own errors (corruption, closed)
        raise PolError(f"{what} {bytes(cid).hex()} could not be read: {e}") from e
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PolError(f"{what} {bytes(cid).hex()}: the sink returned {type(data).__name__}")
    return bytes(data)


def load_state(sink: ContentSink, cid: bytes, what: str) -> StateDict:
    """Fetch and parse a safetensors state; a defect is a PolError naming ``what``.

    Entries come back sorted by name: safetensors returns them in a per-process hash
    order, and anything that iterates them (error messages included) must not depend on it.
    """
    try:
        state = from_safetensors(fetch(sink, cid, what))
    except ModelFormatError as e:
        raise PolError(f"{what} is not valid weights: {e}") from e
    return dict(sorted(state.items()))


def quantized(state: Mapping[str, torch.Tensor], what: str = "weights") -> IntVec:
    """The flat parameter vector in 2^-24 fixed point (what aggregation uses)."""
    try:
        return quantize(flatten(state))
    except AggregationError as e:
        raise PolError(f"{what}: {e}") from e


def norm_q(delta: IntVec) -> int:
    """Floor of the exact L2 norm of an int64 vector."""
    return math.isqrt(sq_norm(delta))


def optimizer_slots(state: Mapping[str, torch.Tensor]) -> dict[str, npt.NDArray[np.float32]]:
    """Exported optimizer state grouped by slot, each slot flattened in parameter order."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        slot, _, name = key.partition(".")
        groups.setdefault(slot, {})[name] = value
    return {slot: flatten(entries) for slot, entries in sorted(groups.items())}

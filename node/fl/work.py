"""The CPU/GPU-heavy FL work of a node, as plain functions for worker threads.

Nothing here touches the content store, the chain or trio: inputs are bytes and records,
outputs are bytes and records, so the trainer and verifier services can run these with
``trio.to_thread.run_sync`` and keep the event loop responsive. Everything a validator
computes here is deterministic (docs/fl-chain.md section 5).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fl.aggregate import (
    AggregationError,
    ScreenContext,
    Update,
    aggregate,
    apply_delta,
    dequantize,
    quantize,
    quantize_delta,
)
from fl.data import Dataset, data_commitment
from fl.models import (
    build_model,
    flatten,
    from_safetensors,
    output_weight_range,
    to_safetensors,
    unflatten,
)
from fl.pol import PolVerdict, make_reveal, record_training, select_segments, verify
from fl.train import TrainConfig
from node.fl.sink import BufferedSink, PrefetchedSink


@dataclass(frozen=True)
class TaskModel:
    """What a task fixes about training (from its TaskSpec)."""

    model_id: str
    model_config: dict[str, Any]
    train: dict[str, Any]  # TrainConfig.to_plain()
    pol_k: int


@dataclass
class TrainOutput:
    transcript_cid: bytes
    update_cid: bytes
    samples: int
    data_root: bytes
    mean_loss: float
    seconds: float
    device: str
    sink: BufferedSink
    transcript: Any


def load_state(data: bytes) -> dict[str, Any]:
    return from_safetensors(data)


def train_round(
    task: TaskModel,
    global_bytes: bytes,
    global_cid: bytes,
    dataset: Dataset,
    round_id: bytes,
    chunk_size: int,
    device: str = "auto",
    progress: Callable[[int, int, float], None] | None = None,
    transform_update: Callable[[dict[str, Any], dict[str, Any]], bytes] | None = None,
) -> TrainOutput:
    """Train on the local data from the round's global model and record the PoL transcript.

    ``transform_update(global_state, trained_state) -> bytes`` replaces the submitted object
    (DP noise, HE encryption); by default the trained model itself is the update.
    """
    t0 = time.perf_counter()
    model = build_model(task.model_id, task.model_config)
    gstate = load_state(global_bytes)
    model.load_state_dict(gstate)
    cfg = TrainConfig.from_plain(task.train)
    sink = BufferedSink(chunk_size)
    sink.objects[bytes(global_cid)] = global_bytes
    result, transcript_cid, transcript = record_training(
        model, dataset, cfg, round_id=round_id, k=task.pol_k, sink=sink,
        model_id=task.model_id, model_config=task.model_config, start_cid=bytes(global_cid),
        device=device, progress=progress,
    )
    update_cid = bytes(transcript.update_cid)
    if transform_update is not None:
        update_cid = sink.put(transform_update(gstate, result.state))
    return TrainOutput(transcript_cid, update_cid, len(dataset), data_commitment(dataset),
                       float(result.mean_loss), time.perf_counter() - t0, str(result.device),
                       sink, transcript)


def reveal_for(transcript: Any, dataset: Dataset, seed: bytes, chunk_size: int) -> tuple[bytes,
                                                                                      BufferedSink]:
    """The reveal object of the segments the verification seed picks (replay policy)."""
    sink = BufferedSink(chunk_size)
    segments = select_segments(transcript, seed)
    cid = make_reveal(transcript, dataset, segments, sink)
    return cid, sink


def verify_submission(
    task: TaskModel,
    transcript_cid: bytes,
    sink: PrefetchedSink,
    *,
    seed: bytes,
    policy: str,
    global_cid: bytes,
    round_id: bytes,
    update_cid: bytes | None,
    reveal_cid: bytes | None,
    data_root: bytes,
    samples: int,
) -> PolVerdict:
    """Verify one submission's proof of learning (never raises)."""
    return verify(
        transcript_cid, sink, seed=seed, policy=policy, expected_start_cid=global_cid,
        expected_round_id=round_id, update_cid=update_cid, reveal_cid=reveal_cid,
        device="cpu", expected_model=task.model_id, expected_model_config=task.model_config,
        expected_train=task.train, expected_data_root=data_root,
        expected_dataset_size=samples, expected_k=task.pol_k,
    )


@dataclass
class Candidate:
    """A submission that passed the content and PoL checks, ready to be scored."""

    trainer: bytes
    update_cid: bytes
    samples: int
    update_bytes: bytes
    order: int


@dataclass
class RoundComputation:
    verdicts: dict[bytes, tuple[bool, str, int]]  # trainer -> (accepted, reason, score)
    digest: bytes
    new_model: bytes  # canonical safetensors of the new global model
    errors: dict[bytes, str] = field(default_factory=dict)  # trainer -> unusable update


def screen_context(model_id: str, model_config: Mapping[str, Any], train: Mapping[str, Any],
                   validation: bytes | None = None,
                   global_bytes: bytes | None = None) -> ScreenContext:
    """The robust screen's view of a task: its model's output layer, its local batch size and,
    when the task names a validation set (``validation``, with the round's global model
    ``global_bytes``), the exact validation loss (ADR 0404).

    A validation set that does not parse or does not fit the model raises
    :class:`fl.data.DatasetError`; it does so on every validator alike (the same bytes), so
    the verifier then screens without it rather than never closing the task's rounds."""
    from fl.data.validation import validation_for_model
    from fl.models import resolve_config
    from fl.models.exact import ExactModel, ValidationLoss

    model = build_model(model_id, dict(model_config))
    ctx = ScreenContext(output_weight_range(model), int(train.get("batch_size", 0)))
    if validation is None or global_bytes is None:
        return ctx
    config = resolve_config(model_id, dict(model_config))
    x, y = validation_for_model(validation, model_id, config)
    gq = quantize(flatten(load_state(global_bytes)))
    loss = ValidationLoss(ExactModel(model_id, config), gq, x, y)
    return dataclasses.replace(ctx, validation=loss, label_directions=loss.label_directions)


def aggregate_round(
    rule: str,
    params: Mapping[str, Any],
    global_bytes: bytes,
    candidates: Sequence[Candidate],
    context: ScreenContext | None = None,
) -> RoundComputation:
    """Score and aggregate the candidates; the new global model, bit-identical everywhere."""
    gstate = load_state(global_bytes)
    gvec = flatten(gstate)
    updates: list[Update] = []
    kept: list[Candidate] = []
    errors: dict[bytes, str] = {}
    for c in candidates:
        try:
            st = load_state(c.update_bytes)
            if set(st) != set(gstate) or any(tuple(st[k].shape) != tuple(gstate[k].shape)
                                             for k in gstate):
                raise AggregationError("update does not have the model's tensors")
            delta = quantize_delta(flatten(st), gvec)
            updates.append(Update(bytes(c.update_cid), delta, c.samples, c.order))
            kept.append(c)
        except Exception as e:  # a malformed update is the trainer's fault, proven
            errors[c.trainer] = f"bad_update: {type(e).__name__}: {e}"[:200]
    verdicts: dict[bytes, tuple[bool, str, int]] = {}
    if not updates:
        return RoundComputation({}, b"", to_safetensors(gstate), errors)
    res = aggregate(rule, updates, dict(params), context)
    for c, v in zip(kept, res.verdicts, strict=True):
        verdicts[c.trainer] = (v.accepted, v.reason, v.score)
    new_q = apply_delta(quantize(gvec), res.delta)
    new_state = unflatten(dequantize(new_q), gstate)
    return RoundComputation(verdicts, res.digest, to_safetensors(new_state), errors)


def infer(model_id: str, model_config: dict[str, Any], model_bytes: bytes,
          inputs: np.ndarray) -> tuple[list[int], list[list[float]]]:
    """Class predictions and probabilities of the committed model for ``inputs``."""
    import torch

    model = build_model(model_id, model_config)
    model.load_state_dict(load_state(model_bytes))
    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(inputs, dtype=torch.float32)
        probs = torch.softmax(model(x), dim=1)
    return probs.argmax(dim=1).tolist(), [[round(float(p), 6) for p in row] for row in probs]

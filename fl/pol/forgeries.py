"""Evaluation-only PoL forgeries: what a dishonest trainer could submit instead of a real transcript.

Each forger knows everything public (the global model, the schedule, the hyperparameters)
and writes a *consistent* transcript: recomputed weight-change norms and the schedule's
batch hashes, so only the checks that target the forgery can reject it. Used by the tests
and by ``benchmarks/pol.py`` (forgery distances for the tolerance calibration).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fl.data import Dataset, data_commitment
from fl.models import StateDict, build_model
from fl.pol.checkpoint import load_state, norm_q, put_state, quantized
from fl.pol.recorder import record_training
from fl.pol.records import Segment, Transcript
from fl.pol.sink import ContentSink
from fl.train import TrainConfig
from ledger.codec import encode

__all__ = [
    "FORGERIES",
    "HonestRun",
    "honest_run",
    "interpolated",
    "other_data",
    "other_start",
    "random_checkpoints",
    "rebuild",
    "scaled_final",
    "skipped",
]

Checkpoint = tuple[StateDict, StateDict]  # (weights, optimizer state)


@dataclass
class HonestRun:
    """An honest trainer's round: its data, config, sink contents and transcript."""

    sink: ContentSink
    dataset: Dataset
    cfg: TrainConfig
    model_id: str
    round_id: bytes
    transcript: Transcript
    transcript_cid: bytes
    start_state: StateDict
    init_seed: int = 0

    def checkpoints(self) -> list[Checkpoint]:
        return [
            (
                load_state(self.sink, s.model_cid, "weights"),
                load_state(self.sink, s.optim_cid, "optimizer state"),
            )
            for s in self.transcript.segments
        ]


def honest_run(
    sink: ContentSink,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    model_id: str = "mlp",
    round_id: bytes = b"\x01" * 32,
    k: int = 4,
    init_seed: int = 0,
) -> HonestRun:
    model = build_model(model_id, seed=init_seed)
    start = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
    _, cid, t = record_training(
        model, dataset, cfg, round_id=round_id, k=k, sink=sink, model_id=model_id, device="cpu"
    )
    return HonestRun(sink, dataset, cfg, model_id, round_id, t, cid, start, init_seed)


def rebuild(
    run: HonestRun, checkpoints: Sequence[Checkpoint], **fields: object
) -> tuple[Transcript, bytes]:
    """A transcript over forged checkpoints with consistent norms and the schedule's batch hashes."""
    t = run.transcript
    sink = run.sink
    start_cid = fields.get("start_cid", t.start_cid)
    assert isinstance(start_cid, bytes)
    prev = quantized(load_state(sink, start_cid, "start model"))
    segs = []
    for old, (w, opt) in zip(t.segments, checkpoints, strict=True):
        q = quantized(w)
        segs.append(
            Segment(
                old.start,
                old.end,
                put_state(sink, w),
                put_state(sink, opt),
                old.batch_hash,
                norm_q(q - prev),
            )
        )
        prev = q
    fields.setdefault("update_cid", segs[-1].model_cid)
    forged = dataclasses.replace(t, segments=tuple(segs), **fields)  # type: ignore[arg-type]
    return forged, sink.put(encode(forged))


def _lerp(a: StateDict, b: StateDict, s: float) -> StateDict:
    return {k: (a[k] + s * (b[k] - a[k])).to(torch.float32).contiguous() for k in a}


def random_checkpoints(
    run: HonestRun, which: Sequence[int] | None = None, seed: int = 0
) -> tuple[Transcript, bytes]:
    """Checkpoints replaced by random weights of the honest weights' per-tensor scale."""
    g = torch.Generator().manual_seed(seed)
    cks = run.checkpoints()
    for i in range(len(cks)) if which is None else which:
        w, opt = cks[i]
        cks[i] = ({k: torch.randn(v.shape, generator=g) * v.std() for k, v in w.items()}, opt)
    return rebuild(run, cks)


def interpolated(run: HonestRun, final: StateDict | None = None) -> tuple[Transcript, bytes]:
    """No training: checkpoints on the straight line from the start to ``final``.

    ``final`` defaults to the honest final weights (a forger who copied them); the
    honest optimizer states are kept, the strongest choice for the forger.
    """
    cks = run.checkpoints()
    end = cks[-1][0] if final is None else final
    n = len(cks)
    return rebuild(run, [(_lerp(run.start_state, end, (i + 1) / n), cks[i][1]) for i in range(n)])


def scaled_final(run: HonestRun, factor: float) -> tuple[Transcript, bytes]:
    """Honest checkpoints, but the final one (the update) is the start plus ``factor`` x the delta."""
    cks = run.checkpoints()
    w, opt = cks[-1]
    cks[-1] = (_lerp(run.start_state, w, factor), opt)
    return rebuild(run, cks)


def skipped(
    run: HonestRun, keep: int, noise: float = 0.0, seed: int = 0
) -> tuple[Transcript, bytes]:
    """Training stopped after segment ``keep - 1``; later checkpoints repeat that state.

    With ``noise`` > 0 each later checkpoint adds a small random step of that relative
    size (Fang et al.'s small-update trick: segments that look like slow progress).
    """
    g = torch.Generator().manual_seed(seed)
    cks = run.checkpoints()
    w, opt = cks[keep - 1]
    for i in range(keep, len(cks)):
        if noise:
            w = {k: (v + noise * v.std() * torch.randn(v.shape, generator=g)) for k, v in w.items()}
        # keep Adam's step counters plausible, so only the weights give the forgery away
        end = float(run.transcript.segments[i].end)
        opt = {k: torch.tensor(end) if k.startswith("step.") else v for k, v in opt.items()}
        cks[i] = (w, opt)
    return rebuild(run, cks)


def other_start(run: HonestRun, init_seed: int) -> tuple[Transcript, bytes]:
    """Trained from another model but claims the round's global model as the start."""
    other = honest_run(
        run.sink,
        run.dataset,
        run.cfg,
        model_id=run.model_id,
        round_id=run.round_id,
        k=run.transcript.k,
        init_seed=init_seed,
    )
    return rebuild(run, other.checkpoints())


def other_data(run: HonestRun, data: Dataset) -> tuple[Transcript, bytes]:
    """Trained on ``data`` (same size) but commits to the honest data set."""
    if len(data) != len(run.dataset):
        raise ValueError("the substitute data set must have the committed size")
    other = honest_run(
        run.sink,
        data,
        run.cfg,
        model_id=run.model_id,
        round_id=run.round_id,
        k=run.transcript.k,
        init_seed=run.init_seed,
    )
    return rebuild(run, other.checkpoints(), data_root=data_commitment(run.dataset))


def _flip(ds: Dataset) -> Dataset:
    return Dataset(ds.name, ds.x, (ds.num_classes - 1 - ds.y).astype(np.int64), ds.num_classes)


FORGERIES: dict[str, Callable[[HonestRun], tuple[Transcript, bytes]]] = {
    "random checkpoint (middle segment)": lambda r: random_checkpoints(
        r, [len(r.transcript.segments) // 2]
    ),
    "random checkpoints (all)": lambda r: random_checkpoints(r),
    "interpolated from start to honest final": lambda r: interpolated(r),
    "update scaled x3 (final not reachable)": lambda r: scaled_final(r, 3.0),
    "skipped second half (copies)": lambda r: skipped(r, len(r.transcript.segments) // 2),
    "skipped second half (small noise)": lambda r: skipped(
        r, len(r.transcript.segments) // 2, noise=1e-3
    ),
    "trained from another start": lambda r: other_start(r, r.init_seed + 1000),
    "trained on flipped labels": lambda r: other_data(r, _flip(r.dataset)),
}

"""PoL verification under the ``replay``, ``attest`` and ``off`` policies; never raises.

``attest`` (data-free): the transcript decodes and is bound to this round, this start
model and this update; its hyperparameters, model and data commitment are the expected
ones; the segments cover exactly the recomputed batch schedule and carry its batch
hashes; every checkpoint resolves, parses, has the model's shapes and a well-formed
optimizer state; each recorded weight-change norm is the real one, nonzero, and within
the step-size bound that lr, momentum, weight decay and clipping (or Adam) allow.

``replay`` adds: the segments picked by :func:`select_segments` from the seed are
re-executed with :func:`fl.train.run_steps` from the previous checkpoint on the revealed
samples (each proven against the data commitment) and must land within the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fl.models import (
    ModelFormatError,
    StateDict,
    build_model,
    check_compatible,
    input_shape,
    resolve_config,
)
from fl.pol.bounds import adam_linf_bound_q, sgd_l2_bound_q, slack
from fl.pol.checkpoint import fetch, load_state, norm_q, quantized
from fl.pol.distance import compare, within
from fl.pol.errors import MissingContent, PolError
from fl.pol.precision import full_fp32
from fl.pol.records import PolVerdict, SegmentDistance, Tolerance, Transcript
from fl.pol.reveal import open_reveal, segment_positions
from fl.pol.schedule import MAX_SCHEDULE_POSITIONS, batch_hash, schedule_for, segment_bounds
from fl.pol.select import DEFAULT_Q, DEFAULT_RANDOM_PICKS, select_segments
from fl.pol.sink import ContentSink
from fl.train import TrainConfig, import_optimizer_state, make_optimizer, run_steps
from ledger.codec import CodecError, decode_record

__all__ = ["DEFAULT_TOLERANCE", "POLICIES", "verify"]

POLICIES = ("replay", "attest", "off")
DEFAULT_TOLERANCE = Tolerance()


class _Reject(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.reason = f"{code}: {detail}"


def verify(
    transcript_cid: bytes,
    sink: ContentSink,
    *,
    seed: bytes,
    policy: str,
    expected_start_cid: bytes,
    expected_round_id: bytes,
    update_cid: bytes | None,
    reveal_cid: bytes | None = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    device: str | torch.device | None = "cpu",
    q: int = DEFAULT_Q,
    random_picks: int = DEFAULT_RANDOM_PICKS,
    expected_model: str | None = None,
    expected_model_config: dict[str, Any] | None = None,
    expected_train: Mapping[str, Any] | TrainConfig | None = None,
    expected_data_root: bytes | None = None,
    expected_dataset_size: int | None = None,
    expected_k: int | None = None,
) -> PolVerdict:
    """Check a transcript; a rejection's ``reason`` is ``"<code>: <detail>"``.

    ``update_cid`` is the update submitted with the transcript; it must be the final
    checkpoint's weights (pass None only where the submitted update is not the trained
    model itself, e.g. a DP-noised update, and bind it another way). ``expected_train``
    is either a TrainConfig (every field must match) or a plain-form subset
    (``{"lr": "0.05", "epochs": 2, ...}``: the task's fixed hyperparameters).
    ``expected_k`` fixes the checkpoint interval (it sets the verifier's replay cost).
    Replay distances of the segments checked so far are returned on rejection too.
    """
    state = _State()
    try:
        _verify(
            state,
            transcript_cid,
            sink,
            seed=seed,
            policy=policy,
            expected_start_cid=expected_start_cid,
            expected_round_id=expected_round_id,
            update_cid=update_cid,
            reveal_cid=reveal_cid,
            tolerance=tolerance,
            device=device,
            q=q,
            random_picks=random_picks,
            expected_model=expected_model,
            expected_model_config=expected_model_config,
            expected_train=expected_train,
            expected_data_root=expected_data_root,
            expected_dataset_size=expected_dataset_size,
            expected_k=expected_k,
        )
    except _Reject as r:
        return PolVerdict(False, r.reason, state.checked, state.distances)
    except MissingContent as e:
        return PolVerdict(False, f"missing_content: {e}", state.checked, state.distances)
    except PolError as e:
        return PolVerdict(False, f"bad_content: {e}", state.checked, state.distances)
    except Exception as e:  # a defect we did not foresee still must not crash a validator
        detail = f"{type(e).__name__}: {e}"
        return PolVerdict(False, f"verification_error: {detail}", state.checked, state.distances)
    if policy == "off":
        return PolVerdict(True, "off", [], [])
    return PolVerdict(True, "ok", state.checked, state.distances)


class _State:
    def __init__(self) -> None:
        self.checked: list[int] = []
        self.distances: list[SegmentDistance] = []


def _verify(
    state: _State,
    transcript_cid: bytes,
    sink: ContentSink,
    *,
    seed: bytes,
    policy: str,
    expected_start_cid: bytes,
    expected_round_id: bytes,
    update_cid: bytes | None,
    reveal_cid: bytes | None,
    tolerance: Tolerance,
    device: str | torch.device | None,
    q: int,
    random_picks: int,
    expected_model: str | None,
    expected_model_config: dict[str, Any] | None,
    expected_train: Mapping[str, Any] | TrainConfig | None,
    expected_data_root: bytes | None,
    expected_dataset_size: int | None,
    expected_k: int | None,
) -> None:
    if policy not in POLICIES:
        raise _Reject("bad_policy", f"unknown policy {policy!r} (replay, attest, off)")
    if policy == "off":
        return
    if not isinstance(seed, bytes) or not 1 <= len(seed) <= 64:
        raise _Reject("bad_seed", "the verification seed must be 1..64 bytes")
    if not isinstance(transcript_cid, bytes):
        raise _Reject("malformed_transcript", "the transcript id must be bytes")
    t = _load_transcript(sink, transcript_cid)
    cfg = _check_bindings(
        t,
        expected_start_cid=expected_start_cid,
        expected_round_id=expected_round_id,
        update_cid=update_cid,
        expected_model=expected_model,
        expected_model_config=expected_model_config,
        expected_train=expected_train,
        expected_data_root=expected_data_root,
        expected_dataset_size=expected_dataset_size,
    )
    if expected_k is not None and t.k != expected_k:
        raise _Reject("hparams_mismatch", f"checkpoint interval k is {t.k}, task has {expected_k}")
    schedule = _check_schedule(t, cfg)
    template = _template(t)
    _attest_checkpoints(t, cfg, sink, template)
    if policy == "attest":
        return
    if reveal_cid is None:
        raise _Reject("no_reveal", "the replay policy needs the trainer's reveal")
    chosen = select_segments(t, seed, q, random_picks)
    _replay(state, t, cfg, sink, template, schedule, chosen, reveal_cid, tolerance, device)


# ---------------------------------------------------------------- transcript and bindings


def _load_transcript(sink: ContentSink, cid: bytes) -> Transcript:
    try:
        data = fetch(sink, cid, "transcript")
    except MissingContent as e:
        raise _Reject("missing_content", str(e)) from e
    try:
        return decode_record(data, Transcript)
    except CodecError as e:
        raise _Reject("malformed_transcript", str(e)) from e


def _check_bindings(
    t: Transcript,
    *,
    expected_start_cid: bytes,
    expected_round_id: bytes,
    update_cid: bytes | None,
    expected_model: str | None,
    expected_model_config: dict[str, Any] | None,
    expected_train: Mapping[str, Any] | TrainConfig | None,
    expected_data_root: bytes | None,
    expected_dataset_size: int | None,
) -> TrainConfig:
    if t.round_id != expected_round_id:
        raise _Reject("round_mismatch", "the transcript is bound to another task round")
    if t.start_cid != expected_start_cid:
        raise _Reject("start_mismatch", "training did not start from the round's global model")
    if t.update_cid != t.segments[-1].model_cid:
        raise _Reject("update_mismatch", "the update is not the final checkpoint's weights")
    if update_cid is not None and t.update_cid != update_cid:
        raise _Reject("update_mismatch", "the transcript proves another update")
    try:
        cfg_model = resolve_config(t.model, t.model_config)
    except ValueError as e:
        raise _Reject("malformed_transcript", f"model: {e}") from e
    if cfg_model != t.model_config:
        raise _Reject("malformed_transcript", "model config is not in its resolved form")
    if expected_model is not None:
        if t.model != expected_model:
            raise _Reject("model_mismatch", f"model {t.model!r}, task uses {expected_model!r}")
        if cfg_model != resolve_config(expected_model, expected_model_config):
            raise _Reject("model_mismatch", "model config differs from the task's")
    try:
        cfg = TrainConfig.from_plain(t.train)
    except (ValueError, TypeError) as e:
        raise _Reject("malformed_transcript", f"hyperparameters: {e}") from e
    if cfg.to_plain() != t.train:
        raise _Reject("malformed_transcript", "hyperparameters are not in canonical form")
    if not cfg.deterministic:
        raise _Reject("malformed_transcript", "training was not in deterministic mode")
    if expected_train is not None:
        want = (
            expected_train.to_plain() if isinstance(expected_train, TrainConfig) else expected_train
        )
        for key in sorted(want):
            if t.train.get(key) != want[key]:
                raise _Reject(
                    "hparams_mismatch", f"{key} is {t.train.get(key)!r}, task has {want[key]!r}"
                )
    if expected_data_root is not None and t.data_root != expected_data_root:
        raise _Reject("data_mismatch", "data commitment differs from the submission's")
    if expected_dataset_size is not None and t.dataset_size != expected_dataset_size:
        raise _Reject(
            "data_mismatch", f"{t.dataset_size} samples, submission says {expected_dataset_size}"
        )
    return cfg


def _check_schedule(t: Transcript, cfg: TrainConfig) -> list[np.ndarray]:
    if t.dataset_size * cfg.epochs > MAX_SCHEDULE_POSITIONS:
        raise _Reject("malformed_transcript", "schedule larger than a verifier recomputes")
    schedule = schedule_for(t.dataset_size, cfg)
    bounds = segment_bounds(len(schedule), t.k)
    got = [(s.start, s.end) for s in t.segments]
    if got != bounds:
        raise _Reject(
            "schedule_mismatch",
            f"segments cover {t.steps} steps in {len(got)} segments; the schedule has "
            f"{len(schedule)} steps in {len(bounds)} segments of {t.k}",
        )
    for i, seg in enumerate(t.segments):
        if batch_hash(schedule[seg.start : seg.end]) != seg.batch_hash:
            raise _Reject("schedule_mismatch", f"segment {i}: batch hash is not the schedule's")
    return schedule


# ---------------------------------------------------------------- data-free checkpoint checks


def _template(t: Transcript) -> StateDict:
    """Names and shapes only: built on the meta device, so a transcript naming a huge config
    allocates nothing before its shapes are compared with the (bounded) start model."""
    with torch.device("meta"):
        model = build_model(t.model, t.model_config, seed=0)
    return dict(model.state_dict())


def _load_checked(sink: ContentSink, cid: bytes, what: str, template: StateDict) -> StateDict:
    try:
        st = load_state(sink, cid, what)
    except MissingContent as e:
        raise _Reject("missing_content", str(e)) from e
    except PolError as e:
        raise _Reject("bad_checkpoint", str(e)) from e
    try:
        check_compatible(st, template)
    except ModelFormatError as e:
        raise _Reject("bad_checkpoint", f"{what}: {e}") from e
    return st


def _load_optim(
    sink: ContentSink, cid: bytes, what: str, holder: torch.nn.Module, cfg: TrainConfig, steps: int
) -> StateDict:
    try:
        st = load_state(sink, cid, what)
    except MissingContent as e:
        raise _Reject("missing_content", str(e)) from e
    except PolError as e:
        raise _Reject("bad_checkpoint", str(e)) from e
    needs_state = cfg.optimizer == "adam" or cfg.momentum > 0
    if needs_state != bool(st):
        raise _Reject(
            "bad_checkpoint",
            f"{what}: optimizer state {'missing' if needs_state else 'unexpected'}",
        )
    if st:
        try:
            import_optimizer_state(holder, make_optimizer(holder, cfg), st, cfg.optimizer)
        except ValueError as e:
            raise _Reject("bad_checkpoint", f"{what}: {e}") from e
        for key, value in st.items():
            if key.startswith("step.") and float(value) != float(steps):
                raise _Reject(
                    "bad_checkpoint", f"{what}: Adam step count {float(value)} != {steps}"
                )
    return st


def _attest_checkpoints(
    t: Transcript, cfg: TrainConfig, sink: ContentSink, template: StateDict
) -> None:
    prev = _load_checked(sink, t.start_cid, "start model", template)
    holder = build_model(t.model, t.model_config, seed=0)  # checks optimizer-state structure
    n = sum(int(v.numel()) for v in template.values())
    prev_q = _quantized(prev, "start model")
    prev_buf_norm = 0
    for i, seg in enumerate(t.segments):
        st = _load_checked(sink, seg.model_cid, f"segment {i} model checkpoint", template)
        opt = _load_optim(sink, seg.optim_cid, f"segment {i} optimizer state", holder, cfg, seg.end)
        q = _quantized(st, f"segment {i} weights")
        delta = q - prev_q
        moved = norm_q(delta)
        if moved != seg.update_norm_q:
            raise _Reject(
                "norm_mismatch", f"segment {i}: recorded change {seg.update_norm_q}, actual {moved}"
            )
        if moved == 0:
            raise _Reject("no_progress", f"segment {i}: the weights did not change")
        steps = seg.end - seg.start
        if cfg.optimizer == "adam":
            bound = adam_linf_bound_q(cfg, seg.start, steps)
            linf = int(np.max(np.abs(delta)))
            if linf > slack(bound, 1):
                raise _Reject(
                    "step_bound", f"segment {i}: a weight moved {linf}, Adam allows {bound} (2^-24)"
                )
        else:
            w_norm = norm_q(prev_q) + _quant_room(n)
            sgd = sgd_l2_bound_q(cfg, w_norm, prev_buf_norm, steps)
            buf_norm = norm_q(_quantized(opt, f"segment {i} optimizer state")) if opt else 0
            if sgd is not None:
                d_max, v_max = sgd
                if moved > slack(d_max, n):
                    raise _Reject(
                        "step_bound",
                        f"segment {i}: weights moved {moved}, lr and clipping allow {d_max} (2^-24)",
                    )
                if buf_norm > slack(v_max, n):
                    raise _Reject(
                        "step_bound", f"segment {i}: momentum {buf_norm} exceeds its bound {v_max}"
                    )
            prev_buf_norm = buf_norm + _quant_room(n)
        prev_q = q


def _quant_room(n: int) -> int:
    return math.isqrt(n) + 2


def _quantized(st: Mapping[str, torch.Tensor], what: str) -> np.ndarray:
    try:
        return quantized(st, what)
    except PolError as e:
        raise _Reject("bad_checkpoint", str(e)) from e


# ---------------------------------------------------------------- replay


def _replay(
    state: _State,
    t: Transcript,
    cfg: TrainConfig,
    sink: ContentSink,
    template: StateDict,
    schedule: list[np.ndarray],
    chosen: list[int],
    reveal_cid: bytes,
    tol: Tolerance,
    device: str | torch.device | None,
) -> None:
    positions = segment_positions(schedule, t, chosen)
    try:
        data = fetch(sink, reveal_cid, "reveal")
    except MissingContent as e:
        raise _Reject("no_reveal", str(e)) from e
    num_classes = int(t.model_config["num_classes"])
    size = int(np.prod(input_shape(t.model, t.model_config)))
    try:
        ds, rows = open_reveal(data, t, positions, size, num_classes)
    except PolError as e:
        code, _, detail = str(e).partition(": ")
        raise _Reject(code, detail) from e
    for i in chosen:
        seg = t.segments[i]
        if i == 0:
            prev = _load_checked(sink, t.start_cid, "start model", template)
            prev_opt: StateDict = {}
        else:
            before = t.segments[i - 1]
            prev = _load_checked(
                sink, before.model_cid, f"segment {i - 1} model checkpoint", template
            )
            prev_opt = load_state(sink, before.optim_cid, f"segment {i - 1} optimizer state")
        rec = _load_checked(sink, seg.model_cid, f"segment {i} model checkpoint", template)
        rec_opt = load_state(sink, seg.optim_cid, f"segment {i} optimizer state")
        model = build_model(t.model, t.model_config, seed=0)
        model.load_state_dict(prev)
        batches = [
            np.asarray([rows[int(j)] for j in b], dtype=np.int64)
            for b in schedule[seg.start : seg.end]
        ]
        with full_fp32():
            result = run_steps(model, prev_opt, ds, batches, cfg, device)
        state.checked.append(i)
        if not all(bool(torch.isfinite(v).all()) for v in result.state.values()):
            raise _Reject(
                "replay_mismatch", f"segment {i}: the replay diverged (non-finite weights)"
            )
        try:
            step_q = norm_q(quantized(result.state) - quantized(prev))
        except PolError as e:
            raise _Reject("replay_mismatch", f"segment {i}: {e}") from e
        dist = compare(
            i, result.state, rec, prev, result.optimizer_state, rec_opt, prev_opt, step_q
        )
        state.distances.append(dist)
        broken = within(dist, tol)
        if broken is not None:
            raise _Reject("replay_mismatch", f"segment {i}: {broken}")

"""Canonical PoL records (tags 500-506): transcript, segments, reveals, tolerance and verdicts.

Layouts (canonical msgpack arrays ``[tag, field, ...]`` via :mod:`ledger.codec`)::

    Segment(500)        [start, end, model_cid, optim_cid, batch_hash, update_norm_q]
    Transcript(501)     [version, round_id, start_cid, model, model_config, train, data_root,
                         dataset_size, k, segments, update_cid]
    RevealedSample(502) [position, x, y, aunts]
    Reveal(503)         [version, transcript_hash, segments, sample_shape, samples]
    Tolerance(504)      [rel_l2_ppm, rel_linf_ppm, min_cos_ppm, rel_optim_ppm]
    SegmentDistance(505)[segment, l2_ppm, linf_ppm, cos_ppm, optim_ppm, step_l2_q]
    PolVerdict(506)     [ok, reason, checked, distances]

Constructors check the structure (sizes, ranges, contiguous segments), so a
structurally malformed encoding fails in ``decode_record`` with a ``CodecError``.
Meaning (which schedule, which model) is checked by :func:`fl.pol.verify.verify`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.codec import encode, record, sha256

__all__ = [
    "MAX_CID_BYTES",
    "MAX_SEGMENTS",
    "TRANSCRIPT_VERSION",
    "PolVerdict",
    "Reveal",
    "RevealedSample",
    "Segment",
    "SegmentDistance",
    "Tolerance",
    "Transcript",
    "transcript_hash",
]

TRANSCRIPT_VERSION = 1
REVEAL_VERSION = 1
MAX_CID_BYTES = 128
MAX_SEGMENTS = 1 << 14  # 16,384 segments keep a transcript well under the codec's 4 MiB
MAX_DATASET = 1 << 32
MAX_MERKLE_DEPTH = 40
PPM = 1_000_000


def _cid(name: str, v: bytes) -> None:
    if not 1 <= len(v) <= MAX_CID_BYTES:
        raise ValueError(f"{name} must be 1..{MAX_CID_BYTES} bytes, got {len(v)}")


def _digest(name: str, v: bytes) -> None:
    if len(v) != 32:
        raise ValueError(f"{name} must be a 32-byte SHA-256 digest, got {len(v)} bytes")


@record(500)
@dataclass(frozen=True)
class Segment:
    """Steps ``start..end-1`` (0-based, end exclusive) and the state after step ``end - 1``.

    ``model_cid`` / ``optim_cid``: safetensors of the model weights and of the exported
    optimizer state after the segment. ``batch_hash``: :func:`fl.pol.schedule.batch_hash`
    of the segment's batch index lists. ``update_norm_q``: ``isqrt`` of the squared L2
    norm of ``quantize(end weights) - quantize(start weights)`` (2^-24 units, exact).
    """

    start: int
    end: int
    model_cid: bytes
    optim_cid: bytes
    batch_hash: bytes
    update_norm_q: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"segment steps {self.start}..{self.end} are not a non-empty range")
        _cid("model_cid", self.model_cid)
        _cid("optim_cid", self.optim_cid)
        _digest("batch_hash", self.batch_hash)
        if not 0 <= self.update_norm_q < 1 << 63:
            raise ValueError("update_norm_q must be a non-negative int64")


@record(501)
@dataclass(frozen=True)
class Transcript:
    """A trainer's proof-of-learning transcript for one round (a content object).

    ``round_id`` binds it to one task round (the chain passes a hash of chain id, task
    and round); ``start_cid`` is the round's global model; ``train`` is the
    :meth:`TrainConfig.to_plain` form (its ``seed`` is the batch-schedule seed);
    ``data_root`` / ``dataset_size`` the data commitment; segment i covers steps
    ``i*k .. min((i+1)*k, steps) - 1``; ``update_cid`` is the submitted update, which
    is the final checkpoint's model weights (``segments[-1].model_cid``).
    """

    version: int
    round_id: bytes
    start_cid: bytes
    model: str
    model_config: dict[str, Any]
    train: dict[str, Any]
    data_root: bytes
    dataset_size: int
    k: int
    segments: tuple[Segment, ...]
    update_cid: bytes

    def __post_init__(self) -> None:
        if self.version != TRANSCRIPT_VERSION:
            raise ValueError(f"unsupported transcript version {self.version}")
        if not 16 <= len(self.round_id) <= 64:
            raise ValueError(f"round_id must be 16..64 bytes, got {len(self.round_id)}")
        _cid("start_cid", self.start_cid)
        _cid("update_cid", self.update_cid)
        _digest("data_root", self.data_root)
        if not 1 <= len(self.model) <= 64:
            raise ValueError("model id must be 1..64 characters")
        if not 1 <= self.dataset_size <= MAX_DATASET:
            raise ValueError(f"dataset_size must be 1..2^32, got {self.dataset_size}")
        if not 1 <= self.k <= 1 << 20:
            raise ValueError(f"k must be 1..2^20, got {self.k}")
        if not 1 <= len(self.segments) <= MAX_SEGMENTS:
            raise ValueError(
                f"a transcript has 1..{MAX_SEGMENTS} segments, got {len(self.segments)}"
            )
        expected_start = 0
        for i, seg in enumerate(self.segments):
            last = i == len(self.segments) - 1
            if seg.start != expected_start or seg.start != i * self.k:
                raise ValueError(f"segment {i} starts at step {seg.start}, expected {i * self.k}")
            length = seg.end - seg.start
            if length != self.k and not (last and length < self.k):
                raise ValueError(f"segment {i} has {length} steps, expected {self.k}")
            expected_start = seg.end

    @property
    def steps(self) -> int:
        return self.segments[-1].end


@record(502)
@dataclass(frozen=True)
class RevealedSample:
    """One committed sample: its position in the local data set, float32 LE bytes, label, proof."""

    position: int
    x: bytes
    y: int
    aunts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.position < MAX_DATASET:
            raise ValueError(f"sample position {self.position} out of range")
        if not 0 <= self.y < 1 << 31:
            raise ValueError(f"label {self.y} out of range")
        if len(self.aunts) > MAX_MERKLE_DEPTH or any(len(a) != 32 for a in self.aunts):
            raise ValueError("a Merkle proof is at most 40 hashes of 32 bytes")


@record(503)
@dataclass(frozen=True)
class Reveal:
    """The samples of the chosen segments' batches, posted after the verification seed is known."""

    version: int
    transcript_hash: bytes
    segments: tuple[int, ...]
    sample_shape: tuple[int, ...]
    samples: tuple[RevealedSample, ...]

    def __post_init__(self) -> None:
        if self.version != REVEAL_VERSION:
            raise ValueError(f"unsupported reveal version {self.version}")
        _digest("transcript_hash", self.transcript_hash)
        if not 1 <= len(self.sample_shape) <= 4 or any(
            not 1 <= d <= 1 << 16 for d in self.sample_shape
        ):
            raise ValueError(f"bad sample shape {self.sample_shape}")
        width = 4
        for d in self.sample_shape:
            width *= d
        if width > 1 << 24:
            raise ValueError("samples larger than 16 MiB are not supported")
        last = -1
        for s in self.samples:
            if s.position <= last:
                raise ValueError("revealed samples must be sorted by position without repeats")
            if len(s.x) != width:
                raise ValueError(f"sample {s.position} has {len(s.x)} bytes, expected {width}")
            last = s.position


@record(504)
@dataclass(frozen=True)
class Tolerance:
    """Replay acceptance thresholds in parts per million (exact integer comparisons).

    A replayed segment passes when ``|W' - W| <= rel_l2 * |W' - W_prev|`` (L2),
    the same for L-inf with ``rel_linf``, ``cos(W' - W_prev, W - W_prev) >= min_cos``,
    and the optimizer state after the segment is within ``rel_optim`` (relative L2)
    of the replayed one. ``W'`` is the replay, ``W`` the checkpoint, ``W_prev`` the
    checkpoint the replay started from.
    """

    rel_l2_ppm: int = 10_000
    rel_linf_ppm: int = 50_000
    min_cos_ppm: int = 999_000
    rel_optim_ppm: int = 20_000

    def __post_init__(self) -> None:
        for name in ("rel_l2_ppm", "rel_linf_ppm", "rel_optim_ppm"):
            if not 0 <= getattr(self, name) <= 1 << 40:
                raise ValueError(f"{name} must be 0..2^40")
        if not -PPM <= self.min_cos_ppm <= PPM:
            raise ValueError("min_cos_ppm must be in -10^6..10^6")


@record(505)
@dataclass(frozen=True)
class SegmentDistance:
    """How far a replayed segment landed from its checkpoint (ppm of the replayed step)."""

    segment: int
    l2_ppm: int
    linf_ppm: int
    cos_ppm: int
    optim_ppm: int
    step_l2_q: int  # L2 norm of the replayed update, 2^-24 units


@record(506)
@dataclass(frozen=True)
class PolVerdict:
    """Outcome of :func:`fl.pol.verify.verify`: ``reason`` is ``ok``/``off`` or ``code: detail``."""

    ok: bool
    reason: str
    checked: list[int] = field(default_factory=list)
    distances: list[SegmentDistance] = field(default_factory=list)

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


def transcript_hash(t: Transcript) -> bytes:
    """SHA-256 of the canonical encoding: what reveals and segment selection bind to."""
    return sha256(encode(t))

"""Reveals: the committed samples of the segments a verifier replays, with Merkle proofs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from fl.data import Dataset, sample_hash, sample_hashes
from fl.pol.errors import PolError
from fl.pol.records import REVEAL_VERSION, Reveal, RevealedSample, Transcript, transcript_hash
from fl.pol.schedule import schedule_for
from fl.pol.sink import ContentSink
from fl.train import TrainConfig
from ledger.codec import CodecError, decode_record, encode
from ledger.merkle import MerkleProof, leaf_hash, verify_proof

__all__ = [
    "MAX_REVEAL_BYTES",
    "batch_proofs",
    "make_reveal",
    "open_reveal",
    "segment_positions",
]

# A reveal carries whole samples: 4 segments x 32 steps x 32 MNIST images is 13 MB.
MAX_REVEAL_BYTES = 256 * 1024 * 1024


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def batch_proofs(leaf_hashes: Sequence[bytes], positions: Iterable[int]) -> dict[int, list[bytes]]:
    """RFC 6962 audit paths (leaf to root) for many positions, sharing subtree roots.

    ``ledger.merkle.merkle_proof`` rehashes the whole tree per proof; a reveal needs
    thousands of proofs, so subtree roots are memoized here (O(n) hashes in total).
    Leaves are the already leaf-hashed values ``sha256(0x00 || sample_hash)``.
    """
    memo: dict[tuple[int, int], bytes] = {}

    def root(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hashes[lo]
        got = memo.get((lo, hi))
        if got is None:
            mid = lo + _split(hi - lo)
            got = hashlib.sha256(b"\x01" + root(lo, mid) + root(mid, hi)).digest()
            memo[(lo, hi)] = got
        return got

    def path(pos: int) -> list[bytes]:
        aunts: list[bytes] = []
        lo, hi = 0, len(leaf_hashes)
        while hi - lo > 1:
            mid = lo + _split(hi - lo)
            if pos < mid:
                aunts.append(root(mid, hi))
                hi = mid
            else:
                aunts.append(root(lo, mid))
                lo = mid
        return aunts[::-1]  # leaf first, as ledger.merkle.MerkleProof expects

    return {p: path(p) for p in positions}


def segment_positions(
    schedule: Sequence[npt.NDArray[np.int64]], transcript: Transcript, segments: Iterable[int]
) -> list[int]:
    """Sorted distinct data positions the given segments' batches use."""
    used: set[int] = set()
    for i in segments:
        seg = transcript.segments[i]
        for b in schedule[seg.start : seg.end]:
            used.update(int(j) for j in b)
    return sorted(used)


def make_reveal(
    transcript: Transcript,
    dataset: Dataset,
    segments: Sequence[int],
    sink: ContentSink,
    *,
    hashes: Sequence[bytes] | None = None,
) -> bytes:
    """Store the reveal for ``segments`` (from :func:`select_segments`) and return its id.

    Contains exactly the samples of those segments' batches, each with its position and
    Merkle proof against ``transcript.data_root``; nothing else of the data set leaves.
    """
    if len(dataset) != transcript.dataset_size:
        raise PolError(f"data set has {len(dataset)} samples, transcript {transcript.dataset_size}")
    if any(not 0 <= i < len(transcript.segments) for i in segments):
        raise PolError("segment index out of range")
    leaves = list(hashes) if hashes is not None else sample_hashes(dataset)
    lh = [leaf_hash(h) for h in leaves]
    cfg = TrainConfig.from_plain(transcript.train)
    positions = segment_positions(schedule_for(len(dataset), cfg), transcript, segments)
    proofs = batch_proofs(lh, positions)
    samples = tuple(
        RevealedSample(
            position=p,
            x=np.ascontiguousarray(dataset.x[p], dtype="<f4").tobytes(),
            y=int(dataset.y[p]),
            aunts=tuple(proofs[p]),
        )
        for p in positions
    )
    reveal = Reveal(
        version=REVEAL_VERSION,
        transcript_hash=transcript_hash(transcript),
        segments=tuple(sorted(set(segments))),
        sample_shape=tuple(int(d) for d in dataset.sample_shape),
        samples=samples,
    )
    return sink.put(encode(reveal))


def open_reveal(
    data: bytes,
    transcript: Transcript,
    positions: Sequence[int],
    input_size: int,
    num_classes: int,
) -> tuple[Dataset, dict[int, int]]:
    """Check a reveal and return the revealed samples as a Dataset plus position -> row.

    Every needed position must be present with a valid proof against the transcript's
    data commitment; any defect is a PolError whose message starts with a reason code.
    """
    try:
        reveal = decode_record(data, Reveal, max_size=MAX_REVEAL_BYTES)
    except CodecError as e:
        raise PolError(f"malformed_reveal: {e}") from e
    if reveal.transcript_hash != transcript_hash(transcript):
        raise PolError("reveal_mismatch: the reveal was made for another transcript")
    shape = reveal.sample_shape
    if int(np.prod(shape)) != input_size:
        raise PolError(f"malformed_reveal: sample shape {list(shape)} does not fit the model input")
    by_pos = {s.position: s for s in reveal.samples}
    rows: dict[int, int] = {}
    xs: list[npt.NDArray[np.float32]] = []
    ys: list[int] = []
    for p in positions:
        s = by_pos.get(p)
        if s is None:
            raise PolError(f"reveal_incomplete: sample at position {p} is not revealed")
        if not 0 <= s.y < num_classes:
            raise PolError(f"malformed_reveal: label {s.y} at position {p} is out of range")
        x = np.frombuffer(s.x, dtype="<f4").reshape(shape)
        h = sample_hash(x, s.y)
        proof = MerkleProof(p, transcript.dataset_size, leaf_hash(h), s.aunts)
        if not verify_proof(transcript.data_root, h, proof):
            raise PolError(f"bad_sample_proof: sample at position {p} is not in the commitment")
        if not np.isfinite(x).all():
            raise PolError(f"malformed_reveal: sample at position {p} is not finite")
        rows[p] = len(xs)
        xs.append(x.astype(np.float32))
        ys.append(s.y)
    if not xs:
        raise PolError("reveal_incomplete: no samples")
    ds = Dataset(
        "reveal",
        np.stack(xs).astype(np.float32),
        np.asarray(ys, dtype=np.int64),
        num_classes,
    )
    return ds, rows

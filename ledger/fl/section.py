"""The FL section of a round-closing block: ``FLSection`` (110) of ``RoundResult`` s (111-113).

Field checks here are context-free (sizes and ranges); whether a result fits
the state (the right round, each submission exactly once, the model rules)
is :func:`ledger.fl.validate.check_section`, and whether its *content* is right
is the verifiers' (they re-run PoL and the aggregation in ProcessProposal).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.block import PolSection
from ledger.codec import record
from ledger.fl.spec import (
    HASH_LEN,
    MAX_CLIENTS_PER_ROUND,
    MAX_ID,
    MAX_ROUND_SAMPLES,
    MAX_ROUNDS,
    check_address,
    check_bytes,
    check_cid,
    check_int,
    check_text,
)

MAX_REASON_LEN = 64
MAX_POL_SEGMENTS = 16  # replayed segments recorded per accepted update
MAX_CHECKPOINTS = 16  # checkpoint CIDs recorded per accepted update
MAX_SEGMENT_INDEX = 2**32 - 1
MIN_SCORE = -(2**63)
MAX_SCORE = 2**63 - 1
MAX_RESULTS = 256  # rounds closed by one block


@record(112)
@dataclass(frozen=True)
class Contribution:
    """An accepted update: who, which object, its weight, score and the PoL evidence checked."""

    trainer: bytes
    update_cid: bytes
    samples: int
    score: int
    pol_segments: tuple[int, ...]  # the segments the verifier replayed (ascending)
    checkpoint_cids: tuple[bytes, ...]  # the checkpoints the verifier checked

    def __post_init__(self) -> None:
        check_address("trainer", self.trainer)
        check_cid("update_cid", self.update_cid)
        check_int("samples", self.samples, 1, MAX_ROUND_SAMPLES)
        check_int("score", self.score, MIN_SCORE, MAX_SCORE)
        if len(self.pol_segments) > MAX_POL_SEGMENTS:
            raise ValueError(f"at most {MAX_POL_SEGMENTS} pol_segments")
        for s in self.pol_segments:
            check_int("pol_segments[]", s, 0, MAX_SEGMENT_INDEX)
        if any(a >= b for a, b in zip(self.pol_segments, self.pol_segments[1:])):
            raise ValueError("pol_segments must be strictly ascending")
        if len(self.checkpoint_cids) > MAX_CHECKPOINTS:
            raise ValueError(f"at most {MAX_CHECKPOINTS} checkpoint_cids")
        for c in self.checkpoint_cids:
            check_cid("checkpoint_cids[]", c)


@record(113)
@dataclass(frozen=True)
class Rejection:
    """A rejected update; ``proven`` (PoL failure, poisoning verdict) makes it slashable."""

    trainer: bytes
    update_cid: bytes
    reason: str
    score: int
    proven: bool

    def __post_init__(self) -> None:
        check_address("trainer", self.trainer)
        check_cid("update_cid", self.update_cid)
        check_text("reason", self.reason, MAX_REASON_LEN)
        if not self.reason.isascii():
            raise ValueError("reason must be ASCII")
        check_int("score", self.score, MIN_SCORE, MAX_SCORE)
        if type(self.proven) is not bool:
            raise ValueError("proven must be a bool")


@record(111)
@dataclass(frozen=True)
class RoundResult:
    """The outcome of one round: the verdict on every submission and the new global model.

    Plaintext task with accepted updates: ``aggregate_digest`` (32 bytes, the
    ``fl.aggregate`` digest of the delta) and ``new_model_cid`` are set,
    ``encrypted_aggregate_cid`` is empty. HE task with accepted updates:
    ``encrypted_aggregate_cid`` is set, the other two are empty (the key
    holders post the model). No accepted update: the model stays, so
    ``new_model_cid`` is the current global model and the other two are empty.
    ``accepted`` and ``rejected`` are each sorted by trainer address.
    """

    task_id: int
    round: int
    accepted: tuple[Contribution, ...]
    rejected: tuple[Rejection, ...]
    aggregate_digest: bytes
    new_model_cid: bytes
    encrypted_aggregate_cid: bytes

    def __post_init__(self) -> None:
        check_int("task_id", self.task_id, 1, MAX_ID)
        check_int("round", self.round, 1, MAX_ROUNDS)
        if len(self.accepted) + len(self.rejected) > MAX_CLIENTS_PER_ROUND:
            raise ValueError(f"more than {MAX_CLIENTS_PER_ROUND} verdicts")
        for name, items in (("accepted", self.accepted), ("rejected", self.rejected)):
            trainers = [x.trainer for x in items]
            if any(a >= b for a, b in zip(trainers, trainers[1:])):
                raise ValueError(f"{name} must be sorted by trainer address, without repeats")
        both = {c.trainer for c in self.accepted} & {r.trainer for r in self.rejected}
        if both:
            raise ValueError(f"trainer {min(both).hex()} is both accepted and rejected")
        check_bytes("aggregate_digest", self.aggregate_digest, (0, HASH_LEN))
        check_cid("new_model_cid", self.new_model_cid, optional=True)
        check_cid("encrypted_aggregate_cid", self.encrypted_aggregate_cid, optional=True)

    @property
    def submissions(self) -> int:
        return len(self.accepted) + len(self.rejected)


@record(110)
@dataclass(frozen=True)
class FLSection(PolSection):
    """What a round-closing block carries: one result per due round, in task-id order."""

    results: tuple[RoundResult, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.results) <= MAX_RESULTS:
            raise ValueError(f"an FL section holds 1..{MAX_RESULTS} round results")
        tasks = [r.task_id for r in self.results]
        if any(a >= b for a, b in zip(tasks, tasks[1:])):
            raise ValueError("results must be in ascending task order, one per task")

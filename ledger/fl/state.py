"""The contract's state: key layout under ``ctr/fl/``, value records (130-135), typed accessors.

| key (after ``ctr/fl/``)                       | value                                  |
| --------------------------------------------- | -------------------------------------- |
| ``task/`` u64(id)                             | ``TaskState``                          |
| ``active/`` u64(id)                           | empty: index of the tasks with an open round |
| ``trainer/`` u64(id) address                  | ``TrainerState``                       |
| ``sub/`` u64(id) u32(round) address           | ``Submission``                         |
| ``result/`` u64(id) u32(round)                | ``RoundResult`` (as committed)         |
| ``model/`` u64(id) u32(round)                 | ``RoundModel``: global model after the round (0: initial) |
| ``keyshare/`` u64(id) address                 | ``KeyShareRecord``                     |
| ``infer/`` u64(n)                             | ``InferenceEntry``                     |
| ``meta/next_task``, ``meta/next_infer``       | the next id, canonical msgpack int     |

Fixed-width big-endian numbers keep every prefix scan in numeric order: tasks
by id, submissions of a round by trainer address (the canonical order the
verifier aggregates in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ledger.codec import decode, decode_record, encode, record
from ledger.crypto import ADDRESS_LEN
from ledger.fl.section import RoundResult
from ledger.fl.spec import (
    HASH_LEN,
    MAX_ID,
    X25519_KEY_LEN,
    TaskSpec,
    check_address,
    check_bytes,
    check_cid,
    check_int,
)
from ledger.schema import View, contract_prefix, u64
from ledger.state import Overlay
from ledger.tx import MAX_AMOUNT

PREFIX = contract_prefix("fl")
TASK_PREFIX = PREFIX + b"task/"
ACTIVE_PREFIX = PREFIX + b"active/"
TRAINER_PREFIX = PREFIX + b"trainer/"
SUB_PREFIX = PREFIX + b"sub/"
RESULT_PREFIX = PREFIX + b"result/"
MODEL_PREFIX = PREFIX + b"model/"
KEYSHARE_PREFIX = PREFIX + b"keyshare/"
INFER_PREFIX = PREFIX + b"infer/"
NEXT_TASK_KEY = PREFIX + b"meta/next_task"
NEXT_INFER_KEY = PREFIX + b"meta/next_infer"

OPEN = "open"
AWAITING_DECRYPTION = "awaiting_decryption"
FINISHED = "finished"
STATUSES = (OPEN, AWAITING_DECRYPTION, FINISHED)

R = TypeVar("R")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


# ---------------------------------------------------------------- records


@record(130)
@dataclass(frozen=True)
class TaskState:
    """A task and where it stands; ``round`` is the open (or decrypting) round."""

    spec: TaskSpec
    creator: bytes
    status: str
    round: int
    round_opened: int  # height at which the round opened
    deadline: int  # submissions are accepted at heights below it
    global_model_cid: bytes  # the model the open round trains from
    pool_left: int
    rounds_done: int

    def __post_init__(self) -> None:
        check_address("creator", self.creator)
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        check_int("round", self.round, 1, self.spec.rounds)
        check_int("round_opened", self.round_opened, 0, MAX_ID)
        check_int("deadline", self.deadline, self.round_opened + 1, MAX_ID)
        check_cid("global_model_cid", self.global_model_cid)
        check_int("pool_left", self.pool_left, 0, MAX_AMOUNT)
        check_int("rounds_done", self.rounds_done, 0, self.spec.rounds)

    @property
    def rounds_left(self) -> int:
        return self.spec.rounds - self.rounds_done

    @property
    def close_height(self) -> int:
        """The height from which the round is due whatever arrived (reveals included)."""
        extra = self.spec.reveal_blocks if self.spec.pol_policy == "replay" else 0
        return self.deadline + extra


@record(131)
@dataclass(frozen=True)
class TrainerState:
    """A trainer's standing in one task. ``bond == 0`` means not joined (never or left)."""

    bond: int
    strikes: int  # proven bad updates
    jailed: bool  # from the task, for good
    x25519_pubkey: bytes
    accepted: int
    rejected: int
    earned: int

    def __post_init__(self) -> None:
        for name in ("bond", "strikes", "accepted", "rejected", "earned"):
            check_int(name, getattr(self, name), 0, MAX_AMOUNT)
        if type(self.jailed) is not bool:
            raise ValueError("jailed must be a bool")
        check_bytes("x25519_pubkey", self.x25519_pubkey, (0, X25519_KEY_LEN))

    @property
    def joined(self) -> bool:
        return self.bond > 0


@record(132)
@dataclass(frozen=True)
class Submission:
    """An update as committed; ``seed`` drives the PoL segment choice and was unknown before."""

    update_cid: bytes
    transcript_cid: bytes
    sample_count: int
    data_commitment: bytes
    height: int  # the block that included it
    seed: bytes  # sha256(b"fedledger/pol/seed" + block id + trainer address)
    reveal_cid: bytes  # empty until the trainer's Reveal (replay policy)

    def __post_init__(self) -> None:
        check_cid("update_cid", self.update_cid)
        check_cid("transcript_cid", self.transcript_cid, optional=True)
        check_int("sample_count", self.sample_count, 1, MAX_AMOUNT)
        check_bytes("data_commitment", self.data_commitment, (HASH_LEN,))
        check_int("height", self.height, 0, MAX_ID)
        check_bytes("seed", self.seed, (HASH_LEN,))
        check_cid("reveal_cid", self.reveal_cid, optional=True)


@record(133)
@dataclass(frozen=True)
class InferenceEntry:
    """A committed ``InferenceRecord`` with where and by whom it was logged."""

    model_cid: bytes
    query_hash: bytes
    result_hash: bytes
    height: int
    sender: bytes

    def __post_init__(self) -> None:
        check_cid("model_cid", self.model_cid)
        check_bytes("query_hash", self.query_hash, (HASH_LEN,))
        check_bytes("result_hash", self.result_hash, (HASH_LEN,))
        check_int("height", self.height, 0, MAX_ID)
        check_address("sender", self.sender)


@record(134)
@dataclass(frozen=True)
class KeyShareRecord:
    """The latest key share a key holder delivered to a trainer of an HE task."""

    holder: bytes
    encrypted_key_cid: bytes
    height: int

    def __post_init__(self) -> None:
        check_address("holder", self.holder)
        check_cid("encrypted_key_cid", self.encrypted_key_cid)
        check_int("height", self.height, 0, MAX_ID)


@record(135)
@dataclass(frozen=True)
class RoundModel:
    """The global model after a round (round 0: the initial model) and when it was fixed."""

    model_cid: bytes
    height: int

    def __post_init__(self) -> None:
        check_cid("model_cid", self.model_cid)
        check_int("height", self.height, 0, MAX_ID)


# ---------------------------------------------------------------- keys


def task_key(task_id: int) -> bytes:
    return TASK_PREFIX + u64(task_id)


def active_key(task_id: int) -> bytes:
    return ACTIVE_PREFIX + u64(task_id)


def trainer_key(task_id: int, trainer: bytes) -> bytes:
    return TRAINER_PREFIX + u64(task_id) + trainer


def trainers_prefix(task_id: int) -> bytes:
    return TRAINER_PREFIX + u64(task_id)


def sub_key(task_id: int, round_: int, trainer: bytes) -> bytes:
    return SUB_PREFIX + u64(task_id) + u32(round_) + trainer


def subs_prefix(task_id: int, round_: int) -> bytes:
    return SUB_PREFIX + u64(task_id) + u32(round_)


def result_key(task_id: int, round_: int) -> bytes:
    return RESULT_PREFIX + u64(task_id) + u32(round_)


def model_key(task_id: int, round_: int) -> bytes:
    return MODEL_PREFIX + u64(task_id) + u32(round_)


def keyshare_key(task_id: int, trainer: bytes) -> bytes:
    return KEYSHARE_PREFIX + u64(task_id) + trainer


def infer_key(n: int) -> bytes:
    return INFER_PREFIX + u64(n)


# ---------------------------------------------------------------- accessors


def _get(view: View, key: bytes, cls: type[R]) -> R | None:
    raw = view.get(key)
    return None if raw is None else decode_record(raw, cls)


def put(view: Overlay, key: bytes, value: object) -> None:
    view.set(key, encode(value))


def get_counter(view: View, key: bytes) -> int:
    """The next id of a sequence (ids start at 1)."""
    raw = view.get(key)
    if raw is None:
        return 1
    n = decode(raw)
    if type(n) is not int or n < 1:
        raise ValueError(f"corrupt counter under {key!r}")
    return n


def put_counter(view: Overlay, key: bytes, value: int) -> None:
    view.set(key, encode(value))


def load_task(view: View, task_id: int) -> TaskState | None:
    return _get(view, task_key(task_id), TaskState)


def store_task(view: Overlay, task_id: int, task: TaskState) -> None:
    """Write the task and keep the ``active/`` index in step with its status."""
    put(view, task_key(task_id), task)
    if task.status == OPEN:
        view.set(active_key(task_id), b"")
    else:
        view.delete(active_key(task_id))


def active_task_ids(view: View) -> list[int]:
    return [int.from_bytes(k[len(ACTIVE_PREFIX) :], "big") for k, _ in view.items(ACTIVE_PREFIX)]


def load_trainer(view: View, task_id: int, trainer: bytes) -> TrainerState | None:
    return _get(view, trainer_key(task_id, trainer), TrainerState)


def load_submission(view: View, task_id: int, round_: int, trainer: bytes) -> Submission | None:
    return _get(view, sub_key(task_id, round_, trainer), Submission)


def round_submissions(view: View, task_id: int, round_: int) -> list[tuple[bytes, Submission]]:
    """(trainer, submission) of a round, in trainer-address order."""
    prefix = subs_prefix(task_id, round_)
    return [
        (k[len(prefix) :], decode_record(v, Submission))
        for k, v in view.items(prefix)
        if len(k) == len(prefix) + ADDRESS_LEN
    ]


def load_result(view: View, task_id: int, round_: int) -> RoundResult | None:
    return _get(view, result_key(task_id, round_), RoundResult)


def load_round_model(view: View, task_id: int, round_: int) -> RoundModel | None:
    return _get(view, model_key(task_id, round_), RoundModel)


def load_key_share(view: View, task_id: int, trainer: bytes) -> KeyShareRecord | None:
    return _get(view, keyshare_key(task_id, trainer), KeyShareRecord)


def load_inference(view: View, n: int) -> InferenceEntry | None:
    return _get(view, infer_key(n), InferenceEntry)

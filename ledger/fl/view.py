"""Read-only views of the contract state for the node (trainer, verifier, RPC, CLI).

Every function takes a ``ChainState`` (the committed state) or an ``AppState``
/ ``Overlay`` and never writes. Lists come in key order: tasks by id,
trainers and submissions by address (the verifier's canonical order).
"""

from __future__ import annotations

from ledger.codec import decode_record
from ledger.crypto import ADDRESS_LEN
from ledger.fl.rounds import StateLike, as_view, due_rounds, round_id, round_statuses
from ledger.fl.section import RoundResult
from ledger.fl.state import (
    INFER_PREFIX,
    NEXT_TASK_KEY,
    TASK_PREFIX,
    InferenceEntry,
    KeyShareRecord,
    RoundModel,
    Submission,
    TaskState,
    TrainerState,
    get_counter,
    load_inference,
    load_key_share,
    load_result,
    load_round_model,
    load_submission,
    load_task,
    load_trainer,
    round_submissions,
    trainers_prefix,
)

__all__ = [
    "due_rounds",
    "get_inference",
    "get_key_share",
    "get_result",
    "get_round_model",
    "get_submission",
    "get_task",
    "get_trainer",
    "list_inferences",
    "list_results",
    "list_submissions",
    "list_tasks",
    "list_trainers",
    "next_task_id",
    "round_id",
    "round_statuses",
]


def get_task(state: StateLike, task_id: int) -> TaskState | None:
    return load_task(as_view(state), task_id)


def list_tasks(state: StateLike, status: str | None = None) -> list[tuple[int, TaskState]]:
    """(task id, task) of every task (with ``status``, if given), by id."""
    out = []
    for k, v in as_view(state).items(TASK_PREFIX):
        task = decode_record(v, TaskState)
        if status is None or task.status == status:
            out.append((int.from_bytes(k[len(TASK_PREFIX) :], "big"), task))
    return out


def next_task_id(state: StateLike) -> int:
    """The id the next TaskCreate gets."""
    return get_counter(as_view(state), NEXT_TASK_KEY)


def get_trainer(state: StateLike, task_id: int, trainer: bytes) -> TrainerState | None:
    return load_trainer(as_view(state), task_id, trainer)


def list_trainers(state: StateLike, task_id: int) -> list[tuple[bytes, TrainerState]]:
    """(address, record) of every trainer that ever joined the task (``bond == 0``: left)."""
    prefix = trainers_prefix(task_id)
    return [
        (k[len(prefix) :], decode_record(v, TrainerState))
        for k, v in as_view(state).items(prefix)
        if len(k) == len(prefix) + ADDRESS_LEN
    ]


def get_submission(
    state: StateLike, task_id: int, round_: int, trainer: bytes
) -> Submission | None:
    return load_submission(as_view(state), task_id, round_, trainer)


def list_submissions(state: StateLike, task_id: int, round_: int) -> list[tuple[bytes, Submission]]:
    """(trainer, submission) of a round in canonical (trainer address) order."""
    return round_submissions(as_view(state), task_id, round_)


def get_result(state: StateLike, task_id: int, round_: int) -> RoundResult | None:
    """The committed ``RoundResult`` of a closed round."""
    return load_result(as_view(state), task_id, round_)


def list_results(state: StateLike, task_id: int) -> list[RoundResult]:
    """The committed results of a task, by round."""
    task = get_task(state, task_id)
    if task is None:
        return []
    out = []
    for r in range(1, task.rounds_done + 1):
        res = get_result(state, task_id, r)
        if res is not None:
            out.append(res)
    return out


def get_round_model(state: StateLike, task_id: int, round_: int) -> RoundModel | None:
    """The global model after ``round_`` (0: the initial model); None until it is known."""
    return load_round_model(as_view(state), task_id, round_)


def get_key_share(state: StateLike, task_id: int, trainer: bytes) -> KeyShareRecord | None:
    return load_key_share(as_view(state), task_id, trainer)


def get_inference(state: StateLike, n: int) -> InferenceEntry | None:
    return load_inference(as_view(state), n)


def list_inferences(
    state: StateLike, start: int = 1, limit: int = 100
) -> list[tuple[int, InferenceEntry]]:
    """Up to ``limit`` audit entries from number ``start`` on."""
    out: list[tuple[int, InferenceEntry]] = []
    for k, v in as_view(state).items(INFER_PREFIX):
        n = int.from_bytes(k[len(INFER_PREFIX) :], "big")
        if n >= start:
            if len(out) >= limit:
                break
            out.append((n, decode_record(v, InferenceEntry)))
    return out

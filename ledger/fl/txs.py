"""Transaction bodies of the FL task contract (records 100-107; docs/fl-chain.md section 2).

Each body checks its own fields when built or decoded (a malformed body is a
decode error, never a handler failure); rules that need the state are the
handlers' (:mod:`ledger.fl.handlers`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.codec import record
from ledger.fl.spec import (
    HASH_LEN,
    MAX_ID,
    MAX_ROUND_SAMPLES,
    MAX_ROUNDS,
    X25519_KEY_LEN,
    TaskSpec,
    check_address,
    check_bytes,
    check_cid,
    check_int,
)
from ledger.tx import TxBody, check_amount


def _check_task(task_id: int) -> None:
    check_int("task_id", task_id, 1, MAX_ID)


def _check_round(round_: int) -> None:
    check_int("round", round_, 1, MAX_ROUNDS)


@record(100)
@dataclass(frozen=True)
class TaskCreate(TxBody):
    """Create a task: the signer escrows ``spec.pool``; round 1 opens in this block."""

    spec: TaskSpec

    def __post_init__(self) -> None:
        if not isinstance(self.spec, TaskSpec):
            raise ValueError("spec must be a TaskSpec")


@record(101)
@dataclass(frozen=True)
class Join(TxBody):
    """Bond ``bond`` tokens to a task as a trainer (``x25519_pubkey``: HE tasks only)."""

    task_id: int
    bond: int
    x25519_pubkey: bytes

    def __post_init__(self) -> None:
        _check_task(self.task_id)
        check_amount("bond", self.bond)
        check_bytes("x25519_pubkey", self.x25519_pubkey, (0, X25519_KEY_LEN))


@record(102)
@dataclass(frozen=True)
class SubmitUpdate(TxBody):
    """A trainer's update for the open round, with its PoL transcript and data commitment."""

    task_id: int
    round: int
    update_cid: bytes
    transcript_cid: bytes  # empty only for tasks with pol_policy "off"
    sample_count: int
    data_commitment: bytes  # fl.data.data_commitment: Merkle root over the sample hashes

    def __post_init__(self) -> None:
        _check_task(self.task_id)
        _check_round(self.round)
        check_cid("update_cid", self.update_cid)
        check_cid("transcript_cid", self.transcript_cid, optional=True)
        check_int("sample_count", self.sample_count, 1, MAX_ROUND_SAMPLES)
        check_bytes("data_commitment", self.data_commitment, (HASH_LEN,))


@record(103)
@dataclass(frozen=True)
class Reveal(TxBody):
    """The samples of the PoL segments the seed chose (``replay`` policy), as a content object."""

    task_id: int
    round: int
    reveal_cid: bytes

    def __post_init__(self) -> None:
        _check_task(self.task_id)
        _check_round(self.round)
        check_cid("reveal_cid", self.reveal_cid)


@record(104)
@dataclass(frozen=True)
class KeyShare(TxBody):
    """A key holder delivers the task's secret context to ``trainer`` (encrypted to its key)."""

    task_id: int
    trainer: bytes
    encrypted_key_cid: bytes

    def __post_init__(self) -> None:
        _check_task(self.task_id)
        check_address("trainer", self.trainer)
        check_cid("encrypted_key_cid", self.encrypted_key_cid)


@record(105)
@dataclass(frozen=True)
class DecryptedAggregate(TxBody):
    """A key holder posts the new global model of an HE round (the decrypted aggregate)."""

    task_id: int
    round: int
    new_model_cid: bytes

    def __post_init__(self) -> None:
        _check_task(self.task_id)
        _check_round(self.round)
        check_cid("new_model_cid", self.new_model_cid)


@record(106)
@dataclass(frozen=True)
class InferenceRecord(TxBody):
    """Audit entry of one inference: which model answered which query with which result."""

    model_cid: bytes
    query_hash: bytes
    result_hash: bytes

    def __post_init__(self) -> None:
        check_cid("model_cid", self.model_cid)
        check_bytes("query_hash", self.query_hash, (HASH_LEN,))
        check_bytes("result_hash", self.result_hash, (HASH_LEN,))


@record(107)
@dataclass(frozen=True)
class Leave(TxBody):
    """Withdraw the (remaining) bond from a task."""

    task_id: int

    def __post_init__(self) -> None:
        _check_task(self.task_id)

"""Result codes of the FL task contract (100-199; part of the results hash, never renumber)."""

from __future__ import annotations

from enum import IntEnum


class FlCode(IntEnum):
    """Why an FL transaction failed. Balance shortfalls keep the core ``INSUFFICIENT_FUNDS`` (5)."""

    TASK_NOT_FOUND = 100
    TASK_FINISHED = 101
    TASK_NOT_OPEN = 102  # awaiting decryption: no submissions or reveals until the model is known
    BOND_TOO_SMALL = 103
    ALREADY_JOINED = 104
    NOT_JOINED = 105
    TRAINER_JAILED = 106
    WRONG_ROUND = 107
    LATE = 108  # at or after the round's deadline
    DUPLICATE_SUBMISSION = 109
    ROUND_FULL = 110  # clients_per_round submissions already
    ROUND_SAMPLES_EXCEEDED = 111  # the round's sample total would exceed the aggregation bound
    BAD_X25519_KEY = 112  # HE tasks need a 32-byte key, other tasks none
    NOT_REPLAY = 113  # Reveal on a task whose policy is not replay
    NO_SUBMISSION = 114  # Reveal without a submission in that round
    REVEAL_LATE = 115
    DUPLICATE_REVEAL = 116
    NOT_HE = 117  # KeyShare / DecryptedAggregate on a task without HE
    NOT_KEY_HOLDER = 118
    NOT_AWAITING_DECRYPTION = 119
    PENDING_SUBMISSION = 120  # Leave while the trainer's update of the open round is unjudged
    NOTHING_TO_WITHDRAW = 121  # Leave without a bond
    TRANSCRIPT_REQUIRED = 122  # SubmitUpdate without a PoL transcript on a PoL task


def result_code_name(code: int, unknown: str = "CODE_{}") -> str:
    """The name of any CheckTx/DeliverTx code: the core's (0-99) or this contract's (100-199);
    ``unknown`` formats a code neither knows."""
    from ledger.results import Code

    for enum in (Code, FlCode):
        try:
            return enum(code).name
        except ValueError:
            continue
    return unknown.format(code)

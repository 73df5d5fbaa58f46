"""The on-chain federated-learning task contract (docs/fl-chain.md, docs/ledger.md "FL contract").

``register(app)`` installs it: the tx handlers (records 100-107), the
begin-block hook that closes rounds, and the block validator of the FL
section. Everything else here is pure and read-only: the records, the round
rules (:func:`due_rounds`, :func:`round_id`, :func:`pol_seed`), the state views
and the query paths the node serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.fl.close import begin_block
from ledger.fl.codes import FlCode
from ledger.fl.handlers import HANDLERS
from ledger.fl.query import QueryPathError, decode_value, query, query_key
from ledger.fl.rounds import (
    Payout,
    RoundStatus,
    due_rounds,
    pol_seed,
    round_budget,
    round_id,
    round_statuses,
    split_rewards,
)
from ledger.fl.section import Contribution, FLSection, Rejection, RoundResult
from ledger.fl.spec import TaskSpec
from ledger.fl.state import (
    AWAITING_DECRYPTION,
    FINISHED,
    OPEN,
    InferenceEntry,
    KeyShareRecord,
    RoundModel,
    Submission,
    TaskState,
    TrainerState,
)
from ledger.fl.txs import (
    DecryptedAggregate,
    InferenceRecord,
    Join,
    KeyShare,
    Leave,
    Reveal,
    SubmitUpdate,
    TaskCreate,
)
from ledger.fl.validate import check_round_result, check_section
from ledger.fl.view import (
    get_inference,
    get_key_share,
    get_result,
    get_round_model,
    get_submission,
    get_task,
    get_trainer,
    list_inferences,
    list_results,
    list_submissions,
    list_tasks,
    list_trainers,
    next_task_id,
)

if TYPE_CHECKING:
    from ledger.app import Application


def register(app: Application) -> None:
    """Install the contract's handlers, begin-block hook and block validator on ``app``."""
    for body_type, handler in HANDLERS.items():
        app.register_tx_handler(body_type, handler)
    app.add_begin_block(begin_block)
    app.add_block_validator(check_section)


__all__ = [
    "AWAITING_DECRYPTION",
    "FINISHED",
    "OPEN",
    "Contribution",
    "DecryptedAggregate",
    "FLSection",
    "FlCode",
    "InferenceEntry",
    "InferenceRecord",
    "Join",
    "KeyShare",
    "KeyShareRecord",
    "Leave",
    "Payout",
    "QueryPathError",
    "Rejection",
    "Reveal",
    "RoundModel",
    "RoundResult",
    "RoundStatus",
    "SubmitUpdate",
    "Submission",
    "TaskCreate",
    "TaskSpec",
    "TaskState",
    "TrainerState",
    "check_round_result",
    "check_section",
    "decode_value",
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
    "pol_seed",
    "query",
    "query_key",
    "register",
    "round_budget",
    "round_id",
    "round_statuses",
    "split_rewards",
]

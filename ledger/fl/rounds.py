"""Pure round rules: PoL seeds, round ids, which rounds are due or stalled, and reward splits.

The node's proposer and verifiers call :func:`due_rounds` on the state before
a block to know which rounds that block must close; the contract's block
validator and begin-block hook call the same function, so all three agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.chainstate import ChainState
from ledger.codec import sha256
from ledger.fl.state import (
    OPEN,
    TaskState,
    active_task_ids,
    load_task,
    round_submissions,
    u32,
)
from ledger.params import PPM
from ledger.schema import View, u64

SEED_DOMAIN = b"fedledger/pol/seed"

StateLike = ChainState | View


def as_view(state: StateLike) -> View:
    """The app state of a ``ChainState``, or the ``AppState`` / ``Overlay`` itself."""
    return state.app if isinstance(state, ChainState) else state


def pol_seed(block_id: bytes, trainer: bytes) -> bytes:
    """``sha256(b"fedledger/pol/seed" + block_id + trainer)``: fixed by the including block."""
    return sha256(SEED_DOMAIN + block_id + trainer)


def round_id(chain_id: str, task_id: int, round_: int) -> bytes:
    """``sha256(chain_id (UTF-8) || u64be(task_id) || u32be(round))``: binds a PoL transcript.

    The integers have fixed widths at the end, so the concatenation is unambiguous.
    """
    return sha256(chain_id.encode() + u64(task_id) + u32(round_))


# ---------------------------------------------------------------- due and stalled rounds


@dataclass(frozen=True)
class RoundStatus:
    """Where the open round of an open task stands at a height."""

    task_id: int
    round: int
    submissions: int
    due: bool  # the block at this height must close it
    stalled: bool  # its time is up with fewer than min_participants: the deadline moves


def round_status(view: View, task_id: int, task: TaskState, height: int) -> RoundStatus:
    spec = task.spec
    subs = round_submissions(view, task_id, task.round)
    n = len(subs)
    replay = spec.pol_policy == "replay"
    full = n >= spec.clients_per_round and (not replay or all(s.reveal_cid for _, s in subs))
    time_up = height >= task.close_height
    # full implies n >= min_participants (min_participants <= clients_per_round)
    due = full or (time_up and n >= spec.min_participants)
    return RoundStatus(task_id, task.round, n, due, time_up and not due)


def round_statuses(state: StateLike, height: int) -> list[RoundStatus]:
    """Status of every open task's round at ``height``, in task-id order."""
    view = as_view(state)
    out = []
    for task_id in active_task_ids(view):
        task = load_task(view, task_id)
        if task is None or task.status != OPEN:  # the index follows the status; be safe
            continue
        out.append(round_status(view, task_id, task, height))
    return out


def due_rounds(state: StateLike, height: int) -> list[tuple[int, int]]:
    """(task id, round) of every round the block at ``height`` must close, in task-id order.

    ``state`` is the state *before* that block (``ChainState.height == height``).
    A round is due when ``clients_per_round`` submissions arrived (under
    ``replay`` each with its reveal), or at ``height >= deadline`` (``+
    reveal_blocks`` under ``replay``) with at least ``min_participants``.
    """
    return [(s.task_id, s.round) for s in round_statuses(state, height) if s.due]


# ---------------------------------------------------------------- rewards


@dataclass(frozen=True)
class Payout:
    role: str  # "validator" (recipient: validator address, paid to its operator) | "trainer"
    recipient: bytes
    amount: int


def round_budget(pool_left: int, rounds_left: int) -> int:
    """What one round may pay: an equal share of what is left over the rounds left."""
    return pool_left // rounds_left if rounds_left > 0 else 0


def split_rewards(
    budget: int,
    validator_share_ppm: int,
    trainer_reward_cap: int,
    signers: Sequence[bytes],
    contributions: Sequence[tuple[bytes, int]],
) -> list[Payout]:
    """How a round's budget is paid (docs/fl-chain.md section 4, step 2); never more than it.

    Validators (``signers``, in commit order) share ``budget * ppm // 10^6``
    equally, the first taking the remainder. Trainers (``(address, samples)``)
    share the rest in proportion to samples, rounded down, each at most
    ``trainer_reward_cap``. Zero amounts are left out; what is not paid stays
    in the pool.
    """
    out: list[Payout] = []
    v_part = budget * validator_share_ppm // PPM
    if signers:
        each, rem = divmod(v_part, len(signers))
        for i, s in enumerate(signers):
            amount = each + (rem if i == 0 else 0)
            if amount:
                out.append(Payout("validator", s, amount))
    t_part = budget - v_part
    total = sum(samples for _, samples in contributions)
    if total:
        for trainer, samples in contributions:
            amount = min(trainer_reward_cap, t_part * samples // total)
            if amount:
                out.append(Payout("trainer", trainer, amount))
    return out

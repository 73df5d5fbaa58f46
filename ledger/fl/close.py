"""Closing rounds (begin-block): store results, pay rewards, slash, open the next round or finish.

Runs at the start of every block, before its transactions, on the same
pre-block state the proposer and the block validator judged with
:func:`ledger.fl.rounds.due_rounds`: due rounds are closed with the block's
``FLSection``; stalled rounds (time up, fewer than ``min_participants``) get
``round_blocks`` more. Transactions of the block then already see the next
round open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ledger.block import Block
from ledger.context import BlockContext
from ledger.fl.rounds import RoundStatus, round_budget, round_statuses, split_rewards
from ledger.fl.section import FLSection, RoundResult
from ledger.fl.state import (
    AWAITING_DECRYPTION,
    FINISHED,
    OPEN,
    RoundModel,
    TaskState,
    load_task,
    load_trainer,
    model_key,
    put,
    result_key,
    store_task,
    trainer_key,
)
from ledger.params import PPM
from ledger.schema import Account, View, get_account, get_validator, put_account
from ledger.state import Overlay

Emit = Callable[..., None]


def credit(view: Overlay, address: bytes, amount: int) -> None:
    acct = get_account(view, address)
    put_account(view, address, Account(acct.balance + amount, acct.nonce))


def begin_block(ctx: BlockContext) -> None:
    """The contract's begin-block hook."""
    block = ctx.block
    if block is None:  # pragma: no cover - hooks run on blocks only
        return
    statuses = round_statuses(ctx.view, ctx.info.height)
    if not statuses:
        return
    section = block.pol if isinstance(block.pol, FLSection) else None
    results = {r.task_id: r for r in section.results} if section is not None else {}
    for st in statuses:
        if st.due:
            # validate_block ran check_section: every due round has its result
            apply_result(ctx, block, results[st.task_id])
        elif st.stalled:
            extend_deadline(ctx, st)


def extend_deadline(ctx: BlockContext, st: RoundStatus) -> None:
    task = load_task(ctx.view, st.task_id)
    assert task is not None
    spec = task.spec
    task = dataclasses.replace(task, deadline=task.deadline + spec.round_blocks)
    store_task(ctx.view, st.task_id, task)
    ctx.emit(
        "fl.deadline_extended",
        task=st.task_id,
        round=st.round,
        submissions=st.submissions,
        min_participants=spec.min_participants,
        deadline=task.deadline,
    )


def signer_operators(view: View, block: Block) -> list[tuple[bytes, bytes]]:
    """(validator address, operator account) of each signer of ``block.last_commit``, in order."""
    if block.last_commit is None:
        return []
    out = []
    for addr in block.last_commit.signers():
        rec = get_validator(view, addr)
        if rec is not None:
            out.append((addr, rec.operator))
    return out


def apply_result(ctx: BlockContext, block: Block, result: RoundResult) -> None:
    view, height = ctx.view, ctx.info.height
    task_id, round_ = result.task_id, result.round
    task = load_task(view, task_id)
    assert task is not None and task.round == round_
    spec = task.spec
    put(view, result_key(task_id, round_), result)

    budget = round_budget(task.pool_left, task.rounds_left)
    signers = signer_operators(view, block)
    operator_of = dict(signers)
    payouts = split_rewards(
        budget,
        spec.validator_share_ppm,
        spec.trainer_reward_cap,
        [addr for addr, _ in signers],
        [(c.trainer, c.samples) for c in result.accepted],
    )
    earned: dict[bytes, int] = {}
    paid = 0
    for p in payouts:
        account = operator_of[p.recipient] if p.role == "validator" else p.recipient
        credit(view, account, p.amount)
        if p.role == "trainer":
            earned[p.recipient] = p.amount
        paid += p.amount
        ctx.emit(
            "fl.reward",
            task=task_id,
            round=round_,
            role=p.role,
            recipient=p.recipient,
            account=account,
            amount=p.amount,
        )

    for c in result.accepted:
        tr = load_trainer(view, task_id, c.trainer)
        if tr is not None:
            tr = dataclasses.replace(
                tr, accepted=tr.accepted + 1, earned=tr.earned + earned.get(c.trainer, 0)
            )
            put(view, trainer_key(task_id, c.trainer), tr)
    burned = 0
    for r in result.rejected:
        burned += _reject(ctx, task, task_id, round_, r.trainer, r.proven, r.reason)

    task = dataclasses.replace(
        task, pool_left=task.pool_left - paid, rounds_done=task.rounds_done + 1
    )
    ctx.emit(
        "fl.round_closed",
        task=task_id,
        round=round_,
        accepted=len(result.accepted),
        rejected=len(result.rejected),
        budget=budget,
        paid=paid,
        burned=burned,
        new_model_cid=result.new_model_cid,
        encrypted_aggregate_cid=result.encrypted_aggregate_cid,
    )
    if spec.uses_he and result.accepted:
        task = dataclasses.replace(task, status=AWAITING_DECRYPTION)
        store_task(view, task_id, task)
        ctx.emit(
            "fl.awaiting_decryption",
            task=task_id,
            round=round_,
            encrypted_aggregate_cid=result.encrypted_aggregate_cid,
        )
    else:
        # nothing accepted: new_model_cid is the current model (check_round_result)
        conclude_round(view, ctx.emit, task_id, task, result.new_model_cid, height)


def _reject(
    ctx: BlockContext,
    task: TaskState,
    task_id: int,
    round_: int,
    trainer: bytes,
    proven: bool,
    reason: str,
) -> int:
    """Count a rejection; a proven one costs ``slash_ppm`` of the bond (burned) and a strike."""
    view = ctx.view
    tr = load_trainer(view, task_id, trainer)
    if tr is None:  # pragma: no cover - a submitter always has a record
        return 0
    tr = dataclasses.replace(tr, rejected=tr.rejected + 1)
    cut = 0
    if proven:
        spec = task.spec
        cut = tr.bond * spec.slash_ppm // PPM
        strikes = tr.strikes + 1
        newly_jailed = not tr.jailed and strikes >= spec.jail_after
        tr = dataclasses.replace(
            tr, bond=tr.bond - cut, strikes=strikes, jailed=tr.jailed or newly_jailed
        )
        ctx.emit(
            "fl.slash",
            task=task_id,
            round=round_,
            trainer=trainer,
            reason=reason,
            amount=cut,
            bond=tr.bond,
            strikes=strikes,
            jailed=tr.jailed,
        )
        if newly_jailed:
            ctx.emit("fl.trainer_jailed", task=task_id, trainer=trainer, strikes=strikes)
    put(view, trainer_key(task_id, trainer), tr)
    return cut


def conclude_round(
    view: Overlay, emit: Emit, task_id: int, task: TaskState, model_cid: bytes, height: int
) -> None:
    """The round's model is known: record it, then open the next round or finish the task."""
    spec = task.spec
    put(view, model_key(task_id, task.round), RoundModel(model_cid, height))
    task = dataclasses.replace(task, global_model_cid=model_cid)
    if task.rounds_done >= spec.rounds:
        refund = task.pool_left
        if refund:
            credit(view, task.creator, refund)
        task = dataclasses.replace(task, status=FINISHED, pool_left=0)
        emit(
            "fl.task_finished",
            task=task_id,
            rounds=task.rounds_done,
            creator=task.creator,
            refund=refund,
            global_model_cid=model_cid,
        )
    else:
        task = dataclasses.replace(
            task,
            status=OPEN,
            round=task.round + 1,
            round_opened=height,
            deadline=height + spec.round_blocks,
        )
        emit(
            "fl.round_opened",
            task=task_id,
            round=task.round,
            deadline=task.deadline,
            global_model_cid=model_cid,
        )
    store_task(view, task_id, task)

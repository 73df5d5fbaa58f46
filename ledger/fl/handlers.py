"""Transaction handlers of the FL contract; each failure is a ``TxError`` with an ``FlCode``."""

from __future__ import annotations

import dataclasses

from ledger.bank import debit
from ledger.context import TxContext, TxHandler
from ledger.fl.close import conclude_round, credit
from ledger.fl.codes import FlCode
from ledger.fl.rounds import pol_seed
from ledger.fl.spec import MAX_ROUND_SAMPLES, X25519_KEY_LEN
from ledger.fl.state import (
    AWAITING_DECRYPTION,
    FINISHED,
    NEXT_INFER_KEY,
    NEXT_TASK_KEY,
    OPEN,
    InferenceEntry,
    KeyShareRecord,
    RoundModel,
    Submission,
    TaskState,
    TrainerState,
    get_counter,
    infer_key,
    keyshare_key,
    load_submission,
    load_task,
    load_trainer,
    model_key,
    put,
    put_counter,
    round_submissions,
    store_task,
    sub_key,
    trainer_key,
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
from ledger.results import TxError
from ledger.tx import TxBody


def _task(ctx: TxContext, task_id: int) -> TaskState:
    task = load_task(ctx.view, task_id)
    if task is None:
        raise TxError(FlCode.TASK_NOT_FOUND, f"no task {task_id}")
    return task


def _not_finished(task_id: int, task: TaskState) -> None:
    if task.status == FINISHED:
        raise TxError(FlCode.TASK_FINISHED, f"task {task_id} is finished")


def _open_round(task_id: int, task: TaskState, round_: int) -> None:
    _not_finished(task_id, task)
    if task.status != OPEN:
        raise TxError(FlCode.TASK_NOT_OPEN, f"task {task_id} round {task.round} awaits decryption")
    if round_ != task.round:
        raise TxError(
            FlCode.WRONG_ROUND, f"task {task_id} has round {task.round} open, not {round_}"
        )


def _key_holder(ctx: TxContext, task_id: int, task: TaskState) -> None:
    if not task.spec.uses_he:
        raise TxError(FlCode.NOT_HE, f"task {task_id} does not use HE")
    if ctx.signer not in task.spec.key_holders:
        raise TxError(FlCode.NOT_KEY_HOLDER, f"{ctx.signer.hex()} is not a key holder of the task")


def handle_task_create(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, TaskCreate)
    spec, height = body.spec, ctx.info.height
    debit(ctx, ctx.signer, spec.pool)
    task_id = get_counter(ctx.view, NEXT_TASK_KEY)
    put_counter(ctx.view, NEXT_TASK_KEY, task_id + 1)
    task = TaskState(
        spec=spec,
        creator=ctx.signer,
        status=OPEN,
        round=1,
        round_opened=height,
        deadline=height + spec.round_blocks,
        global_model_cid=spec.initial_model_cid,
        pool_left=spec.pool,
        rounds_done=0,
    )
    store_task(ctx.view, task_id, task)
    put(ctx.view, model_key(task_id, 0), RoundModel(spec.initial_model_cid, height))
    ctx.emit(
        "fl.task_created",
        task=task_id,
        creator=ctx.signer,
        name=spec.name,
        model_id=spec.model_id,
        rule=spec.rule,
        privacy=spec.privacy,
        pol_policy=spec.pol_policy,
        rounds=spec.rounds,
        pool=spec.pool,
    )
    ctx.emit(
        "fl.round_opened",
        task=task_id,
        round=1,
        deadline=task.deadline,
        global_model_cid=spec.initial_model_cid,
    )


def handle_join(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Join)
    task = _task(ctx, body.task_id)
    _not_finished(body.task_id, task)
    spec = task.spec
    if body.bond < spec.join_bond:
        raise TxError(FlCode.BOND_TOO_SMALL, f"bond {body.bond} < join_bond {spec.join_bond}")
    if spec.uses_he != (len(body.x25519_pubkey) == X25519_KEY_LEN):
        want = "a 32-byte X25519 key (HE task)" if spec.uses_he else "no X25519 key (no HE)"
        raise TxError(FlCode.BAD_X25519_KEY, f"task {body.task_id} needs {want}")
    tr = load_trainer(ctx.view, body.task_id, ctx.signer)
    if tr is not None and tr.jailed:
        raise TxError(FlCode.TRAINER_JAILED, f"jailed from task {body.task_id}")
    if tr is not None and tr.joined:
        raise TxError(FlCode.ALREADY_JOINED, f"already joined task {body.task_id}")
    debit(ctx, ctx.signer, body.bond)
    base = tr or TrainerState(0, 0, False, b"", 0, 0, 0)
    new = dataclasses.replace(base, bond=body.bond, x25519_pubkey=body.x25519_pubkey)
    put(ctx.view, trainer_key(body.task_id, ctx.signer), new)
    ctx.emit("fl.join", task=body.task_id, trainer=ctx.signer, bond=body.bond)


def handle_submit_update(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, SubmitUpdate)
    task_id, height = body.task_id, ctx.info.height
    task = _task(ctx, task_id)
    tr = load_trainer(ctx.view, task_id, ctx.signer)
    if tr is not None and tr.jailed:
        raise TxError(FlCode.TRAINER_JAILED, f"jailed from task {task_id}")
    if tr is None or not tr.joined:
        raise TxError(FlCode.NOT_JOINED, f"{ctx.signer.hex()} has not joined task {task_id}")
    _open_round(task_id, task, body.round)
    if height >= task.deadline:
        raise TxError(FlCode.LATE, f"round {body.round} took submissions until {task.deadline - 1}")
    if task.spec.pol_policy != "off" and not body.transcript_cid:
        raise TxError(
            FlCode.TRANSCRIPT_REQUIRED, f"policy {task.spec.pol_policy} needs a transcript"
        )
    if load_submission(ctx.view, task_id, body.round, ctx.signer) is not None:
        raise TxError(FlCode.DUPLICATE_SUBMISSION, f"already submitted in round {body.round}")
    subs = round_submissions(ctx.view, task_id, body.round)
    if len(subs) >= task.spec.clients_per_round:
        raise TxError(FlCode.ROUND_FULL, f"round has {len(subs)} submissions already")
    total = sum(s.sample_count for _, s in subs) + body.sample_count
    if total > MAX_ROUND_SAMPLES:
        raise TxError(
            FlCode.ROUND_SAMPLES_EXCEEDED, f"round samples {total} would exceed {MAX_ROUND_SAMPLES}"
        )
    # CheckTx has no block: its seed is a placeholder that is never committed
    block = ctx.block.block
    seed = pol_seed(block.id if block is not None else b"", ctx.signer)
    sub = Submission(
        update_cid=body.update_cid,
        transcript_cid=body.transcript_cid,
        sample_count=body.sample_count,
        data_commitment=body.data_commitment,
        height=height,
        seed=seed,
        reveal_cid=b"",
    )
    put(ctx.view, sub_key(task_id, body.round, ctx.signer), sub)
    ctx.emit(
        "fl.submission",
        task=task_id,
        round=body.round,
        trainer=ctx.signer,
        update_cid=body.update_cid,
        samples=body.sample_count,
        seed=seed,
    )


def handle_reveal(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Reveal)
    task_id = body.task_id
    task = _task(ctx, task_id)
    if task.spec.pol_policy != "replay":
        raise TxError(FlCode.NOT_REPLAY, f"task {task_id} has PoL policy {task.spec.pol_policy}")
    _open_round(task_id, task, body.round)
    sub = load_submission(ctx.view, task_id, body.round, ctx.signer)
    if sub is None:
        raise TxError(FlCode.NO_SUBMISSION, f"no submission in round {body.round} to reveal for")
    if ctx.info.height >= task.close_height:
        raise TxError(FlCode.REVEAL_LATE, f"reveals were due before {task.close_height}")
    if sub.reveal_cid:
        raise TxError(FlCode.DUPLICATE_REVEAL, "already revealed")
    put(
        ctx.view,
        sub_key(task_id, body.round, ctx.signer),
        dataclasses.replace(sub, reveal_cid=body.reveal_cid),
    )
    ctx.emit(
        "fl.reveal", task=task_id, round=body.round, trainer=ctx.signer, reveal_cid=body.reveal_cid
    )


def handle_key_share(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, KeyShare)
    task = _task(ctx, body.task_id)
    _key_holder(ctx, body.task_id, task)
    _not_finished(body.task_id, task)
    tr = load_trainer(ctx.view, body.task_id, body.trainer)
    if tr is not None and tr.jailed:
        raise TxError(FlCode.TRAINER_JAILED, f"{body.trainer.hex()} is jailed from the task")
    if tr is None or not tr.joined:
        raise TxError(FlCode.NOT_JOINED, f"{body.trainer.hex()} has not joined the task")
    record = KeyShareRecord(ctx.signer, body.encrypted_key_cid, ctx.info.height)
    put(ctx.view, keyshare_key(body.task_id, body.trainer), record)
    ctx.emit(
        "fl.key_share",
        task=body.task_id,
        trainer=body.trainer,
        holder=ctx.signer,
        encrypted_key_cid=body.encrypted_key_cid,
    )


def handle_decrypted_aggregate(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, DecryptedAggregate)
    task = _task(ctx, body.task_id)
    _key_holder(ctx, body.task_id, task)
    if task.status != AWAITING_DECRYPTION or task.round != body.round:
        raise TxError(
            FlCode.NOT_AWAITING_DECRYPTION,
            f"task {body.task_id} round {body.round} is not awaiting decryption",
        )
    ctx.emit(
        "fl.decrypted",
        task=body.task_id,
        round=body.round,
        holder=ctx.signer,
        new_model_cid=body.new_model_cid,
    )
    conclude_round(ctx.view, ctx.emit, body.task_id, task, body.new_model_cid, ctx.info.height)


def handle_inference_record(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, InferenceRecord)
    n = get_counter(ctx.view, NEXT_INFER_KEY)
    put_counter(ctx.view, NEXT_INFER_KEY, n + 1)
    entry = InferenceEntry(
        body.model_cid, body.query_hash, body.result_hash, ctx.info.height, ctx.signer
    )
    put(ctx.view, infer_key(n), entry)
    ctx.emit(
        "fl.inference",
        n=n,
        sender=ctx.signer,
        model_cid=body.model_cid,
        query_hash=body.query_hash,
        result_hash=body.result_hash,
    )


def handle_leave(ctx: TxContext, body: TxBody) -> None:
    assert isinstance(body, Leave)
    task_id = body.task_id
    task = _task(ctx, task_id)
    tr = load_trainer(ctx.view, task_id, ctx.signer)
    if tr is None or not tr.joined:
        raise TxError(FlCode.NOTHING_TO_WITHDRAW, f"no bond in task {task_id}")
    if task.status == OPEN and load_submission(ctx.view, task_id, task.round, ctx.signer):
        raise TxError(
            FlCode.PENDING_SUBMISSION, f"the update for round {task.round} is not judged yet"
        )
    credit(ctx.view, ctx.signer, tr.bond)
    put(ctx.view, trainer_key(task_id, ctx.signer), dataclasses.replace(tr, bond=0))
    ctx.emit("fl.leave", task=task_id, trainer=ctx.signer, amount=tr.bond)


HANDLERS: dict[type[TxBody], TxHandler] = {
    TaskCreate: handle_task_create,
    Join: handle_join,
    SubmitUpdate: handle_submit_update,
    Reveal: handle_reveal,
    KeyShare: handle_key_share,
    DecryptedAggregate: handle_decrypted_aggregate,
    InferenceRecord: handle_inference_record,
    Leave: handle_leave,
}

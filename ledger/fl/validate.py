"""The block validator of the contract: the FL section's presence and structure against the state.

Registered with ``Application.add_block_validator``, so it runs in
ProcessProposal (``validate_block``) and before every ``apply_block``. It
checks what the state alone decides; the verifier service checks the content
(PoL verdicts, scores, the aggregate and its CID) before prevoting.
"""

from __future__ import annotations

from ledger.block import Block
from ledger.chainstate import ChainState
from ledger.errors import InvalidBlockError
from ledger.fl.rounds import StateLike, as_view, due_rounds
from ledger.fl.section import FLSection, RoundResult
from ledger.fl.state import load_task, round_submissions


def _fmt(rounds: list[tuple[int, int]]) -> str:
    return ", ".join(f"task {t} round {r}" for t, r in rounds) or "none"


def check_section(state: ChainState, block: Block) -> None:
    """Raise :class:`InvalidBlockError` unless ``block`` carries exactly the FL section it must.

    A block at a height where rounds are due (:func:`due_rounds` on ``state``)
    carries an ``FLSection`` with one result per due round in task-id order;
    any other block carries none. PoL sections of other types are not this
    contract's business.
    """
    h = block.height
    due = due_rounds(state, h)
    section = block.pol if isinstance(block.pol, FLSection) else None
    if not due:
        if section is not None:
            raise InvalidBlockError(f"block {h}: FL section present but no round is due")
        return
    if section is None:
        raise InvalidBlockError(f"block {h}: no FL section but due: {_fmt(due)}")
    got = [(r.task_id, r.round) for r in section.results]
    if got != due:
        raise InvalidBlockError(f"block {h}: FL section closes {_fmt(got)}, due: {_fmt(due)}")
    for result in section.results:
        try:
            check_round_result(state, result)
        except InvalidBlockError as e:
            raise InvalidBlockError(f"block {h}: {e}") from e


def check_round_result(state: StateLike, result: RoundResult) -> None:
    """Raise :class:`InvalidBlockError` unless ``result`` fits its round's submissions and task.

    Every submission of the round is judged exactly once (accepted or
    rejected), with its own update CID and, when accepted, its sample count;
    the model fields follow the task's privacy (see :class:`RoundResult`);
    without PoL (policy ``off``) no PoL evidence is listed.
    """
    view = as_view(state)
    where = f"result of task {result.task_id} round {result.round}"
    task = load_task(view, result.task_id)
    if task is None or task.round != result.round:
        raise InvalidBlockError(f"{where}: not the task's open round")
    subs = dict(round_submissions(view, result.task_id, result.round))
    judged = [c.trainer for c in result.accepted] + [r.trainer for r in result.rejected]
    missing = sorted(set(subs) - set(judged))
    if missing:
        raise InvalidBlockError(f"{where}: submission of {missing[0].hex()} not judged")
    extra = sorted(set(judged) - set(subs))
    if extra:
        raise InvalidBlockError(f"{where}: {extra[0].hex()} did not submit in this round")
    for c in result.accepted:
        sub = subs[c.trainer]
        if c.update_cid != sub.update_cid:
            raise InvalidBlockError(f"{where}: accepted update of {c.trainer.hex()} has wrong CID")
        if c.samples != sub.sample_count:
            raise InvalidBlockError(
                f"{where}: {c.trainer.hex()} has {c.samples} samples, submitted {sub.sample_count}"
            )
        if task.spec.pol_policy == "off" and (c.pol_segments or c.checkpoint_cids):
            raise InvalidBlockError(f"{where}: PoL evidence listed for a task without PoL")
    for r in result.rejected:
        if r.update_cid != subs[r.trainer].update_cid:
            raise InvalidBlockError(f"{where}: rejected update of {r.trainer.hex()} has wrong CID")
    _check_model_fields(where, result, task.spec.uses_he, task.global_model_cid)


def _check_model_fields(where: str, result: RoundResult, he: bool, global_cid: bytes) -> None:
    digest, model, enc = (
        result.aggregate_digest,
        result.new_model_cid,
        result.encrypted_aggregate_cid,
    )
    if not result.accepted:
        if model != global_cid or digest or enc:
            raise InvalidBlockError(
                f"{where}: nothing accepted, so the model stays (new_model_cid = the current "
                "global model, no digest, no encrypted aggregate)"
            )
    elif he:
        if not enc or model or digest:
            raise InvalidBlockError(
                f"{where}: HE round needs encrypted_aggregate_cid only (the key holders post "
                "the model)"
            )
    elif not model or len(digest) != 32 or enc:
        raise InvalidBlockError(
            f"{where}: plaintext round needs new_model_cid and a 32-byte aggregate_digest, "
            "no encrypted aggregate"
        )

"""FL RPC methods: tasks, rounds, submissions, the committed models, inference, training.

State answers come from the contract's query paths (``ledger.fl.query``): record fields by
name, bytes as hex, content ids as CIDv1 text. Models are safetensors objects from the
content store (fetched from peers when this node lacks them).
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any

from node.rpc.jsonrpc import (
    NOT_FOUND,
    SERVER_ERROR,
    Param,
    Registry,
    RPCError,
    invalid_params,
    require_operator,
)

if TYPE_CHECKING:
    from node.daemon import Node

MAX_INFER_ROWS = 1024
MAX_MODEL_BYTES = 64 * 1024 * 1024


def _q(node: Node, path: str) -> Any:
    from ledger.fl import QueryPathError, query

    try:
        return query(node.chain.state, path)
    except QueryPathError as e:
        raise invalid_params(str(e)) from None


def _found(value: Any, what: str) -> Any:
    if value is None:
        raise RPCError(NOT_FOUND, "Not found", f"{what} does not exist")
    return value


def register_fl(reg: Registry, node: Node) -> None:
    async def fl_tasks(status: str = "") -> dict[str, Any]:
        """All tasks (optionally only those with ``status``: open, awaiting_decryption, finished)."""
        tasks = _q(node, "/fl/tasks" + (f"/{status}" if status else ""))
        return {"tasks": tasks, "height": str(node.chain.height)}

    async def fl_task(task_id: int) -> dict[str, Any]:
        """One task: its spec, where it stands, its trainers and the rounds due now."""
        task = _found(_q(node, f"/fl/task/{task_id}"), f"task {task_id}")
        return {"task_id": task_id, "task": task,
                "trainers": _q(node, f"/fl/trainers/{task_id}"),
                "due": _q(node, "/fl/due"), "height": str(node.chain.height)}

    async def fl_round(task_id: int, round: int) -> dict[str, Any]:
        """The committed result of a round (accepted, rejected with reasons, the new model)."""
        return {"result": _found(_q(node, f"/fl/round/{task_id}/{round}"),
                                 f"result of task {task_id} round {round}"),
                "model": _q(node, f"/fl/model/{task_id}/{round}")}

    async def fl_rounds(task_id: int) -> dict[str, Any]:
        """Every committed result of a task, by round."""
        return {"results": _q(node, f"/fl/rounds/{task_id}")}

    async def fl_submissions(task_id: int, round: int) -> dict[str, Any]:
        """The submissions of a round, in canonical (trainer address) order."""
        return {"submissions": _q(node, f"/fl/submissions/{task_id}/{round}")}

    async def _model(task_id: int, round: int | None) -> tuple[bytes, Any, int]:
        from ledger.fl import get_round_model, get_task

        state = node.chain.state
        task = get_task(state, task_id)
        if task is None:
            raise RPCError(NOT_FOUND, "Not found", f"task {task_id} does not exist")
        r = task.rounds_done if round is None else round
        rm = get_round_model(state, task_id, r)
        if rm is None:
            raise RPCError(NOT_FOUND, "Not found",
                           f"no committed model for task {task_id} round {r} "
                           f"(rounds done: {task.rounds_done})")
        cid = bytes(rm.model_cid)
        store = node.content.store
        if not store.has(cid):
            try:
                await node.content.fetch(cid, pin=f"global model task {task_id}")
            except Exception as e:
                raise RPCError(SERVER_ERROR, "Unavailable",
                               f"model {cid.hex()[:16]} not found on peers: {e}") from None
        return cid, task, r

    async def fl_model(task_id: int, round: int | None = None) -> dict[str, Any]:
        """The committed global model (safetensors, base64) after ``round`` (default: latest)."""
        from storage.cid import parse_cid

        cid, task, r = await _model(task_id, round)
        data = node.content.store.get_bytes(cid)
        if len(data) > MAX_MODEL_BYTES:
            raise RPCError(SERVER_ERROR, "Too large", "use content_get/content_read for this model")
        return {"task_id": task_id, "round": r, "cid": str(parse_cid(cid)),
                "model_id": task.spec.model_id, "model_config": task.spec.model_config,
                "format": "safetensors", "bytes": len(data),
                "data": base64.b64encode(data).decode()}

    async def fl_infer(task_id: int, inputs: list[Any], round: int | None = None,
                       record: bool = False) -> dict[str, Any]:
        """Run the committed model on ``inputs`` (rows of floats in the task's sample shape);
        with ``record`` (operator-only) also log an InferenceRecord audit entry on chain."""
        import numpy as np
        import trio

        from fl.models import input_shape
        from node.fl.work import infer

        if record:
            require_operator("fl_infer with record=true (the node signs a transaction)")
        if not inputs or len(inputs) > MAX_INFER_ROWS:
            raise invalid_params(f"inputs: 1..{MAX_INFER_ROWS} rows")
        cid, task, r = await _model(task_id, round)
        shape = input_shape(task.spec.model_id, dict(task.spec.model_config))
        try:
            x = np.asarray(inputs, dtype=np.float32).reshape((len(inputs), *shape))
        except (ValueError, TypeError) as e:
            raise invalid_params(f"inputs: expected rows of shape {list(shape)} ({e})") from None
        if not np.isfinite(x).all():
            raise invalid_params("inputs: NaN or infinity")
        data = node.content.store.get_bytes(cid)
        preds, probs = await trio.to_thread.run_sync(
            infer, task.spec.model_id, dict(task.spec.model_config), data, x)
        out: dict[str, Any] = {"task_id": task_id, "round": r, "predictions": preds,
                               "probabilities": probs}
        if record:
            out["record"] = await _record(cid, x.tobytes(), repr(preds).encode())
        return out

    async def _record(model_cid: bytes, query: bytes, result: bytes) -> dict[str, Any]:
        from ledger.fl import InferenceRecord
        from ledger.schema import get_account
        from ledger.tx import sign_tx
        from node.keys import load_account_key

        key = load_account_key(node.home.root, node.cfg.moniker)
        acct = get_account(node.chain.state.app, key.address)
        body = InferenceRecord(model_cid, hashlib.sha256(query).digest(),
                               hashlib.sha256(result).digest())
        tx = sign_tx(key, node.chain_id, body, acct.nonce if acct is not None else 0)
        res = await node.chain.submit_tx(tx.encoded)
        return {"tx_hash": tx.hash.hex().upper(), "code": int(res.code), "log": res.log}

    async def fl_trainer_status() -> dict[str, Any]:
        """This node's trainer: account, data, and the rounds it trained (if enabled)."""
        tr = node.fl.trainer
        if tr is None:
            return {"enabled": False}
        return {"enabled": True, "account": tr.address.hex(),
                "samples": len(tr.dataset) if tr.dataset is not None else 0,
                "busy": [list(k) for k in sorted(tr.busy)],
                "rounds": [vars(h) for h in tr.history[-50:]]}

    async def fl_verifier_status() -> dict[str, Any]:
        """Verification statistics of this validator."""
        v = node.fl.verifier
        # seconds spent (cumulative): submission checks (fetch + PoL), of which fetching
        # content from peers, and aggregating rounds
        return {"stats": dict(v.stats), "checked": len(v.work.checks),
                "seconds": {"checks": round(sum(c.seconds for c in v.work.checks.values()), 3),
                            "fetch": round(v.fetch_seconds, 3),
                            "aggregate": round(v.aggregate_seconds, 3)}}

    reg.add("fl_tasks", fl_tasks, [Param("status", "str", max_len=32)])
    reg.add("fl_task", fl_task, [Param("task_id", "int", required=True, minimum=1)])
    reg.add("fl_round", fl_round, [Param("task_id", "int", required=True, minimum=1),
                                   Param("round", "int", required=True, minimum=0)])
    reg.add("fl_rounds", fl_rounds, [Param("task_id", "int", required=True, minimum=1)])
    reg.add("fl_submissions", fl_submissions, [Param("task_id", "int", required=True, minimum=1),
                                               Param("round", "int", required=True, minimum=1)])
    reg.add("fl_model", fl_model, [Param("task_id", "int", required=True, minimum=1),
                                   Param("round", "int", minimum=0)])
    reg.add("fl_infer", fl_infer, [Param("task_id", "int", required=True, minimum=1),
                                   Param("inputs", "list", required=True),
                                   Param("round", "int", minimum=0), Param("record", "bool")])
    reg.add("fl_trainer_status", fl_trainer_status)
    reg.add("fl_verifier_status", fl_verifier_status)

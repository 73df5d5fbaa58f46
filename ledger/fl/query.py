"""Query paths of the contract (``abci_query``-style) and JSON-ready views of its records.

Single-record paths map to one state key (:func:`query_key`), so the node can
answer them with a Merkle proof (``Application.query``) and render the value
with :func:`decode_value`. List paths (:func:`query`) scan a prefix and carry
no proof.

=========================================== ======================================
path                                        answer
=========================================== ======================================
``/fl/task/<id>``                           the task (``TaskState``)
``/fl/trainer/<id>/<address>``              a trainer's standing (``TrainerState``)
``/fl/submission/<id>/<round>/<address>``   one submission
``/fl/round/<id>/<round>``                  the committed ``RoundResult``
``/fl/model/<id>/<round>``                  the global model after the round (0: initial)
``/fl/keyshare/<id>/<address>``             the key share delivered to a trainer (HE)
``/fl/inference/<n>``                       an inference audit entry
``/fl/next_task``                           the id the next task gets
``/fl/tasks`` [``/<status>``]               list of tasks
``/fl/trainers/<id>``                       list of a task's trainers
``/fl/submissions/<id>/<round>``            list of a round's submissions (canonical order)
``/fl/rounds/<id>``                         list of a task's committed results
``/fl/due``                                 rounds the next block must close (ChainState only)
=========================================== ======================================

JSON: record fields by name; bytes as lower-case hex, except content ids
(fields named ``*_cid`` / ``*_cids``) as CIDv1 text (multibase base32,
``b...``); integers as JSON integers (token amounts can exceed 2^53).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from typing import Any

from ledger.chainstate import ChainState
from ledger.codec import CodecError, decode, decode_record
from ledger.crypto import ADDRESS_LEN
from ledger.fl import view as fl_view
from ledger.fl.rounds import StateLike, as_view
from ledger.fl.section import RoundResult
from ledger.fl.spec import MAX_ID, MAX_ROUNDS
from ledger.fl.state import (
    INFER_PREFIX,
    KEYSHARE_PREFIX,
    MODEL_PREFIX,
    NEXT_TASK_KEY,
    RESULT_PREFIX,
    STATUSES,
    SUB_PREFIX,
    TASK_PREFIX,
    TRAINER_PREFIX,
    InferenceEntry,
    KeyShareRecord,
    RoundModel,
    Submission,
    TaskState,
    TrainerState,
    infer_key,
    keyshare_key,
    model_key,
    result_key,
    sub_key,
    task_key,
    trainer_key,
)

QUERY_PATHS = (
    "/fl/task/<id>, /fl/trainer/<id>/<address>, /fl/submission/<id>/<round>/<address>, "
    "/fl/round/<id>/<round>, /fl/model/<id>/<round>, /fl/keyshare/<id>/<address>, "
    "/fl/inference/<n>, /fl/next_task, /fl/tasks[/<status>], /fl/trainers/<id>, "
    "/fl/submissions/<id>/<round>, /fl/rounds/<id>, /fl/due"
)
LIST_KINDS = ("tasks", "trainers", "submissions", "rounds", "due")
_NUM = re.compile(r"[0-9]{1,19}")
_HEX_ADDR = re.compile(r"[0-9a-fA-F]{40}")


class QueryPathError(ValueError):
    """A malformed or unknown FL query path; the message says what is expected."""


def is_fl_path(path: str) -> bool:
    return path.strip().startswith("/fl/")


def cid_text(cid: bytes) -> str:
    """The text form of a binary CID: multibase base32, lower case, unpadded (``b...``)."""
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


# ---------------------------------------------------------------- path parsing


def _split(path: str) -> tuple[str, list[str]]:
    parts = path.strip().split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "fl" or not parts[2]:
        raise QueryPathError(f"unknown FL query path {path!r:.80}; use {QUERY_PATHS}")
    return parts[2], parts[3:]


def _int(what: str, text: str, lo: int, hi: int) -> int:
    if not _NUM.fullmatch(text) or not lo <= int(text) <= hi:
        raise QueryPathError(f"{what} must be a decimal integer in {lo}..{hi}, got {text!r:.40}")
    return int(text)


def _addr(text: str) -> bytes:
    if not _HEX_ADDR.fullmatch(text):
        raise QueryPathError(f"address must be {ADDRESS_LEN} bytes in hex, got {text!r:.60}")
    return bytes.fromhex(text)


def _args(kind: str, args: list[str], n: int, usage: str) -> None:
    if len(args) != n:
        raise QueryPathError(f"/fl/{kind} takes {usage}")


def query_key(path: str) -> bytes:
    """The state key of a single-record FL path (raises :class:`QueryPathError`)."""
    kind, args = _split(path)
    if kind in LIST_KINDS:
        raise QueryPathError(f"/fl/{kind} lists records; it has no single key to prove")
    if kind == "next_task":
        _args(kind, args, 0, "no arguments")
        return NEXT_TASK_KEY
    if kind == "inference":
        _args(kind, args, 1, "<n>")
        return infer_key(_int("n", args[0], 1, MAX_ID))
    if kind not in ("task", "trainer", "submission", "round", "model", "keyshare"):
        raise QueryPathError(f"unknown FL query path {path!r:.80}; use {QUERY_PATHS}")
    if not args:
        raise QueryPathError(f"/fl/{kind} needs a task id")
    task_id = _int("task id", args[0], 1, MAX_ID)
    if kind == "task":
        _args(kind, args, 1, "<id>")
        return task_key(task_id)
    if kind == "trainer":
        _args(kind, args, 2, "<id>/<address>")
        return trainer_key(task_id, _addr(args[1]))
    if kind == "keyshare":
        _args(kind, args, 2, "<id>/<address>")
        return keyshare_key(task_id, _addr(args[1]))
    if kind == "submission":
        _args(kind, args, 3, "<id>/<round>/<address>")
        return sub_key(task_id, _int("round", args[1], 1, MAX_ROUNDS), _addr(args[2]))
    _args(kind, args, 2, "<id>/<round>")
    if kind == "round":
        return result_key(task_id, _int("round", args[1], 1, MAX_ROUNDS))
    return model_key(task_id, _int("round", args[1], 0, MAX_ROUNDS))


# ---------------------------------------------------------------- JSON


def to_json(obj: Any, name: str = "") -> Any:
    """JSON-ready form of a record or plain value (see the module docstring)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes):
        is_cid = name.endswith("_cid") or name.endswith("_cids")
        return (cid_text(obj) if obj else "") if is_cid else obj.hex()
    if isinstance(obj, (list, tuple)):
        return [to_json(x, name) for x in obj]
    if isinstance(obj, dict):
        return {k: to_json(v, k) for k, v in obj.items()}
    return obj


def _num(key: bytes, start: int, width: int) -> int:
    return int.from_bytes(key[start : start + width], "big")


def decode_value(key: bytes, value: bytes | None) -> Any:
    """JSON view of the value under an FL state key (None when absent).

    Identifying parts of the key (task id, round, address) are added to the
    record's fields. Raises ``CodecError`` for a corrupt value and
    :class:`QueryPathError` for a key outside the FL layout.
    """
    if value is None:
        return None
    if key == NEXT_TASK_KEY:
        return {"next_task": decode(value)}
    layouts: list[tuple[bytes, type, tuple[tuple[str, int], ...]]] = [
        (TASK_PREFIX, TaskState, (("id", 8),)),
        (TRAINER_PREFIX, TrainerState, (("task", 8), ("address", ADDRESS_LEN))),
        (SUB_PREFIX, Submission, (("task", 8), ("round", 4), ("trainer", ADDRESS_LEN))),
        (RESULT_PREFIX, RoundResult, (("task", 8), ("round", 4))),
        (MODEL_PREFIX, RoundModel, (("task", 8), ("round", 4))),
        (KEYSHARE_PREFIX, KeyShareRecord, (("task", 8), ("trainer", ADDRESS_LEN))),
        (INFER_PREFIX, InferenceEntry, (("n", 8),)),
    ]
    for prefix, cls, parts in layouts:
        if not key.startswith(prefix):
            continue
        if len(key) != len(prefix) + sum(w for _, w in parts):
            break
        out: dict[str, Any] = {}
        pos = len(prefix)
        for part, width in parts:
            raw = key[pos : pos + width]
            out[part] = raw.hex() if width == ADDRESS_LEN else int.from_bytes(raw, "big")
            pos += width
        out.update(to_json(decode_record(value, cls)))
        return out
    raise QueryPathError(f"key {key.hex()[:80]} is not an FL state key")


def query(state: StateLike, path: str) -> Any:
    """Answer an FL path with JSON-ready data (no proof): a record view, None, or a list."""
    kind, args = _split(path)
    if kind not in LIST_KINDS:
        key = query_key(path)
        return decode_value(key, as_view(state).get(key))
    if kind == "tasks":
        if len(args) > 1 or (args and args[0] not in STATUSES):
            raise QueryPathError(f"/fl/tasks takes an optional status: {', '.join(STATUSES)}")
        status = args[0] if args else None
        return [{"id": i, **to_json(t)} for i, t in fl_view.list_tasks(state, status)]
    if kind == "due":
        _args(kind, args, 0, "no arguments")
        if not isinstance(state, ChainState):
            raise QueryPathError("/fl/due needs the chain state (its next height)")
        return [{"task": t, "round": r} for t, r in fl_view.due_rounds(state, state.height)]
    if not args:
        raise QueryPathError(f"/fl/{kind} needs a task id")
    task_id = _int("task id", args[0], 1, MAX_ID)
    if kind == "trainers":
        _args(kind, args, 1, "<id>")
        return [
            {"task": task_id, "address": a.hex(), **to_json(t)}
            for a, t in fl_view.list_trainers(state, task_id)
        ]
    if kind == "rounds":
        _args(kind, args, 1, "<id>")
        return [to_json(r) for r in fl_view.list_results(state, task_id)]
    _args(kind, args, 2, "<id>/<round>")
    round_ = _int("round", args[1], 1, MAX_ROUNDS)
    return [
        {"task": task_id, "round": round_, "trainer": a.hex(), **to_json(s)}
        for a, s in fl_view.list_submissions(state, task_id, round_)
    ]


__all__ = [
    "QUERY_PATHS",
    "CodecError",
    "QueryPathError",
    "cid_text",
    "decode_value",
    "is_fl_path",
    "query",
    "query_key",
    "to_json",
]

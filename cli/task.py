"""FL on the chain from the CLI: `fedledger task create|list|status`, `fedledger train`,
`fedledger model get` and `fedledger infer`.

`task create` stores the initial model in the node's content store (`content_put`, operator
token), signs a `TaskCreate` with a keyring key and waits for its block; `train` runs the node
daemon (as `node run`) with its `[trainer]` section taken from the flags; the others read the
`fl_*` RPC methods.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import HomeOpt, JsonOpt, RPCCallError, RpcOpt, console, fail, print_json, rpc_call
from cli.content import TokenOpt, _call, _size, _stream_to_file, _token, atomic_output
from cli.demo import DEFAULT_MODEL  # dataset -> its default model id
from cli.noderun import BootstrapOpt, ListenOpt, LogFormatOpt, LogLevelOpt, RpcListenOpt, run_node
from cli.query import _kv_table

if TYPE_CHECKING:
    from node.config import NodeConfig, TrainerConfig

app = typer.Typer(no_args_is_help=True)
model_app = typer.Typer(no_args_is_help=True)

MAX_INFER_ROWS = 1024  # node.rpc.fl.MAX_INFER_ROWS: rows per fl_infer call
_SHOW_ROWS = 50
_NOT_FOUND = -32002


def _code_name(code: int) -> str:
    from ledger.fl.codes import result_code_name

    return result_code_name(code, unknown="code {}")


def _kv(title: str, rows: list[tuple[str, Any]]) -> Table:
    return _kv_table(title, [(k, str(v)) for k, v in rows])


# ---------------------------------------------------------------- task create


def _parse_pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"bad {what} {item!r}: use KEY=VALUE", code=2)
        out.append((key.strip(), value.strip()))
    return out


def parse_model_config(model_id: str, items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a model config: ints, or comma-separated ints for list keys."""
    from fl.models import ModelConfigError, default_config

    try:
        defaults = default_config(model_id)
    except ModelConfigError as e:
        fail(str(e), code=2)
    out: dict[str, Any] = {}
    for key, value in _parse_pairs(items, "--model-config"):
        try:
            if isinstance(defaults.get(key), list):
                out[key] = [int(v) for v in value.split(",") if v.strip()]
            else:
                out[key] = int(value)
        except ValueError:
            fail(f"--model-config {key}={value}: expected integers", code=2)
    return out


def parse_rule_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as rule params: an int where VALUE is one, else the string."""
    out: dict[str, Any] = {}
    for key, value in _parse_pairs(items, "--rule-param"):
        out[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return out


def _account_name(home: Path, name: str | None) -> str:
    """``name``, or the moniker of the home's config (whose key `init` created)."""
    if name:
        return name
    from node.home import Home, HomeError

    try:
        return Home(home).load_config().moniker
    except HomeError as e:
        fail(f"{e} (or pass --from NAME)")


def _wait_committed(rpc: str, tx_hash: str, timeout: float) -> dict[str, Any]:
    """The committed tx once a block holds it (a busy chain may take longer than
    `broadcast_tx_commit` waits); exits when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rec: dict[str, Any] = rpc_call(rpc, "tx", {"hash": tx_hash})
            return rec
        except RPCCallError as e:
            if e.error.get("code") != _NOT_FOUND:
                fail(f"tx: {e}")
        if time.monotonic() > deadline:
            fail(f"tx {tx_hash} was not committed within {timeout:.0f} s; it may still be "
                 "(see `fedledger task list`)")
        time.sleep(0.2)


def _event_attr(tx_result: dict[str, Any], event: str, key: str) -> str | None:
    for ev in tx_result.get("events") or []:
        if ev["type"] == event:
            for a in ev["attributes"]:
                if a["key"] == key:
                    return str(a["value"])
    return None


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Task name (at most 64 characters)."),
    dataset: str = typer.Option("digits", "--dataset",
                                help="Data schema the trainers hold: digits, mnist, cifar10."),
    model: str | None = typer.Option(None, "--model", help="Model id: mlp, mnist_cnn, cifar_cnn "
                                     "(default: digits mlp, mnist mnist_cnn, cifar10 cifar_cnn)."),
    model_config: list[str] = typer.Option([], "--model-config", help="Model config KEY=VALUE "
                                           "(repeatable; lists comma-separated: hidden=128,64)."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Rounds to train."),
    clients_per_round: int = typer.Option(..., "--clients-per-round", min=1,
                                          help="Most updates per round; a round closes as soon "
                                               "as this many are in."),
    min_participants: int = typer.Option(0, "--min-participants", min=0,
                                         help="Fewest updates a round closes with; with fewer "
                                              "the deadline moves (0: clients per round)."),
    round_blocks: int = typer.Option(60, "--round-blocks", min=1,
                                     help="Blocks a round stays open."),
    reveal_blocks: int | None = typer.Option(None, "--reveal-blocks", min=0,
                                             help="--pol replay: blocks after the deadline for "
                                                  "reveals (default: a quarter of a round)."),
    rule: str | None = typer.Option(None, "--rule", help="Aggregation rule (default: robust; "
                                    "fedavg with --privacy dp)."),
    rule_param: list[str] = typer.Option([], "--rule-param", help="Rule parameter KEY=VALUE "
                                         "(repeatable)."),
    privacy: str = typer.Option("none", "--privacy", help="none or dp (he, dp+he: not here)."),
    dp_clip: float = typer.Option(1.0, "--dp-clip", min=0.0, help="--privacy dp: clip norm."),
    dp_noise: float = typer.Option(0.3, "--dp-noise", min=0.0,
                                   help="--privacy dp: noise multiplier."),
    dp_delta: float = typer.Option(1e-5, "--dp-delta", min=0.0, help="--privacy dp: delta."),
    pol: str = typer.Option("attest", "--pol", help="Proof-of-learning policy: replay, attest, "
                                                    "off."),
    pol_k: int = typer.Option(8, "--pol-k", min=1, help="PoL checkpoint interval (steps)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adam."),
    lr: str = typer.Option("0.1", "--lr", help="Learning rate."),
    momentum: str = typer.Option("0.0", "--momentum", help="SGD momentum."),
    epochs: int = typer.Option(2, "--epochs", min=1, help="Local epochs per round."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Local batch size."),
    pool: int = typer.Option(100_000, "--pool", min=0,
                             help="Reward pool the creator pays into escrow."),
    reward_cap: int = typer.Option(10_000, "--reward-cap", min=0,
                                   help="Most a trainer earns per accepted update and round."),
    validator_share_ppm: int = typer.Option(100_000, "--validator-share-ppm", min=0,
                                            help="Part of each round's budget for validators."),
    join_bond: int = typer.Option(100, "--join-bond", min=1, help="Minimum trainer bond."),
    slash_ppm: int = typer.Option(200_000, "--slash-ppm", min=0,
                                  help="Part of a bond slashed per proven bad update."),
    jail_after: int = typer.Option(2, "--jail-after", min=1,
                                   help="Proven bad updates before a trainer is jailed."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial weights (and, +1, "
                                                      "of the batch schedule)."),
    initial_model: Path | None = typer.Option(None, "--initial-model",
                                              help="Initial weights (.safetensors; default: the "
                                                   "model drawn with --seed)."),
    validation: Path | None = typer.Option(
        None, "--validation",
        help="Public validation set (.safetensors from `fedledger fl validation-set`): the "
             "robust rule also rejects updates that raise its loss (ADR 0404)."),
    from_: str | None = typer.Option(None, "--from", "--account",
                                     help="Keyring key that signs and pays the pool "
                                          "(default: the home's moniker)."),
    home: Path = HomeOpt,
    rpc: str = RpcOpt,
    token: str | None = TokenOpt,
    timeout: float = typer.Option(120.0, "--timeout", min=1.0,
                                  help="Seconds to wait for the block."),
    json_out: bool = JsonOpt,
) -> None:
    """Create an FL task: store the initial model on the node, sign TaskCreate, wait for the
    block; prints the new task id."""
    from cli.keys import load_key
    from cli.taskspec import (
        TaskOptions,
        build_spec,
        check_initial_model,
        check_validation_set,
        initial_model_bytes,
    )
    from cli.tx import sign_for_node
    from ledger.fl import TaskCreate
    from storage.cid import parse_cid
    from storage.tensors import bytes_cid

    if privacy in ("he", "dp+he"):
        fail(f"--privacy {privacy}: HE tasks need key holders and a CKKS context "
             "(--key-holder, --he-context), which `task create` does not take yet; "
             "use none or dp", code=2)
    if privacy not in ("none", "dp"):
        fail(f"--privacy must be none or dp, got {privacy!r}", code=2)
    if dataset not in DEFAULT_MODEL:
        fail(f"unknown --dataset {dataset!r}: use {', '.join(DEFAULT_MODEL)}", code=2)
    model_id = model or DEFAULT_MODEL[dataset]
    dp = privacy == "dp"
    opts = TaskOptions(
        name=name, model_id=model_id, model_config=parse_model_config(model_id, model_config),
        optimizer=optimizer, lr=lr, momentum=momentum, epochs=epochs, batch_size=batch_size,
        rounds=rounds, clients_per_round=clients_per_round, min_participants=min_participants,
        round_blocks=round_blocks,
        reveal_blocks=(reveal_blocks if reveal_blocks is not None
                       else max(1, round_blocks // 4) if pol == "replay" else 0),
        rule=rule or ("fedavg" if dp else "robust"), rule_params=parse_rule_params(rule_param),
        privacy=privacy, dp_clip=dp_clip if dp else 0.0, dp_noise=dp_noise if dp else 0.0,
        dp_delta=dp_delta, pol_policy=pol, pol_k=pol_k, pool=pool,
        trainer_reward_cap=reward_cap, validator_share_ppm=validator_share_ppm,
        join_bond=join_bond, slash_ppm=slash_ppm, jail_after=jail_after, seed=seed)
    key = load_key(home, _account_name(home, from_))
    # Everything is checked here, before the node stores anything.
    try:
        if initial_model is not None:
            data = initial_model.expanduser().read_bytes()
            check_initial_model(opts, data)
        else:
            data = initial_model_bytes(opts)
        build_spec(opts, dataset=dataset, trainers=clients_per_round,
                   initial_model_cid=bytes(bytes_cid(data)))
    except OSError as e:
        fail(f"cannot read {initial_model}: {e.strerror or e}")
    except ValueError as e:
        fail(f"invalid task: {e}")
    if validation is not None:
        if opts.rule != "robust":
            fail(f"--validation needs the robust rule (--rule is {opts.rule})", code=2)
        try:
            check_validation_set(opts, validation.expanduser().read_bytes())
        except OSError as e:
            fail(f"cannot read {validation}: {e.strerror or e}")
        except ValueError as e:
            fail(f"invalid validation set {validation}: {e}")
    tok = _token(home, token)

    def put_file(path: Path, what: str = "initial model") -> dict[str, Any]:
        # the node reads the file itself
        return dict(_call(rpc, "content_put", {"path": str(path.resolve()),
                                               "pin": f"{what} of {name}"},
                          token=tok, timeout=timeout))

    if initial_model is not None:
        put = put_file(initial_model.expanduser())
    else:  # written where the node's own files are
        with tempfile.TemporaryDirectory(prefix=".task-", dir=home) as tmp:
            path = Path(tmp) / "initial-model.safetensors"
            path.write_bytes(data)
            put = put_file(path)
    vput = (put_file(validation.expanduser(), "validation set") if validation is not None
            else None)
    spec = build_spec(opts, dataset=dataset, trainers=clients_per_round,
                      initial_model_cid=bytes(parse_cid(put["cid"])),
                      validation_cid=bytes(parse_cid(vput["cid"])) if vput else b"")
    tx, nonce = sign_for_node(rpc, key, TaskCreate(spec), None)
    tx_hash = tx.hash.hex().upper()
    check = _call(rpc, "broadcast_tx_sync", {"tx": base64.b64encode(tx.encoded).decode()})
    if check["code"] != 0:
        fail(f"CheckTx rejected the TaskCreate: {_code_name(check['code'])}: {check['log']}")
    rec = _wait_committed(rpc, tx_hash, timeout)
    result = rec["tx_result"]
    if result["code"] != 0:
        fail(f"the TaskCreate was committed at height {rec['height']} but failed: "
             f"{_code_name(result['code'])}: {result['log']}")
    task_id = int(_event_attr(result, "fl.task_created", "task") or 0)
    out = {"task_id": task_id, "tx_hash": tx_hash, "height": rec["height"],
           "creator": key.address.hex(), "nonce": nonce, "initial_model_cid": put["cid"],
           "initial_model_bytes": put["size"],
           "validation_cid": vput["cid"] if vput else None}
    if json_out:
        print_json(out)
        return
    console.print(_kv(f"created task {task_id}", [
        ("task id", task_id), ("name", escape(name)), ("model", f"{model_id} on {dataset}"),
        ("rounds", f"{rounds} of {round_blocks} blocks, each closing with "
                   f"{spec.min_participants}..{spec.clients_per_round} updates"),
        ("rule / privacy / PoL", f"{spec.rule} / {privacy} / {spec.pol_policy}"),
        ("pool / join bond", f"{pool} / {join_bond}"),
        ("initial model", f"{put['cid']} ({_size(put['size'])})"),
        *([("validation set", f"{vput['cid']} ({_size(vput['size'])})")] if vput else []),
        ("creator", key.address.hex()), ("tx", f"{tx_hash} at height {rec['height']}")]))


# ---------------------------------------------------------------- task list / status


@app.command("list")
def list_tasks(
    status: str | None = typer.Option(None, "--status",
                                      help="Only tasks that are open, awaiting_decryption or "
                                           "finished."),
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The chain's FL tasks."""
    res = _call(rpc, "fl_tasks", {"status": status} if status else {})
    if json_out:
        print_json(res)
        return
    tasks = res["tasks"]
    t = Table(title=f"{len(tasks)} task(s) at height {res['height']}")
    for col in ("id", "name", "status", "round", "model", "data", "rule", "privacy",
                "deadline", "pool left", "creator"):
        t.add_column(col, overflow="fold")
    for task in tasks:
        s = task["spec"]
        t.add_row(str(task["id"]), escape(s["name"]), task["status"], _round_text(task),
                  s["model_id"], s["data_schema"], s["rule"], s["privacy"],
                  str(task["deadline"]) if task["status"] == "open" else "-",
                  str(task["pool_left"]), task["creator"][:12])
    console.print(t)


def _round_text(task: dict[str, Any]) -> str:
    rounds = task["spec"]["rounds"]
    if task["status"] == "finished":
        return f"done ({task['rounds_done']}/{rounds})"
    return f"{task['round']}/{rounds}"


@app.command("status")
def status(
    task_id: int = typer.Argument(..., min=1, help="Task id."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Results of this many recent rounds."),
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """A task: where it stands, its trainers, and its latest round results (accepted and
    rejected updates with reasons, model CIDs)."""
    info = _task_info(rpc, task_id)
    results = _call(rpc, "fl_rounds", {"task_id": task_id})["results"]
    task = info["task"]
    open_ = task["status"] == "open"
    subs = (_call(rpc, "fl_submissions", {"task_id": task_id, "round": task["round"]})
            ["submissions"] if open_ else [])
    if json_out:
        print_json({**info, "results": results[-rounds:], "submissions": subs})
        return
    s, height = task["spec"], int(info["height"])
    rows: list[tuple[str, Any]] = [
        ("status", task["status"]),
        ("round", f"{_round_text(task)} ({task['rounds_done']} done)"),
    ]
    if open_:
        left = task["deadline"] - height
        due = any(d["task"] == task_id for d in info["due"])
        rows += [("deadline", f"height {task['deadline']} ("
                  + (f"in {left} blocks" if left > 0 else "passed") + f"; now {height})"
                  + (" - the next block closes the round" if due else "")),
                 ("updates this round", f"{len(subs)} of {s['clients_per_round']} "
                                        f"(closes with at least {s['min_participants']})")]
    rows += [
        ("current model", task["global_model_cid"] or "-"),
        ("model", f"{s['model_id']} {json.dumps(s['model_config'])} on {s['data_schema']}"),
        ("training", ", ".join(f"{k} {s['train'][k]}" for k in
                               ("optimizer", "lr", "epochs", "batch_size") if k in s["train"])),
        ("rule / privacy / PoL", f"{s['rule']} / {s['privacy']} / {s['pol_policy']}"),
        ("pool left", f"{task['pool_left']} of {s['pool']} (join bond {s['join_bond']})"),
        ("creator", task["creator"]),
    ]
    console.print(_kv(f"task {task_id}: {escape(s['name'])} (height {height})", rows))
    console.print(_trainers_table(info["trainers"]))
    if results:
        console.print(_rounds_table(results[-rounds:]))
        console.print(_verdicts_table(results[-1]))


def _task_info(rpc: str, task_id: int) -> dict[str, Any]:
    try:
        info: dict[str, Any] = rpc_call(rpc, "fl_task", {"task_id": task_id})
        return info
    except RPCCallError as e:
        if e.error.get("code") == _NOT_FOUND:
            fail(f"no task {task_id} on this chain (see `fedledger task list`)")
        fail(f"fl_task: {e}")


def _trainers_table(trainers: list[dict[str, Any]]) -> Table:
    t = Table(title=f"{len(trainers)} trainer(s)")
    for col in ("trainer", "bond", "accepted", "rejected", "strikes", "jailed", "earned"):
        t.add_column(col, overflow="fold")
    for tr in trainers:
        t.add_row(tr["address"], str(tr["bond"]) if tr["bond"] else "0 (left)",
                  str(tr["accepted"]), str(tr["rejected"]), str(tr["strikes"]),
                  "yes" if tr["jailed"] else "no", str(tr["earned"]))
    return t


def _rounds_table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="rounds")
    for col in ("round", "accepted", "rejected", "new model"):
        t.add_column(col, overflow="fold")
    for r in results:
        model = r["new_model_cid"] or (f"encrypted: {r['encrypted_aggregate_cid']}"
                                       if r["encrypted_aggregate_cid"] else "-")
        t.add_row(str(r["round"]), str(len(r["accepted"])), str(len(r["rejected"])), model)
    return t


def _verdicts_table(r: dict[str, Any]) -> Table:
    t = Table(title=f"round {r['round']}: updates")
    for col in ("trainer", "verdict", "samples", "score", "update"):
        t.add_column(col, overflow="fold")
    for c in r["accepted"]:
        t.add_row(c["trainer"], "[green]accepted[/]", str(c["samples"]), str(c["score"]),
                  c["update_cid"])
    for c in r["rejected"]:
        why = f"[red]rejected[/]: {escape(c['reason'])}" + (" (slashed)" if c["proven"] else "")
        t.add_row(c["trainer"], why, "-", str(c["score"]), c["update_cid"])
    return t


# ---------------------------------------------------------------- models and inference


_TaskOpt = typer.Option(..., "--task", min=1, help="Task id.")
_RoundOpt = typer.Option(None, "--round", min=0,
                         help="The model after this round (0: the initial one; default: the "
                              "latest committed).")


def _model_cid(rpc: str, task_id: int, round_: int | None) -> tuple[str, int]:
    """(CID, round) of the committed model after ``round_`` (default: the latest)."""
    task = _task_info(rpc, task_id)["task"]
    r = task["rounds_done"] if round_ is None else round_
    if r == 0:
        return str(task["spec"]["initial_model_cid"]), 0
    return str(_call(rpc, "fl_round", {"task_id": task_id, "round": r})["model"]["model_cid"]), r


def _model_path(output: Path, task_id: int, round_: int) -> Path:
    return output / f"task{task_id}-round{round_}.safetensors" if output.is_dir() else output


@model_app.command("get")
def model_get(
    task: int = _TaskOpt,
    round_: int | None = _RoundOpt,
    output: Path = typer.Option(..., "--output", "-o", help="File to write (safetensors)."),
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Write a task's committed global model to a file; prints its CID and size."""
    params: dict[str, Any] = {"task_id": task}
    if round_ is not None:
        params["round"] = round_
    dest = output.expanduser()
    try:
        res = rpc_call(rpc, "fl_model", params, timeout=120)
    except RPCCallError as e:
        if e.error.get("message") != "Too large":
            fail(f"fl_model: {e}")
        # big models come in verified chunks through the content store instead
        cid, r = _model_cid(rpc, task, round_)
        dest = _model_path(dest, task, r)
        got = _stream_to_file(rpc, cid, dest, quiet=json_out)
        res = {"task_id": task, "round": r, "cid": got["cid"], "bytes": got["size"]}
    else:
        data = base64.b64decode(res.pop("data"))
        dest = _model_path(dest, task, res["round"])
        with atomic_output(dest) as f:
            f.write(data)
    out = {**res, "path": str(dest)}
    if json_out:
        print_json(out)
        return
    console.print(_kv(f"task {task} model after round {out['round']}", [
        ("cid", out["cid"]), ("size", _size(out["bytes"])), ("written to", out["path"])]))


def load_samples(path: Path) -> list[Any]:
    """Samples from a ``.npy`` array (first axis: samples) or a ``.json`` list of samples (or
    ``{"inputs": [...]}``); a single sample (a flat list of numbers) is one row."""
    import numpy as np

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 0 or not np.issubdtype(arr.dtype, np.number):
                fail(f"{path}: expected a numeric array of samples, got {arr.dtype} {arr.shape}")
            rows: Any = [arr.tolist()] if arr.ndim == 1 else arr.tolist()
        elif suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            rows = doc.get("inputs") if isinstance(doc, dict) else doc
            if isinstance(rows, list) and rows and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in rows):
                rows = [rows]
        else:
            fail(f"{path}: --input must be a .npy or .json file")
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror or e}")
    except (ValueError, UnicodeDecodeError) as e:
        fail(f"{path}: not a valid {suffix[1:]} file: {e}")
    if not isinstance(rows, list) or not rows:
        fail(f"{path}: expected a non-empty list of samples")
    return rows


def infer(
    task: int = _TaskOpt,
    input_: Path = typer.Option(..., "--input", "-i", help="Samples: .npy (N x sample shape) "
                                "or .json (a list of samples)."),
    round_: int | None = _RoundOpt,
    record: bool = typer.Option(False, "--record", help="Also log an InferenceRecord on chain "
                                "(signed by the node's account; operator token)."),
    home: Path = HomeOpt,
    token: str | None = TokenOpt,
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run a task's committed model on samples (on the node) and print the predictions."""
    rows = load_samples(input_.expanduser())
    if record and len(rows) > MAX_INFER_ROWS:
        fail(f"--record takes at most {MAX_INFER_ROWS} samples (one record per call), "
             f"got {len(rows)}")
    tok = _token(home, token) if record else None
    preds: list[int] = []
    probs: list[list[float]] = []
    res: dict[str, Any] = {}
    for i in range(0, len(rows), MAX_INFER_ROWS):
        params: dict[str, Any] = {"task_id": task, "inputs": rows[i : i + MAX_INFER_ROWS]}
        if round_ is not None:
            params["round"] = round_
        if record:
            params["record"] = True
        res = _call(rpc, "fl_infer", params, token=tok, timeout=120)
        round_ = res["round"]  # the same model for every batch
        preds += res["predictions"]
        probs += res["probabilities"]
    rec = res.get("record")
    refused = rec is not None and rec["code"] != 0
    if json_out:
        print_json({"task_id": task, "round": res["round"], "predictions": preds,
                    "probabilities": probs, **({"record": rec} if rec else {})})
        if refused:
            raise typer.Exit(1)
        return
    console.print(f"task {task}, model after round {res['round']}: {len(preds)} prediction(s)")
    t = Table()
    for col in ("#", "class", "probability"):
        t.add_column(col, justify="right")
    for i, (p, pr) in enumerate(zip(preds[:_SHOW_ROWS], probs, strict=False)):
        t.add_row(str(i), str(p), f"{pr[p]:.3f}")
    console.print(t)
    if len(preds) > _SHOW_ROWS:
        console.print(f"... and {len(preds) - _SHOW_ROWS} more (--json prints all)")
    if rec:
        console.print(f"InferenceRecord tx {rec['tx_hash']}: "
                      + (f"refused: {_code_name(rec['code'])}: {rec['log']}" if refused
                         else "accepted into the mempool"))
    if refused:
        raise typer.Exit(1)


# ---------------------------------------------------------------- train


def parse_partition(text: str) -> tuple[int, int]:
    """``I/N`` (0-based: 0/4 .. 3/4) as (index, count)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        fail(f"bad --partition {text!r}: use I/N with 0 <= I < N (e.g. 0/4)", code=2)
    return int(m.group(1)), int(m.group(2))


def trainer_section(base: TrainerConfig, *, tasks: list[int], dataset: str | None,
                    data_dir: Path | None, device: str | None, partition: str | None,
                    account: str | None, threads: int | None) -> TrainerConfig:
    """``base`` enabled, with every given flag in place of its value."""
    t = dataclasses.replace(base, enabled=True, tasks=list(base.tasks))
    if tasks:
        t.tasks = [str(i) for i in tasks]
    if dataset is not None:
        t.dataset = dataset
    if data_dir is not None:
        t.data_dir = str(data_dir.expanduser().resolve())
    if device is not None:
        t.device = device
    if partition is not None:
        t.partition_index, t.partition_count = parse_partition(partition)
    if account is not None:
        t.account = account
    if threads is not None:
        t.threads = threads
    return t


def check_trainer(home: Path, cfg: NodeConfig) -> None:
    """Exit with a clear message unless ``cfg.trainer`` can train on this machine."""
    from ledger.fl.spec import DATA_SCHEMAS
    from node.keys import keyring_path

    t = cfg.trainer
    if t.dataset not in DATA_SCHEMAS:
        fail(f"unknown dataset {t.dataset!r}: use {', '.join(DATA_SCHEMAS)}", code=2)
    if t.dataset != "digits" and not t.data_dir:
        fail(f"--dataset {t.dataset} needs --data-dir (only digits is embedded)", code=2)
    if t.data_dir and not Path(t.data_dir).is_dir():
        fail(f"data directory {t.data_dir} does not exist", code=2)
    if not 0 <= t.partition_index < max(1, t.partition_count):
        fail(f"trainer.partition_index {t.partition_index} is outside 0..{t.partition_count - 1}",
             code=2)
    name = t.account or cfg.moniker
    try:
        has_key = keyring_path(home, name).is_file()
    except ValueError:
        has_key = False
    if not has_key:
        fail(f"no account key {name!r} in {home / 'keyring'} to sign the trainer's "
             f"transactions: create one with `fedledger keys add {name} --home {home}` (and "
             "fund it for the join bond), or pass --account NAME")
    if t.device not in ("auto", "cpu"):
        from fl.train.device import DeviceError, select_device

        try:
            select_device(t.device)
        except DeviceError as e:
            fail(f"--device {t.device}: {e}", code=2)


def train(
    home: Path = HomeOpt,
    task: list[int] = typer.Option([], "--task", min=1,
                                   help="Train only for this task id (repeatable; default: "
                                        "every open task with a matching dataset)."),
    dataset: str | None = typer.Option(None, "--dataset",
                                       help="Local data set: digits, mnist, cifar10."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Directory of its files."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    partition: str | None = typer.Option(None, "--partition",
                                         help="Train on part I of N of the data (0-based, "
                                              "e.g. 0/4; for testnets)."),
    account: str | None = typer.Option(None, "--account",
                                       help="Keyring key that signs (default: the moniker)."),
    threads: int | None = typer.Option(None, "--threads", min=0,
                                       help="Torch threads (0: all cores)."),
    save: bool = typer.Option(False, "--save",
                              help="Also write the trainer settings to config.toml."),
    bootstrap: list[str] = BootstrapOpt,
    listen: list[str] = ListenOpt,
    rpc: str | None = RpcListenOpt,
    log_format: str | None = LogFormatOpt,
    log_level: str | None = LogLevelOpt,
) -> None:
    """Run this node as a trainer: the node daemon (as `node run`) with the trainer section of
    its config enabled and taken from the flags (config.toml is left as it is unless --save)."""
    def configure(cfg: NodeConfig) -> None:
        cfg.trainer = trainer_section(cfg.trainer, tasks=task, dataset=dataset,
                                      data_dir=data_dir, device=device, partition=partition,
                                      account=account, threads=threads)
        check_trainer(home, cfg)
        if save:
            _save_trainer(home, cfg.trainer)

    run_node(home, bootstrap, listen, rpc, log_format, log_level, configure=configure)


def _save_trainer(home: Path, trainer: TrainerConfig) -> None:
    """Write ``trainer`` into config.toml, the rest of the file's settings as they were."""
    from cli.common import err_console
    from node.config import save_config
    from node.home import Home

    h = Home(home)
    cfg = h.load_config()
    cfg.trainer = trainer
    save_config(cfg, h.config_file)
    err_console.print(f"saved the \\[trainer] section to {h.config_file}", highlight=False)

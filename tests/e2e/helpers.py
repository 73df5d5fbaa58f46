"""Shared steps of the end-to-end FL tests: run a task on a Localnet, compare validators."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.localnet import Localnet, LocalnetConfig, evaluate_model
from cli.taskspec import TaskOptions
from ledger.fl.rounds import round_budget, split_rewards


@dataclass
class TaskRun:
    """What a finished task left on the chain, as the validators report it."""

    task_id: int
    task: dict[str, Any]
    results: list[dict[str, Any]]  # RoundResult per round, from validator 0
    model_cids: list[list[str]]  # [validator][round] committed model CID
    accuracies: list[float] = field(default_factory=list)


def start_net(root: Path, cfg: LocalnetConfig) -> Localnet:
    net = Localnet(root, cfg)
    net.start()
    net.wait_chain(2, timeout=180)
    return net


def wait_task(net: Localnet, task_id: int, timeout: float,
              validators: list[int] | None = None) -> dict[str, Any]:
    """Wait until every listed validator (default: all running) reports the task finished."""
    vals = validators if validators is not None else [
        i for i in range(net.cfg.validators) if net.procs[i] is not None]

    def finished() -> dict[str, Any] | None:
        tasks = [net.task(task_id, i) for i in vals]
        if all(t is not None and t["status"] == "finished" for t in tasks):
            return tasks[0]
        return None

    return net.wait(finished, timeout, f"task {task_id} to finish on validators {vals}",
                    poll=1.0)


def collect(net: Localnet, task_id: int, task: dict[str, Any],
            validators: list[int] | None = None, evaluate: bool = True) -> TaskRun:
    vals = validators if validators is not None else list(range(net.cfg.validators))
    rounds = int(task["rounds_done"])
    results = [net.round_result(task_id, r) or {} for r in range(1, rounds + 1)]
    cids = [[(net.round_result(task_id, r, i) or {}).get("new_model_cid", "")
             for r in range(1, rounds + 1)] for i in vals]
    run = TaskRun(task_id, task, results, cids)
    if evaluate:
        spec = task["spec"]
        for r in range(1, rounds + 1):
            run.accuracies.append(evaluate_model(spec["model_id"], spec["model_config"],
                                                 net.model_bytes(task_id, r), net.cfg.dataset,
                                                 net.cfg.data_dir or None))
    return run


def run_task(net: Localnet, opts: TaskOptions, timeout: float) -> TaskRun:
    task_id = net.create_task(opts)
    task = wait_task(net, task_id, timeout)
    return collect(net, task_id, task)


def trainer_accounts(net: Localnet) -> dict[int, str]:
    """Node index -> the trainer's account address (hex)."""
    out = {}
    for k in range(net.cfg.validators, len(net.nodes)):
        st = net.rpc(k, "fl_trainer_status")
        out[k] = st["account"]
    return out


def trainer_states(net: Localnet, task_id: int) -> dict[str, dict[str, Any]]:
    """Trainer address (hex) -> its TrainerState in the task, as validator 0 reports it."""
    rows = net.rpc(0, "fl_task", {"task_id": task_id})["trainers"]
    items = rows.items() if isinstance(rows, dict) else [(r["address"], r) for r in rows]
    return {str(a): dict(t) for a, t in items}



def genesis_balance(net: Localnet, address_hex: str) -> int:
    gen = json.loads((net.nodes[0].home.root / "config" / "genesis.json").read_text())
    for acct in gen["app_state"].get("accounts", []):
        if acct.get("address", "").lower() == address_hex.lower():
            return int(acct.get("balance", 0))
    return 0


def expected_trainer_earnings(task: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, int]:
    """Replay the contract's reward rule (docs/fl-chain.md section 4) over the round results.

    The trainers' part of a round does not depend on how many validators signed (at least one
    always does), so one placeholder signer reproduces it.
    """
    spec = task["spec"]
    pool, rounds = int(spec["pool"]), int(spec["rounds"])
    earned: dict[str, int] = {}
    for k, res in enumerate(results):
        budget = round_budget(pool, rounds - k)
        contributions = [(bytes.fromhex(c["trainer"]), int(c["samples"]))
                         for c in res["accepted"]]
        payouts = split_rewards(budget, int(spec["validator_share_ppm"]),
                                int(spec["trainer_reward_cap"]), [b"\0" * 20], contributions)
        for p in payouts:
            if p.role == "trainer":
                earned[p.recipient.hex()] = earned.get(p.recipient.hex(), 0) + p.amount
        pool -= sum(p.amount for p in payouts)
    return earned


def log_lines(net: Localnet, i: int, event: str) -> list[dict[str, Any]]:
    out = []
    for line in net.log(i).splitlines():
        if event not in line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out

"""Chain overhead per FL round: the same workload in-process and on a local consortium.

The baseline is the FL engine's harness (`fl/simulate.py`: one process trains every client
one after the other and aggregates, no chain). The same workload then runs on a Localnet
(`cli/localnet.py`: validators and trainers as separate `fedledger node run` processes on
loopback, the task created through RPC). Same data set and train/test split, same
Dirichlet partition (checked: the trainers' sample counts must equal the in-process
clients'), same model and initial weights, same epochs, batch size, optimizer and learning
rate, same aggregation rule, every client in every round. Where the two differ:

* batch order: the harness seeds each client's batch schedule per client and round, while
  every trainer on the chain uses the task's training seed (PoL replays need one public
  seed). The benchmark makes the harness use the task's seed too, so both compute the same
  models (the accuracy columns must agree); ``--harness-seeds`` keeps the harness's own;
* the chain's trainers record a PoL transcript (a checkpoint every ``pol_k`` steps) and the
  validators verify it; the harness has no PoL;
* the harness trains the clients one after the other in one process (one torch thread);
  the chain's trainers train at the same time, one process (one torch thread) each, and
  share the machine's cores with the validators;
* update ids the robust rule breaks ties with: digests of the delta in the harness, content
  ids on the chain;
* the harness evaluates the global model every round (inside its round time, milliseconds
  here); the chain's models are evaluated after the run.

Per round it reports wall time in-process and on the chain, the chain's overhead in
seconds and as a ratio, and where the chain's round time goes: the critical path from the
block that opened the round to the block that committed its result (from the nodes' JSON
logs: block commits, trainers' training start and seconds, the validator's submission
checks), split into training, transfer, verification, aggregation and consensus with the
timers of `fl_verifier_status`.

    python -m benchmarks.round_overhead                       # digits, mlp, 4+4 nodes, 3 rounds
    python -m benchmarks.round_overhead --rounds 5 --json out.json
    python -m benchmarks.round_overhead --dataset mnist --data-dir ../shared/data/mnist
    python -m benchmarks.round_overhead --rule fedavg --privacy he   # CKKS-encrypted updates

Under ``--privacy he`` validator 0 is the task's key holder; a round's chain time then also
holds the key holder's decryption and its ``DecryptedAggregate`` block, and the harness runs
the same encrypted pipeline in-process. Run it next to ``--rule fedavg`` alone for the
HE / plaintext ratio on the chain.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

DEFAULT_MODELS = {"digits": "mlp", "mnist": "mnist_cnn", "cifar10": "cifar_cnn"}


# ------------------------------------------------------------------ the workload


@dataclass(frozen=True)
class Workload:
    dataset: str = "digits"
    data_dir: str = ""
    validators: int = 4
    trainers: int = 4
    rounds: int = 3
    epochs: int = 2
    batch_size: int = 16
    lr: str = "0.1"
    momentum: str = "0.0"
    alpha_milli: int = 500  # Dirichlet label skew, as Localnet partitions the trainers' data
    rule: str = "robust"
    privacy: str = "none"  # none | he (HE tasks aggregate with fedavg; a node holds the key)
    pol: str = "attest"
    pol_k: int = 8
    # A round closes as soon as every trainer's update is in; the deadline only bounds it. It
    # must leave room for the trainers' first round (Join, torch start-up, training) on a
    # loaded machine: at the product's 60 blocks of >= 0.3 s, late submissions miss it.
    round_blocks: int = 600
    seed: int = 0  # initial weights (both), split and partition (both: node/fl/data.py uses 0)
    threads: int = 1  # torch threads: the harness, and each trainer process

    @property
    def model(self) -> str:
        return DEFAULT_MODELS[self.dataset]

    def sim_config(self) -> Any:
        from fl.privacy.pipeline import PrivacyConfig
        from fl.simulate import SimConfig
        from fl.train import TrainConfig

        return SimConfig(
            dataset=self.dataset, data_dir=self.data_dir or None, model=self.model,
            clients=self.trainers, per_round=self.trainers, rounds=self.rounds,
            partition="dirichlet" if self.alpha_milli > 0 else "iid",
            alpha=self.alpha_milli / 1000, test_fraction=0.2, seed=self.seed,
            train=TrainConfig(lr=float(self.lr), momentum=float(self.momentum),
                              epochs=self.epochs, batch_size=self.batch_size, seed=self.seed + 1),
            rule=self.rule, device="cpu", privacy=PrivacyConfig(mode=self.privacy))

    def task_options(self) -> Any:
        from cli.taskspec import TaskOptions

        return TaskOptions(name="round-overhead", model_id=self.model, lr=self.lr,
                           momentum=self.momentum, epochs=self.epochs,
                           batch_size=self.batch_size, rounds=self.rounds, rule=self.rule,
                           privacy=self.privacy,
                           pol_policy=self.pol, pol_k=self.pol_k, seed=self.seed,
                           round_blocks=self.round_blocks)

    def localnet_config(self) -> Any:
        from cli.localnet import LocalnetConfig

        return LocalnetConfig(validators=self.validators, trainers=self.trainers,
                              dataset=self.dataset, data_dir=self.data_dir,
                              alpha_milli=self.alpha_milli, threads=self.threads, device="cpu",
                              chain_id="bench-round")


# ------------------------------------------------------------------ pure parts: logs


def parse_log(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a node log, each with ``t`` (seconds since the epoch) added."""
    out = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
            ev["t"] = datetime.fromisoformat(ev["timestamp"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        out.append(ev)
    return out


def commit_times(events: list[dict[str, Any]]) -> dict[int, float]:
    """height -> when this node committed it."""
    return {int(e["height"]): e["t"] for e in events if e.get("event") == "committed block"}


def first(events: list[dict[str, Any]], event: str, **match: Any) -> dict[str, Any] | None:
    for e in events:
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
            return e
    return None


# ------------------------------------------------------------------ pure parts: one round


@dataclass
class TrainerRound:
    """One trainer's part of a round, on the common clock (one machine)."""

    trainer: str  # account address, hex
    triggered: float  # this trainer committed the block that let it train (round open / its Join)
    start: float  # training began (global model fetched)
    seconds: float  # local training incl. PoL transcript
    committed: float  # validator 0 committed the block holding the submission


@dataclass
class ChainRound:
    round: int
    opened: float  # validator 0 committed the block that opened the round
    closed: float  # validator 0 committed the block carrying the round's result
    blocks: int
    trainers: list[TrainerRound]
    checks: list[float]  # when validator 0 finished checking each submission
    check_seconds: list[float]
    accepted: int = 0
    rejected: int = 0
    accuracy: float | None = None

    @property
    def seconds(self) -> float:
        return self.closed - self.opened


PHASES = ("start", "training", "submit", "verification", "close")


def critical_path(r: ChainRound) -> dict[str, float]:
    """The round's wall time cut along its last submission (sums to ``r.seconds``).

    start: the opening block commits -> the last trainer starts training (it notices the
    block, fetches the global model; round 1 also waits for its Join to commit);
    training; submit: training ends -> the submission's block commits (store, sign,
    CheckTx, gossip, inclusion); verification: -> validator 0 has checked every submission
    (fetch update, transcript and checkpoints, PoL); close: -> the block with the result
    commits (aggregation, proposal, votes).
    """
    last = max(r.trainers, key=lambda t: (t.committed, t.start + t.seconds))
    checked = max(r.checks, default=last.committed)
    cuts = [r.opened, last.start, last.start + last.seconds, last.committed,
            max(checked, last.committed), r.closed]
    for i in range(1, len(cuts)):  # clock skew between processes is ~ms: keep cuts ordered
        cuts[i] = min(max(cuts[i], cuts[i - 1]), r.closed)
    return {p: cuts[i + 1] - cuts[i] for i, p in enumerate(PHASES)}


@dataclass
class Timers:
    """Validator 0's `fl_verifier_status` seconds over the run."""

    fetch: float = 0.0
    checks: float = 0.0  # sum of submission checks (fetch + PoL)
    aggregate: float = 0.0
    rounds: int = 0


def where_time_goes(r: ChainRound, timers: Timers) -> dict[str, float]:
    """The critical path in the issue's terms (sums to ``r.seconds``).

    transfer: the last trainer's global-model fetch (trigger -> start) and the fetch share
    of verification (validator 0's fetch seconds / check seconds over the run);
    aggregation: validator 0's mean aggregation seconds per round, at most the close phase;
    consensus: the rest of start (round 1: the Join), submit and close.
    """
    cp = critical_path(r)
    last = max(r.trainers, key=lambda t: (t.committed, t.start + t.seconds))
    fetch_global = min(cp["start"], max(0.0, last.start - last.triggered))
    share = min(1.0, timers.fetch / timers.checks) if timers.checks > 0 else 0.0
    agg = min(cp["close"], timers.aggregate / timers.rounds) if timers.rounds else 0.0
    return {
        "training": cp["training"],
        "transfer": fetch_global + share * cp["verification"],
        "verification": (1 - share) * cp["verification"],
        "aggregation": agg,
        "consensus": cp["start"] - fetch_global + cp["submit"] + cp["close"] - agg,
    }


# ------------------------------------------------------------------ pure parts: the report


@dataclass
class SimRound:
    round: int
    seconds: float
    train_seconds: float
    aggregate_seconds: float
    accuracy: float


def mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def overhead(chain_s: float, inproc_s: float) -> tuple[float, float]:
    """(chain - in-process seconds, chain / in-process)."""
    return chain_s - inproc_s, (chain_s / inproc_s if inproc_s > 0 else float("inf"))


def per_round_rows(sim: list[SimRound], chain: list[ChainRound]) -> list[list[str]]:
    rows = []
    for s, c in zip(sim, chain, strict=False):
        d, ratio = overhead(c.seconds, s.seconds)
        rows.append([str(s.round), f"{s.seconds:.2f}", f"{c.seconds:.2f}", f"{d:+.2f}",
                     f"{ratio:.1f}x", f"{s.accuracy * 100:.1f} %",
                     "-" if c.accuracy is None else f"{c.accuracy * 100:.1f} %"])
    return rows


def breakdown_rows(sim: list[SimRound], chain: list[ChainRound], timers: Timers,
                   workload: Workload) -> list[list[str]]:
    """Mean seconds per round by where they go, in-process vs on the chain (rounds both ran,
    and whose trainers' log lines were found)."""
    pairs = [(s, c) for s, c in zip(sim, chain, strict=False) if c.trainers]
    sim, chain = [s for s, _ in pairs], [c for _, c in pairs]
    parts = [where_time_goes(c, timers) for c in chain]
    sim_train = mean([s.train_seconds for s in sim])
    sim_agg = mean([s.aggregate_seconds for s in sim])
    sim_wall = mean([s.seconds for s in sim])
    chain_wall = mean([c.seconds for c in chain])

    def on_chain(k: str) -> float:
        return mean([p[k] for p in parts])

    rows: list[tuple[str, float, float]] = [
        (f"training ({workload.trainers} clients in turn / slowest of {workload.trainers} "
         "trainers at once, PoL recording)", sim_train, on_chain("training")),
        ("transfer (global model to trainers, submissions to validators)", 0.0,
         on_chain("transfer")),
        ("verification (PoL checks on the validator)", 0.0, on_chain("verification")),
        ("aggregation", sim_agg, on_chain("aggregation")),
        ("consensus (Join, submission and result blocks)", 0.0, on_chain("consensus")),
        ("other (in-process: evaluation)", sim_wall - sim_train - sim_agg, 0.0),
    ]
    out = [[name, f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}",
            f"{100 * b / chain_wall:.0f} %" if chain_wall > 0 else "-"]
           for name, a, b in rows]
    d, ratio = overhead(chain_wall, sim_wall)
    out.append(["**round (wall)**", f"**{sim_wall:.2f}**", f"**{chain_wall:.2f}**",
                f"**{d:+.2f}**", f"**{ratio:.1f}x**"])
    return out


def phase_rows(chain: list[ChainRound]) -> list[list[str]]:
    rows = []
    for c in chain:
        if not c.trainers:
            continue
        cp = critical_path(c)
        rows.append([str(c.round), *(f"{cp[p]:.2f}" for p in PHASES), f"{c.seconds:.2f}",
                     str(c.blocks), f"{c.accepted}/{c.accepted + c.rejected}"])
    return rows


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ the runs


@contextlib.contextmanager
def task_seed_for_every_client(seed: int) -> Iterator[bool]:
    """Have the harness seed every client's batch schedule with the task's training seed, as
    the chain's trainers do (False if this harness has no per-client seed hook)."""
    import fl.simulate as harness

    derive = getattr(harness, "_client_seed", None)
    if derive is None:
        yield False
        return
    harness._client_seed = lambda seed_, rnd, client: seed  # type: ignore[attr-defined,assignment]
    try:
        yield True
    finally:
        harness._client_seed = derive  # type: ignore[attr-defined,assignment]


def run_inprocess(w: Workload, chain_seeds: bool = True) -> tuple[list[SimRound], list[int]]:
    """Per-round metrics of the harness and its clients' sample counts."""
    import torch

    from fl.data import dirichlet, iid, load_dataset, split
    from fl.simulate import run_simulation

    torch.set_num_threads(w.threads)
    cfg = w.sim_config()
    train, test = split(load_dataset(cfg.dataset, cfg.data_dir), cfg.test_fraction, cfg.seed)
    parts = (dirichlet(train.y, cfg.clients, cfg.alpha, cfg.seed) if cfg.partition == "dirichlet"
             else iid(len(train), cfg.clients, cfg.seed))
    if chain_seeds:
        with task_seed_for_every_client(cfg.train.seed):
            res = run_simulation(cfg, data=(train, test))
    else:
        res = run_simulation(cfg, data=(train, test))
    rounds = [SimRound(m.round, m.seconds, m.train_seconds, m.aggregate_seconds, m.accuracy)
              for m in res.rounds]
    return rounds, [len(p) for p in parts]


@dataclass
class ChainRun:
    rounds: list[ChainRound]
    timers: Timers
    samples: list[int]  # per trainer, in trainer order (the chain's sample counts)
    block_interval_p50: float
    setup_seconds: float  # processes start -> chain at height 2 -> task created
    complete: bool
    workdir: str
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _join_heights(net: Any, task_id: int, lo: int, hi: int,
                  trainer_logs: list[list[dict[str, Any]]]) -> dict[int, int]:
    """trainer index -> height of the block that committed its Join (blocks lo..hi)."""
    sent = {}
    for k, evs in enumerate(trainer_logs):
        e = first(evs, "transaction sent", what=f"join task {task_id}")
        if e is not None:
            sent[e["tx"]] = k
    out: dict[int, int] = {}
    for h in range(lo, hi + 1):
        if len(out) == len(sent):
            break
        b = net.rpc(0, "block", {"height": h})["block"]
        for raw in b["data"]["txs"]:
            prefix = hashlib.sha256(base64.b64decode(raw)).hexdigest()[:16]
            if prefix in sent:
                out[sent[prefix]] = h
    return out


def run_chain(w: Workload, root: Path, timeout: float, keep: bool,
              stall_s: float = 180.0) -> ChainRun:
    from cli.localnet import Localnet, RPCFailure, evaluate_model

    net = Localnet(root, w.localnet_config())
    t0 = time.monotonic()
    rounds_done = 0
    error = ""
    try:
        net.start()
        net.wait_chain(2, timeout=min(180.0, timeout))
        task_id = net.create_task(w.task_options())
        setup = time.monotonic() - t0
        # round 1 opens with the TaskCreate block and cannot close before anyone trained
        opened = int(net.rpc(0, "fl_task", {"task_id": task_id})["task"]["round_opened"])
        print(f"chain: task {task_id} created at height {opened} after {setup:.1f} s",
              flush=True)
        last = [net.height(), time.monotonic()]
        deadlines: dict[int, int] = {}

        def progressed() -> bool:
            nonlocal rounds_done
            t = net.task(task_id)
            if t is not None and deadlines.setdefault(t["round"], t["deadline"]) < t["deadline"]:
                n = len(net.rpc(0, "fl_submissions", {"task_id": task_id, "round": t["round"]})
                        ["submissions"])
                raise TimeoutError(f"round {t['round']} missed its deadline with {n} of "
                                   f"{w.trainers} updates; the contract moved the deadline")
            # a round counts once its model is committed (HE: after the key holder's decryption)
            if t is not None and int(t["rounds_done"]) > rounds_done \
                    and net.modelled_round(task_id, int(t["rounds_done"])) is not None:
                rounds_done = int(t["rounds_done"])
                print(f"chain: round {rounds_done} committed at height {net.height()}, "
                      f"{time.monotonic() - t0 - setup:.1f} s after TaskCreate", flush=True)
            h = net.height()
            if h > last[0]:
                last[:] = [h, time.monotonic()]
            elif time.monotonic() - last[1] > stall_s:
                raise TimeoutError(f"the chain halted: no block after height {last[0]} "
                                   f"for {stall_s:.0f} s")
            return rounds_done >= w.rounds

        try:
            net.wait(progressed, max(1.0, timeout - setup), f"{w.rounds} rounds", poll=0.5)
        except TimeoutError as e:
            error = str(e)
        run = _collect(net, w, task_id, opened, rounds_done, setup, error, evaluate_model, root)
        if error:
            run.extra["consensus_state"] = _consensus_states(net, w.validators)
        return run
    except (TimeoutError, RPCFailure) as e:
        error = f"{type(e).__name__}: {e}"
        return ChainRun([], Timers(), [], float("nan"), time.monotonic() - t0, False, str(root),
                        error)
    finally:
        net.close(remove=not keep and not error)


def _consensus_states(net: Any, validators: int) -> list[str]:
    """Where each validator's consensus stands (for a halted run's report)."""
    out = []
    for i in range(validators):
        try:
            rs = net.rpc(i, "dump_consensus_state", operator=True, timeout=5)["round_state"]
            out.append(f"validator {i}: height {rs['height']} round {rs['round']} {rs['step']}")
        except Exception as e:
            out.append(f"validator {i}: {type(e).__name__}: {str(e)[:120]}")
    return out


def _collect(net: Any, w: Workload, task_id: int, first_open: int, done: int, setup: float,
             error: str, evaluate_model: Any, root: Path) -> ChainRun:
    logs = [parse_log(net.log(i)) for i in range(len(net.nodes))]
    v0 = logs[0]
    v0_commits: dict[int, float] = {}  # validator 0's commit times; another's where it has none
    for i in reversed(range(w.validators)):
        v0_commits.update(commit_times(logs[i]))
    tlogs = logs[w.validators:]
    addrs = [str(net.rpc(w.validators + k, "fl_trainer_status")["account"])
             for k in range(w.trainers)]
    vs = net.rpc(0, "fl_verifier_status")
    sec = vs.get("seconds", {})
    timers = Timers(float(sec.get("fetch", 0.0)), float(sec.get("checks", 0.0)),
                    float(sec.get("aggregate", 0.0)), int(vs["stats"].get("rounds", 0)))
    opened_h = first_open
    rounds: list[ChainRound] = []
    samples: list[int] = [0] * w.trainers
    joins: dict[int, int] = {}
    for r in range(1, done + 1):
        got = net.rpc(0, "fl_round", {"task_id": task_id, "round": r})
        closed_h = int(got["model"]["height"])
        subs = {s["trainer"]: s for s in
                net.rpc(0, "fl_submissions", {"task_id": task_id, "round": r})["submissions"]}
        if r == 1:
            joins = _join_heights(net, task_id, opened_h, closed_h, tlogs)
        trs = []
        for k, addr in enumerate(addrs):
            s = subs.get(addr)
            started = first(tlogs[k], "training", task=task_id, round=r)
            done_ev = first(tlogs[k], "update submitted", task=task_id, round=r)
            if s is None or started is None or done_ev is None:
                continue
            samples[k] = int(s["sample_count"])
            trig_h = joins.get(k, opened_h) if r == 1 else opened_h
            own = commit_times(tlogs[k])
            trs.append(TrainerRound(addr, own.get(trig_h, v0_commits[opened_h]), started["t"],
                                    float(done_ev["seconds"]), v0_commits[int(s["height"])]))
        checks = [e for e in v0 if e.get("event") == "submission checked"
                  and e.get("task") == task_id and e.get("round") == r]
        res = got["result"]
        rounds.append(ChainRound(
            r, v0_commits[opened_h], v0_commits[closed_h], closed_h - opened_h, trs,
            [e["t"] for e in checks], [float(e["seconds"]) for e in checks],
            len(res["accepted"]), len(res["rejected"])))
        opened_h = closed_h
    hs = sorted(h for h in v0_commits if first_open <= h <= opened_h)
    gaps = [v0_commits[b] - v0_commits[a] for a, b in zip(hs, hs[1:])]
    opts = w.task_options()
    for c in rounds:  # after the timing: evaluate each committed model
        data = net.model_bytes(task_id, c.round)
        c.accuracy = evaluate_model(opts.model_id, opts.model_config, data, w.dataset,
                                    w.data_dir or None)
    return ChainRun(rounds, timers, samples, statistics.median(gaps) if gaps else float("nan"),
                    setup, done >= w.rounds and not error, str(root), error)


# ------------------------------------------------------------------ main


def report(w: Workload, sim: list[SimRound], sim_samples: list[int], run: ChainRun,
           sim_total: float) -> str:
    out = [f"### FL round overhead: {w.dataset}, {w.model}, {w.validators} validators, "
           f"{w.trainers} trainers, {w.rounds} rounds, {w.epochs} epochs, batch {w.batch_size}, "
           f"lr {w.lr}, Dirichlet({w.alpha_milli / 1000:g}), rule {w.rule}, privacy {w.privacy}, "
           f"PoL {w.pol} "
           f"(k={w.pol_k})", ""]
    same = sorted(run.samples) == sorted(sim_samples) and all(run.samples)
    out.append(f"partition: in-process clients {sim_samples}, chain trainers {run.samples} "
               f"({'identical' if same else 'DIFFERENT'}); in-process total {sim_total:.1f} s; "
               f"chain setup (start, height 2, TaskCreate) {run.setup_seconds:.1f} s")
    if run.error:
        out.append(f"chain run incomplete after {len(run.rounds)} rounds: {run.error} "
                   f"(homes and logs kept in {run.workdir})")
        out += run.extra.get("consensus_state", [])
    out += ["", "Per round:", "",
            table(["round", "in-process s", "chain s", "overhead s", "ratio",
                   "accuracy in-process", "accuracy chain"], per_round_rows(sim, run.rounds))]
    later = list(zip(sim[1:], run.rounds[1:], strict=False))
    if later:  # round 1 also holds the trainers' start-up and Join on the chain, warm-up here
        s_mean, c_mean = mean([s.seconds for s, _ in later]), mean([c.seconds for _, c in later])
        d, ratio = overhead(c_mean, s_mean)
        out += ["", f"rounds 2-{1 + len(later)} (steady state): in-process {s_mean:.2f} s, "
                f"chain {c_mean:.2f} s per round; overhead {d:+.2f} s, {ratio:.1f}x"]
    if run.rounds:
        out += ["", "Where the time goes (mean seconds per round; the chain column is the "
                "critical path from the block opening a round to the block committing it):", "",
                table(["", "in-process", "chain", "chain - in-process", "share of chain"],
                      breakdown_rows(sim, run.rounds, run.timers, w)),
                "", "Chain critical path per round (s):", "",
                table(["round", *PHASES, "wall", "blocks", "accepted"], phase_rows(run.rounds)),
                "", f"consensus: block interval p50 {run.block_interval_p50 * 1000:.0f} ms during "
                f"the task; trainers' mean training "
                f"{mean([t.seconds for c in run.rounds for t in c.trainers]):.2f} s "
                f"vs {mean([s.train_seconds for s in sim]) / w.trainers:.2f} s per client in-process; "
                f"validator 0: {run.timers.checks:.2f} s of submission checks, of which "
                f"{run.timers.fetch:.2f} s fetching content; {run.timers.aggregate:.2f} s "
                f"aggregating over {run.timers.rounds} rounds"]
    return "\n".join(out)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits", choices=sorted(DEFAULT_MODELS))
    ap.add_argument("--data-dir", default="", help="the data set's files (digits is embedded)")
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--trainers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--pol", default="attest", choices=["attest", "replay", "off"])
    ap.add_argument("--rule", default="robust")
    ap.add_argument("--privacy", default="none", choices=["none", "he"],
                    help="he: CKKS-encrypted updates (needs --rule fedavg); validator 0 holds the key")
    ap.add_argument("--timeout", type=float, default=900, help="give up on the chain after this")
    ap.add_argument("--stall", type=float, default=180,
                    help="give up when no block commits for this many seconds")
    ap.add_argument("--workdir", default="", help="node homes here (kept); default: a temp dir")
    ap.add_argument("--harness-seeds", action="store_true",
                    help="let the harness seed batches per client and round (default: the "
                         "task's seed for every client, as on the chain)")
    ap.add_argument("--json", dest="json_out", default="", help="also write the figures here")
    args = ap.parse_args()
    if args.privacy == "he" and args.rule != "fedavg":
        sys.exit("--privacy he aggregates ciphertexts: pass --rule fedavg")
    if args.dataset != "digits" and not args.data_dir:
        sys.exit(f"--dataset {args.dataset} needs --data-dir (only digits is embedded)")
    mnist_like = args.dataset != "digits"
    w = Workload(dataset=args.dataset,
                 data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else "",
                 validators=args.validators, trainers=args.trainers, rounds=args.rounds,
                 epochs=args.epochs, pol=args.pol, rule=args.rule, privacy=args.privacy,
                 batch_size=32 if mnist_like else 16, lr="0.05" if mnist_like else "0.1",
                 momentum="0.9" if mnist_like else "0.0")
    t0 = time.perf_counter()
    sim, sim_samples = run_inprocess(w, chain_seeds=not args.harness_seeds)
    sim_total = time.perf_counter() - t0
    print(f"in-process: {len(sim)} rounds in {sim_total:.1f} s", flush=True)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fedledger-rov-"))
    # SIGTERM (a CI timeout, `kill`) must stop the node processes too, as Ctrl-C does
    signal.signal(signal.SIGTERM, _raise_interrupt)
    run = run_chain(w, root, args.timeout, keep=bool(args.workdir), stall_s=args.stall)
    print(report(w, sim, sim_samples, run, sim_total))
    if args.json_out:
        doc = {"workload": asdict(w), "inprocess": {"seconds": sim_total, "samples": sim_samples,
                                                    "rounds": [asdict(s) for s in sim]},
               "chain": {**asdict(run),
                         "phases": [critical_path(c) for c in run.rounds if c.trainers],
                         "where": [where_time_goes(c, run.timers) for c in run.rounds
                                   if c.trainers]}}
        Path(args.json_out).write_text(json.dumps(doc, indent=1))
    if not run.complete:
        sys.exit(1)


if __name__ == "__main__":
    main()

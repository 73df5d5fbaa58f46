"""`fedledger demo`: a local consortium trains one model on the chain, watched live.

Starts validators and trainers as separate `fedledger node run` processes on loopback
(trainers hold non-IID parts of the data), creates a task through RPC, follows every round
in a live table (accepted/rejected updates, test accuracy of the committed model, block
height), then writes a PNG plot and a JSON summary, asks a node for inference on the final
model, and stops everything cleanly.
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from cli.common import console, fail

DEFAULT_MODEL = {"digits": "mlp", "mnist": "mnist_cnn", "cifar10": "cifar_cnn"}


def demo(
    dataset: str = typer.Option("digits", "--dataset", help="digits (embedded), mnist, cifar10."),
    data_dir: str = typer.Option("", "--data-dir", help="Directory of the data set's files."),
    validators: int = typer.Option(4, "--validators", min=1, max=16),
    trainers: int = typer.Option(4, "--trainers", min=1, max=32),
    rounds: int = typer.Option(5, "--rounds", min=1, max=500),
    epochs: int = typer.Option(2, "--epochs", min=1, max=100),
    privacy: str = typer.Option("none", "--privacy", help="none, dp, he, dp+he."),
    malicious: float = typer.Option(0.0, "--malicious", min=0.0, max=0.9,
                                    help="Fraction of trainers that attack (evaluation only)."),
    attack: str = typer.Option("sign_flip", "--attack", help="sign_flip, alie, ipm, scaling, ..."),
    rule: str = typer.Option("", "--rule", help="Aggregation rule (default: robust; fedavg "
                                                "with privacy)."),
    pol: str = typer.Option("attest", "--pol", help="Proof-of-learning policy: replay, attest, off."),
    validation: int = typer.Option(0, "--validation", min=0, max=4096,
                                   help="Public validation set of N training samples: the robust "
                                        "rule also rejects updates that raise its loss."),
    output: Path = typer.Option(Path("demo-out"), "--output", "-o", help="Plot and summary go here."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Keep homes and logs here."),
    timeout: float = typer.Option(1800, "--timeout", help="Give up after this many seconds."),
) -> None:
    """Train a model across a local multi-validator consortium and show the result."""
    from cli.localnet import Localnet, LocalnetConfig, RPCFailure, TaskOptions, evaluate_model

    if dataset not in DEFAULT_MODEL:
        fail(f"unknown dataset {dataset!r}: use digits, mnist or cifar10", code=2)
    if dataset != "digits" and not data_dir:
        fail(f"--dataset {dataset} needs --data-dir (only digits is embedded)", code=2)
    if validation and (rule or ("fedavg" if privacy != "none" else "robust")) != "robust":
        fail("--validation needs the robust rule (and privacy none)", code=2)
    n_bad = int(round(malicious * trainers))
    root = workdir or Path(tempfile.mkdtemp(prefix="fedledger-demo-"))
    output.mkdir(parents=True, exist_ok=True)
    cfg = LocalnetConfig(validators=validators, trainers=trainers, dataset=dataset,
                         data_dir=str(Path(data_dir).resolve()) if data_dir else "",
                         malicious=n_bad, attack=attack if n_bad else "")
    model_id = DEFAULT_MODEL[dataset]
    # With attackers, a round at its deadline closes on the honest trainers' submissions:
    # the contract jails an attacker after two rejections, and a quorum of every trainer
    # would then never be reached (the round's deadline would move for ever).
    opts = TaskOptions(name=f"demo-{dataset}", model_id=model_id, rounds=rounds, epochs=epochs,
                       min_participants=trainers - n_bad if n_bad else 0,
                       privacy=privacy, pol_policy=pol if privacy in ("none", "dp") else "off",
                       rule=rule or ("fedavg" if privacy != "none" else "robust"),
                       lr="0.1" if model_id == "mlp" else "0.05",
                       momentum="0.9",
                       batch_size=16 if model_id == "mlp" else 32,
                       dp_clip=1.0 if "dp" in privacy else 0.0,
                       dp_noise=0.3 if "dp" in privacy else 0.0)
    console.print(f"[bold]fedledger demo[/]: {validators} validators, {trainers} trainers "
                  f"({n_bad} malicious: {attack if n_bad else '-'}), {dataset}, {rounds} rounds, "
                  f"privacy {privacy}, PoL {opts.pol_policy}; homes in {root}")
    # SIGTERM (a CI timeout, `kill`) must stop the node processes too, as Ctrl-C does
    signal.signal(signal.SIGTERM, _raise_interrupt)
    net = Localnet(root, cfg)
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    ok = False
    try:
        net.start()
        with console.status("starting the chain (validators reach height 2)..."):
            net.wait_chain(2)
        task_id = net.create_task(opts, validation=_validation_set(cfg, validation))
        console.print(f"task {task_id} created at height {net.height()} "
                      f"({time.monotonic() - t0:.1f} s)")
        _follow(net, task_id, opts, rows, cfg, timeout, t0, evaluate_model)
        _finish(net, task_id, rows, output, cfg, opts, time.monotonic() - t0)
        ok = True
    except (TimeoutError, KeyboardInterrupt, RPCFailure) as e:
        console.print(f"[red]stopped early:[/] {e}")
    finally:
        with console.status("stopping the nodes..."):
            net.close(remove=workdir is None and ok)
        if not ok:
            console.print(f"node homes and logs kept in {root}")
    if not rows or len(rows) < rounds:
        raise typer.Exit(1)


def _validation_set(cfg: Any, samples: int) -> bytes | None:
    """``samples`` of the training split every node agrees on, seeded (ADR 0404)."""
    if not samples:
        return None
    from fl.data.validation import draw_validation, validation_to_bytes
    from node.fl.data import train_test

    train, _ = train_test(cfg.dataset, cfg.data_dir or None)
    return validation_to_bytes(draw_validation(train, min(samples, len(train))))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _table(rows: list[dict[str, Any]], status: str) -> Table:
    t = Table(title=f"federated training on the chain - {status}")
    for col in ("round", "accepted", "rejected", "test accuracy", "height", "elapsed s"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["round"]), str(r["accepted"]), r["rejected_text"],
                  f"{r['accuracy'] * 100:.2f} %", str(r["height"]), f"{r['elapsed_s']:.1f}")
    return t


def _follow(net: Any, task_id: int, opts: Any, rows: list[dict[str, Any]], cfg: Any,
            timeout: float, t0: float, evaluate_model: Any) -> None:
    done = 0
    with Live(_table(rows, "waiting for round 1"), console=console, refresh_per_second=4) as live:
        while done < opts.rounds:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"no result after {timeout:.0f} s")
            net.check_alive()
            task = net.task(task_id)
            if task is None:
                time.sleep(0.5)
                continue
            while done < task["rounds_done"]:
                got = net.modelled_round(task_id, done + 1)
                if got is None:  # HE: the model comes with the key holder's decryption
                    break
                done += 1
                res = got["result"]
                data = net.model_bytes(task_id, done)
                acc = evaluate_model(opts.model_id, opts.model_config, data, cfg.dataset,
                                     cfg.data_dir or None)
                rej = res["rejected"]
                rows.append({"round": done, "accepted": len(res["accepted"]),
                             "rejected": len(rej),
                             "rejected_text": str(len(rej)) + (
                                 f" ({', '.join(sorted({x['reason'].split(':')[0] for x in rej}))})"
                                 if rej else ""),
                             "reasons": [x["reason"] for x in rej], "accuracy": acc,
                             "height": net.height(), "elapsed_s": time.monotonic() - t0,
                             "model_cid": res.get("new_model_cid", "")})
            live.update(_table(rows, f"round {task['round']} of {opts.rounds} "
                                     f"({task['status']}), height {net.height()}"))
            time.sleep(0.5)
    if not console.is_terminal:  # Live's last frame ends without a newline in a log file
        console.line()


def _finish(net: Any, task_id: int, rows: list[dict[str, Any]], output: Path, cfg: Any,
            opts: Any, elapsed: float) -> None:
    from node.fl.data import train_test

    _, test = train_test(cfg.dataset, cfg.data_dir or None)
    sample = test.x[:8].reshape(8, -1).tolist()
    inf = net.rpc(0, "fl_infer", {"task_id": task_id, "inputs": sample})
    labels = [int(y) for y in test.y[:8]]
    console.print(f"fl_infer on 8 test samples: predicted {inf['predictions']}, "
                  f"true {labels}")
    rewards = {}
    for i, node in enumerate(net.trainers):
        tr = net.try_rpc(net.cfg.validators + i, "fl_trainer_status") or {}
        acct = tr.get("account")
        if acct:
            rewards[node.name] = net.account(acct).get("balance")
    summary = {"dataset": cfg.dataset, "validators": cfg.validators, "trainers": cfg.trainers,
               "malicious": cfg.malicious, "attack": cfg.attack, "privacy": opts.privacy,
               "pol_policy": opts.pol_policy, "rule": opts.rule, "rounds": rows,
               "final_accuracy": rows[-1]["accuracy"] if rows else None,
               "elapsed_s": elapsed, "trainer_balances": rewards,
               "inference": {"predictions": inf["predictions"], "labels": labels}}
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _plot(rows, output / "accuracy.png", cfg)
    console.print(f"final test accuracy {summary['final_accuracy'] * 100:.2f} % after "
                  f"{len(rows)} rounds in {elapsed:.0f} s; wrote {output / 'accuracy.png'} and "
                  f"{output / 'summary.json'}")


def _plot(rows: list[dict[str, Any]], path: Path, cfg: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["round"] for r in rows], [r["accuracy"] * 100 for r in rows], marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"fedledger: {cfg.trainers} trainers, {cfg.validators} validators, {cfg.dataset}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

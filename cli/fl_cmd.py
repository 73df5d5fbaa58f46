"""`fedledger fl ...`: the in-process FL harness (simulations with attacks and robust rules)."""

from __future__ import annotations

import json
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True, help="Federated-learning engine tools (no chain).")


@app.callback()
def _fl() -> None:
    """Federated-learning engine tools (no chain)."""


_RULES = "fedavg, median, trimmed, krum, multikrum, normbound, robust"


def _parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


@app.command()
def simulate(
    dataset: str = typer.Option("digits", help="digits (embedded), mnist or cifar10"),
    data_dir: str | None = typer.Option(None, help="directory with the MNIST IDX / CIFAR-10 files"),
    model: str | None = typer.Option(None, help="model id (default: mlp / mnist_cnn / cifar_cnn)"),
    clients: int = typer.Option(100, min=1),
    per_round: int = typer.Option(10, min=1),
    rounds: int = typer.Option(50, min=0),
    partition: str = typer.Option("dirichlet", help="dirichlet, iid or shards"),
    alpha: float = typer.Option(0.5, help="Dirichlet concentration"),
    shards_per_client: int = typer.Option(2, min=1),
    epochs: int = typer.Option(2, min=0),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(0.1),
    momentum: float = typer.Option(0.9),
    optimizer: str = typer.Option("sgd", help="sgd or adam"),
    rule: str = typer.Option("fedavg", help=_RULES),
    rule_param: list[str] = typer.Option([], help="rule parameter KEY=VALUE (repeatable)"),
    attack: str | None = typer.Option(
        None, help="attack for evaluation, or 'absent' (the attackers submit nothing; docs/fl.md)"
    ),
    malicious: float = typer.Option(0.0, help="fraction of malicious clients"),
    centralized: bool = typer.Option(False, help="train one model on the pooled data instead"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps"),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch default)"),
    privacy: str = typer.Option("none", help="none, dp, he or dp+he (docs/privacy.md)"),
    epsilon: float | None = typer.Option(None, help="DP: target epsilon after all rounds"),
    delta: float = typer.Option(1e-5, help="DP: the task's delta"),
    clip: float = typer.Option(1.0, help="DP: L2 bound on each update"),
    noise_multiplier: float | None = typer.Option(
        None, help="DP: noise multiplier z (instead of --epsilon)"
    ),
    he_params: str = typer.Option("n8192", help="HE: CKKS parameters n4096, n8192 or n16384"),
    he_layout: str = typer.Option("auto", help="HE: slot layout auto, exact, packed2 or packed3"),
    validation: int = typer.Option(
        0, min=0, help="robust: a public validation set of N samples from the training split"
    ),
    pol: str = typer.Option(
        "off", help="proof of learning before the rule: off, attest or replay (docs/pol.md)"
    ),
    pol_k: int = typer.Option(8, min=1, help="PoL: a checkpoint every K training steps"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON only"),
) -> None:
    """Run N clients for R rounds in one process and report per-round metrics."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fl.aggregate import AggregationError
    from fl.data import DatasetError
    from fl.models import ModelConfigError
    from fl.privacy.pipeline import PrivacyConfig
    from fl.simulate import RoundMetrics, SimConfig, run_simulation
    from fl.train import DeviceError, TrainConfig

    if threads > 0:
        torch.set_num_threads(threads)
    try:
        if privacy in ("dp", "dp+he") and epsilon is None and noise_multiplier is None:
            raise ValueError("--privacy dp needs --epsilon or --noise-multiplier")
        priv = PrivacyConfig(
            mode=privacy, clip=clip, noise_multiplier=noise_multiplier, epsilon=epsilon,
            delta=delta, he_params=he_params, he_layout=he_layout,
        )  # fmt: skip
        cfg = SimConfig(
            dataset=dataset, data_dir=data_dir, model=model, clients=clients, per_round=per_round,
            rounds=rounds, partition=partition, alpha=alpha, shards_per_client=shards_per_client,
            seed=seed, rule=rule, rule_params=_parse_params(rule_param), attack=attack,
            malicious=malicious, centralized=centralized, device=device, privacy=priv,
            validation=validation, pol=pol, pol_k=pol_k,
            train=TrainConfig(optimizer=optimizer, lr=lr, momentum=momentum, epochs=epochs, batch_size=batch_size),
        )  # fmt: skip
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e

    title = f"{dataset} / {rule}" + (f" / {attack} {malicious:.0%}" if attack else "")
    table = Table(title=title + (f" / {privacy}" if privacy != "none" else ""))
    for col in (
        "round",
        "accuracy",
        "loss",
        "accepted",
        "rejected",
        "poisoned rej.",
        "honest rej.",
        "s",
    ) + (("epsilon",) if privacy in ("dp", "dp+he") else ()):
        table.add_column(col, justify="right")

    console = Console(stderr=as_json)
    with Progress(
        TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(), TextColumn("acc {task.fields[acc]}"),
        TimeElapsedColumn(), console=console, disable=as_json,
    ) as bar:  # fmt: skip
        task = bar.add_task("rounds", total=rounds, acc="-")

        def on_round(m: RoundMetrics) -> None:
            bar.update(task, advance=1, acc=f"{m.accuracy:.4f}")
            table.add_row(
                str(m.round), f"{m.accuracy:.4f}", f"{m.loss:.4f}", str(m.accepted), str(m.rejected),
                f"{m.poisoned_rejected}/{m.poisoned}", f"{m.honest_rejected}/{m.honest}", f"{m.seconds:.2f}",
                *((f"{m.epsilon:.3f}",) if m.epsilon is not None else ()),
            )  # fmt: skip

        try:
            result = run_simulation(cfg, on_round=on_round)
        except (DatasetError, ModelConfigError, DeviceError, AggregationError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e

    if as_json:
        typer.echo(json.dumps(result.to_plain(), indent=2))
        return
    console.print(table)
    pr, hr = result.poisoned_rejected_fraction, result.honest_rejected_fraction
    console.print(
        f"final accuracy {result.final_accuracy:.4f} (start {result.initial_accuracy:.4f}) in {result.seconds:.1f}s"
        + (f"; poisoned rejected {pr:.1%}" if pr is not None else "")
        + (f"; honest rejected {hr:.1%}" if hr is not None else "")
    )


@app.command("validation-set")
def validation_set(
    out: str = typer.Argument(..., help="file to write (.safetensors)"),
    dataset: str = typer.Option("digits", help="digits (embedded), mnist or cifar10"),
    data_dir: str | None = typer.Option(None, help="directory with the MNIST IDX / CIFAR-10 files"),
    samples: int = typer.Option(256, min=1, help="samples to draw (at most 4096)"),
    seed: int = typer.Option(0, help="seed of the draw"),
) -> None:
    """Write a public validation set for `fedledger task create --validation` (ADR 0404)."""
    from fl.data import DatasetError, load_dataset
    from fl.data.validation import draw_validation, validation_to_bytes

    try:
        blob = validation_to_bytes(draw_validation(load_dataset(dataset, data_dir), samples, seed))
        with open(out, "wb") as f:
            f.write(blob)
    except (DatasetError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {samples} {dataset} samples ({len(blob)} bytes) to {out}")

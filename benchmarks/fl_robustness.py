"""Acceptance 2: every attack at 20 % and 30 % malicious clients against every aggregation rule.

    FEDLEDGER_MNIST_DIR=../shared/data/mnist python benchmarks/fl_robustness.py \
        [--rounds 20] [--workers 2] [--fractions 0.2,0.3] [--rules ...] [--attacks ...] [--json out.json]
        [--validation 256] [--seed 0]

Same workload as benchmarks/fl_mnist.py (MNIST 8,000/2,000, 100 clients Dirichlet(0.5),
10 per round, 2 local epochs) for fewer rounds. Per cell: final test accuracy, the
fraction of poisoned updates rejected and the fraction of honest updates rejected,
with the clean run of the same rule as the baseline. Rules that never reject
(FedAvg, median, trimmed mean, norm bounding) show "-" for the rejection columns.
``robust+val`` is the default rule with a public validation set of ``--validation``
samples drawn from the training split (the screen's ``raises_validation_loss`` check).
``robust+val+pol`` adds proof of learning under the ``replay`` policy before the screen,
as validators run it (fl/simulate_pol.py; checkpoints every 8 steps, the task default).
It is not in the default ``--rules``: name it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# One BLAS and OpenMP thread per worker process, set before numpy loads: 15 jobs on 16 cores,
# each with numpy's default of a thread per core, ran over 4x slower (measured).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# In priority order: jobs run rule by rule, so a campaign cut short still covers the default rule.
RULES = ["robust+val", "robust", "fedavg", "multikrum", "krum", "median", "trimmed", "normbound"]
RULE_PARAMS: dict[str, dict[str, Any]] = {"normbound": {"max_norm": "1.0"}}
ATTACKS = [
    "sign_flip",
    "gaussian",
    "scaling",
    "label_flip",
    "alie",
    "ipm",
    "free_rider",
    "free_rider_copy",
]
REJECTING = {"krum", "multikrum", "robust", "robust+val", "robust+val+pol"}


def _run(job: tuple[str, str | None, float, int, str, int, str, int]) -> dict[str, Any]:
    name, attack, frac, rounds, data_dir, validation, screen_params, seed = job
    rule = "robust" if name.startswith("robust+val") else name
    import torch

    torch.set_num_threads(1)
    from fl.simulate import SimConfig, run_simulation

    cfg = SimConfig(
        dataset="mnist", data_dir=data_dir, rounds=rounds, rule=rule,
        rule_params={**RULE_PARAMS.get(rule, {}), **(json.loads(screen_params) if rule == "robust" else {})},
        attack=attack, malicious=frac if attack else 0.0, device="cpu", eval_every=rounds,
        validation=validation if rule == "robust" and name != "robust" else 0, seed=seed,
        pol="replay" if name == "robust+val+pol" else "off",
    )  # fmt: skip
    r = run_simulation(cfg)
    reasons: dict[str, int] = {}
    for m in r.rounds:
        for k, v in m.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    return {
        "rule": name, "attack": attack, "malicious": frac, "accuracy": r.final_accuracy,
        "poisoned": sum(m.poisoned for m in r.rounds), "poisoned_rejected": r.poisoned_rejected_fraction,
        "honest_rejected": r.honest_rejected_fraction, "reasons": reasons, "seconds": r.seconds,
    }  # fmt: skip


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--fractions", default="0.2,0.3")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--json", dest="json_out")
    p.add_argument("--validation", type=int, default=256, help="robust+val's validation samples")
    p.add_argument("--screen-params", default="{}", help="JSON ScreenConfig overrides for robust")
    p.add_argument("--seed", type=int, default=0, help="the data split, partition and sampling")
    p.add_argument("--table-from", help="only print the table from a JSON file of an earlier run")
    args = p.parse_args()
    if not args.data_dir:
        sys.exit("set FEDLEDGER_MNIST_DIR or pass --data-dir")
    rules, attacks = args.rules.split(","), args.attacks.split(",")
    fractions = [float(f) for f in args.fractions.split(",")]
    jobs = [
        job
        for r in rules
        for job in [(r, None, 0.0, args.rounds, args.data_dir, args.validation,
                     args.screen_params, args.seed)]
        + [(r, a, f, args.rounds, args.data_dir, args.validation, args.screen_params, args.seed)
           for f in fractions for a in attacks]
    ]
    if args.table_from:
        render(
            json.loads(Path(args.table_from).read_text()), rules, attacks, fractions, args.rounds
        )
        return
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for res in pool.map(_run, jobs):
            results.append(res)
            print(f"{res['rule']:9s} {res['attack'] or 'clean':16s} {res['malicious']:.1f} acc {res['accuracy']:.4f} "
                  f"poisoned rej {_pct(res['poisoned_rejected'])} honest rej {_pct(res['honest_rejected'])} "
                  f"{res['reasons']} {res['seconds']:.0f}s", flush=True)  # fmt: skip
            if args.json_out:  # written after every run, so a campaign cut short keeps its results
                Path(args.json_out).write_text(json.dumps(results, indent=1))
    render(results, rules, attacks, fractions, args.rounds)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f}s with {args.workers} worker(s)")


def render(
    results: list[dict[str, Any]],
    rules: list[str],
    attacks: list[str],
    fractions: list[float],
    rounds: int,
) -> None:
    clean = {r["rule"]: r["accuracy"] for r in results if r["attack"] is None}
    print(
        f"\n### Robustness, MNIST, {rounds} rounds (accuracy %, poisoned rejected %, honest rejected %)\n"
    )
    print("Clean runs: " + ", ".join(f"{r} {100 * a:.2f}" for r, a in clean.items()) + "\n")
    print("| attack | malicious | " + " | ".join(rules) + " |")
    print("| --- | ---: | " + " | ".join("---" for _ in rules) + " |")
    for f in fractions:
        for a in attacks:
            cells = []
            for r in rules:
                res = next(
                    (
                        x
                        for x in results
                        if x["rule"] == r and x["attack"] == a and x["malicious"] == f
                    ),
                    None,
                )
                if res is None:
                    cells.append("not run")
                    continue
                acc = f"{100 * res['accuracy']:.2f}"
                cells.append(acc if r not in REJECTING else
                             f"{acc} / {_pct(res['poisoned_rejected'])} / {_pct(res['honest_rejected'])}")  # fmt: skip
            print(f"| {a} | {int(100 * f)} % | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""How the bounds of the screen's ``label_mismatch`` check trade label flips for honest updates.

    FEDLEDGER_MNIST_DIR=../shared/data/mnist python benchmarks/label_flip_rules.py \
        [--seeds 0,1,2,3] [--fractions 0,0.2,0.3] [--rounds 50] [--validation 256] [--workers 2]
        [--dump rows.json]

The robustness benchmark's workload (MNIST 8,000/2,000, 100 clients Dirichlet(0.5), 10 per
round, 2 local epochs) with label flip (y -> 9 - y; fraction 0 is a clean run), the default
screen with a public validation set, for a few seeds. For every submitted update it records
the screen's verdict and the check's statistic (the off-diagonal share of the update's
coefficients on the validation classes' logit gradients, exact: ADR 0407). Offline it then
applies the check's decision (``fl.aggregate.screen._mismatched``) with other bounds on top
of the other checks' recorded verdicts. The trajectory is the default screen's, so a row
estimates what other bounds would reject, without replaying how that would change the
rest of the run. Per fraction: label flips rejected / honest updates rejected, then how many
flips pass in rounds 1-10 + after, and how many honest updates the check itself rejects.

The figures are in docs/BENCHMARKS.md ("Label flip: the bounds of label_mismatch").
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# One BLAS and OpenMP thread per worker process, set before numpy loads: 15 jobs on 16 cores,
# each with numpy's default of a thread per core, ran over 4x slower (measured).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

EARLY = 10  # rounds counted as "early" in the table
# (max_label_mismatch, label_rel, label_loss_floor); the first is the default
BOUNDS = [("99/100", "0", "13/200"), ("97/100", "0", "13/200"), ("97/100", "1/5", "13/200"),
          ("97/100", "1/5", "0"), ("99/100", "0", "1/20"), ("99/100", "0", "3/40"),
          ("99/100", "0", "0"), ("1", "0", "0")]  # fmt: skip  # 4th: ADR 0407's; last: off


def _collect(job: tuple[int, int, float, int, str, bool]) -> list[dict[str, Any]]:
    """One run with the default screen: per update its run, round, whether it is malicious,
    the screen's reason and the ``label_mismatch`` statistic (None: nothing to decompose)."""
    seed, rounds, malicious, validation, data_dir, dump = job
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from fl.aggregate.labels import LabelBasis
    from fl.aggregate.screen import ScreenConfig
    from fl.data import load_dataset, split
    from fl.data.validation import draw_validation
    from fl.models.exact import ExactModel, ValidationLoss
    from fl.simulate import DEFAULT_MODELS, RoundUpdates, SimConfig, run_simulation

    cfg = SimConfig(dataset="mnist", data_dir=data_dir, rounds=rounds, rule="robust",
                    attack="label_flip" if malicious else None, malicious=malicious,
                    device="cpu", seed=seed, eval_every=rounds, validation=validation)  # fmt: skip
    train_set, _ = split(load_dataset("mnist", data_dir), cfg.test_fraction, cfg.seed)
    val = draw_validation(train_set, validation, [cfg.seed, 0x56414C])  # as fl.simulate does
    exact = ExactModel(DEFAULT_MODELS["mnist"])
    rows: list[dict[str, Any]] = []

    def observe(r: RoundUpdates) -> None:
        loss = ValidationLoss(exact, r.global_q, val.x, val.y)
        directions = loss.label_directions()
        base = loss(np.zeros_like(r.global_q))  # the global model's, 2^-28 nats per sample
        assert directions is not None
        basis = LabelBasis(directions, ScreenConfig().label_ridge)
        for u, bad, v in zip(r.updates, r.malicious, r.result.verdicts, strict=True):
            coef = basis.coefficients(u.delta)  # one solve for the share and the dump
            rows.append({"run": (malicious, seed, r.round), "round": r.round, "bad": bad,
                         "reason": v.reason, "share": basis.share(coef), "base": base,
                         "weight": u.weight, "present": [int(c) for c in basis.present],
                         "coef": None if coef is None or not dump
                         else [c / 2**48 for c in coef]})  # fmt: skip

    run_simulation(cfg, on_updates=observe)
    return rows


def rejected(rows: list[dict[str, Any]], max_mismatch: str, rel: str, floor: str) -> list[bool]:
    """Each update's verdict with the check's bounds replaced: the other checks' recorded
    rejections, plus the check's own decision over the updates they left."""
    from fl.aggregate.screen import ScreenConfig, _mismatched

    cfg = ScreenConfig.from_params({"max_label_mismatch": max_mismatch, "label_rel": rel,
                                    "label_loss_floor": floor})
    # the checks before label_mismatch; derived_from_others runs after it
    other = [r["reason"] not in ("ok", "label_mismatch", "derived_from_others") for r in rows]
    by_run: dict[tuple[float, int, int], dict[int, Fraction | None]] = {}
    base: dict[tuple[float, int, int], int] = {}
    for i, r in enumerate(rows):
        base[r["run"]] = r["base"]
        if not other[i]:
            by_run.setdefault(r["run"], {})[i] = r["share"]
    flagged = {i for run, shares in by_run.items() for i in _mismatched(shares, cfg, base[run])}
    return [other[i] or i in flagged or rows[i]["reason"] == "derived_from_others"
            for i in range(len(rows))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--fractions", default="0,0.2,0.3")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--validation", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dump", help="write every update's record (with its coefficients) as JSON")
    args = p.parse_args()
    if not args.data_dir:
        sys.exit("set FEDLEDGER_MNIST_DIR or pass --data-dir")
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    started = time.perf_counter()
    jobs = [(s, args.rounds, f, args.validation, args.data_dir, bool(args.dump))
            for f in fractions for s in seeds]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for job, got in zip(jobs, pool.map(_collect, jobs), strict=True):
            rows.extend(got)
            print(f"malicious {job[2]:.0%} seed {job[0]}: {len(got)} updates", flush=True)
    if args.dump:
        text = json.dumps([{**r, "share": None if r["share"] is None else float(r["share"]),
                            "coef": r["coef"] and [float(f"{c:.5g}") for c in r["coef"]]}
                           for r in rows])  # fmt: skip
        opener = gzip.open if args.dump.endswith(".gz") else open
        with opener(args.dump, "wt") as f:
            f.write(text)

    print(f"\nlabel flip, seeds {args.seeds}, {args.rounds} rounds, validation {args.validation}: "
          f"flips rejected / honest rejected (flips passing in rounds 1-{EARLY} + after; "
          f"honest updates the check rejects)\n")
    print("| max_label_mismatch | label_rel | label_loss_floor | "
          + " | ".join(f"{f:.0%} malicious" for f in fractions) + " |")
    print("| --- | --- | --- |" + " --- |" * len(fractions))
    for max_mismatch, rel, floor in BOUNDS:
        rej = rejected(rows, max_mismatch, rel, floor)
        cells = []
        for f in fractions:
            mine = [i for i, r in enumerate(rows) if r["run"][0] == f]
            bad = [i for i in mine if rows[i]["bad"]]
            honest = [i for i in mine if not rows[i]["bad"]]
            own = sum(rej[i] and rows[i]["reason"] in ("ok", "label_mismatch") for i in honest)
            honest_cell = f"{100 * sum(rej[i] for i in honest) / len(honest):.2f} %"
            if not bad:
                cells.append(f"{honest_cell} (check: {own})")
                continue
            early = sum(not rej[i] and rows[i]["round"] <= EARLY for i in bad)
            late = sum(not rej[i] and rows[i]["round"] > EARLY for i in bad)
            cells.append(f"{100 * sum(rej[i] for i in bad) / len(bad):.1f} % / {honest_cell} "
                         f"(pass {early} + {late}; check: {own})")
        print(f"| {max_mismatch} | {rel} | {floor} | " + " | ".join(cells) + " |")
    print(f"\ntotal wall time {time.perf_counter() - started:.0f}s with {args.workers} worker(s)")


if __name__ == "__main__":
    main()

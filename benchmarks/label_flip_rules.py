"""What candidate label-flip rules would add to the default screen over a whole run.

    FEDLEDGER_MNIST_DIR=../shared/data/mnist python benchmarks/label_flip_rules.py \
        [--seeds 0,1,2,3] [--fractions 0.2,0.3] [--rounds 50] [--validation 256] [--workers 2]

The robustness benchmark's workload with label flip (y -> 9 - y) and the default screen with
a public validation set. For every submitted update it records the screen's verdict, the
output layer's dot products with the validation classes' mean features at the global model
(from which the ``label_mismatch`` statistic follows) and the validation set's response to a
tenth of the update (the mean change of each class's softmax probabilities on each true
class's images). Offline, it then applies candidate rules on top of the recorded verdicts:

* ``current``: the screen as it is (``label_mismatch`` above 24/25);
* ``relative f``: also flag an update whose diagonal share ``1 - s`` is below ``f`` times the
  diagonal share of the lower third of the round's scores (a threshold that follows the
  honest majority of the round as the model converges, instead of one fixed for the run);
* ``response``: while the validation classes' mean features are nearly collinear (mean
  pairwise cosine above 0.9: the first rounds, where the decomposition has nothing to work
  on), also flag an update whose response matrix, centred per logit, puts more than 0.9 of
  its positive mass off the diagonal;
* ``both``: the union of the two.

The scores here are float64 (the screen's own statistic is exact); the other checks'
verdicts are the recorded ones, so a candidate's figures ignore how its extra rejections
would have changed the rest of the trajectory. It answers "is any of these worth building
into the screen?", not "what would the screen do". The figures are in docs/BENCHMARKS.md
("Label flip: candidate rules over 50 rounds").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

F64 = npt.NDArray[np.float64]
RIDGE = 0.1  # the screen's label_ridge
COLLINEAR = 0.9  # mean pairwise cosine of the class means above which the response rule runs
EARLY = 10  # rounds counted as "early" in the table


def _collect(job: tuple[int, int, float, int, str]) -> list[dict[str, Any]]:
    """One run: per update its round, whether it is malicious, the screen's reason, the
    output layer's dots with the class means, the response matrix; per round the class
    means' Gram matrix."""
    seed, rounds, malicious, validation, data_dir = job
    import torch

    torch.set_num_threads(1)
    from fl.aggregate import dequantize
    from fl.data import load_dataset, split
    from fl.data.validation import draw_validation
    from fl.models import build_model, output_weight_range, state_dict_of, unflatten
    from fl.models.exact import ExactModel, ValidationLoss
    from fl.simulate import DEFAULT_MODELS, RoundUpdates, SimConfig, run_simulation

    cfg = SimConfig(dataset="mnist", data_dir=data_dir, rounds=rounds, rule="robust",
                    attack="label_flip", malicious=malicious, device="cpu", seed=seed,
                    eval_every=rounds, validation=validation)  # fmt: skip
    train_set, _ = split(load_dataset("mnist", data_dir), cfg.test_fraction, cfg.seed)
    val = draw_validation(train_set, validation, [cfg.seed, 0x56414C])  # as fl.simulate does
    vx, vy = torch.tensor(val.x), np.asarray(val.y)
    exact = ExactModel(DEFAULT_MODELS["mnist"])
    net = build_model(DEFAULT_MODELS["mnist"], {}, seed=0)
    head = output_weight_range(net)
    template = state_dict_of(net)
    classes = int(vy.max()) + 1
    rows: list[dict[str, Any]] = []

    def per_class(flat_q: npt.NDArray[np.int64]) -> F64:
        net.load_state_dict(unflatten(dequantize(flat_q), template))
        with torch.no_grad():
            p = torch.softmax(net(vx).double(), 1).numpy()
        return np.stack([p[vy == c].mean(0) for c in range(classes)])

    def observe(r: RoundUpdates) -> None:
        sums, counts = ValidationLoss(exact, r.global_q, val.x, val.y).class_features()
        means = sums.astype(np.float64) / np.maximum(np.array(counts, float), 1)[:, None]
        before = per_class(r.global_q)
        for u, bad, v in zip(r.updates, r.malicious, r.result.verdicts, strict=True):
            w = u.delta[head[0] : head[1]].reshape(means.shape[0], -1).astype(np.float64)
            rows.append({"run": (malicious, seed, r.round), "round": r.round, "bad": bad,
                         "reason": v.reason, "gram": means @ means.T, "dots": w @ means.T,
                         "response": per_class(r.global_q + u.delta // 10) - before})  # fmt: skip

    run_simulation(cfg, on_updates=observe)
    return rows


def off_share(a: F64) -> float:
    """Share of the positive part off the diagonal (0 where there is none)."""
    p = np.maximum(a, 0.0)
    total = float(p.sum())
    return (total - float(np.trace(p))) / total if total > 0 else 0.0


def mismatch(row: dict[str, Any]) -> float:
    """The ``label_mismatch`` statistic in float: ridge coefficients, rows centred."""
    g = row["gram"]
    coef = row["dots"] @ np.linalg.inv(g + RIDGE * np.trace(g) / len(g) * np.eye(len(g)))
    return off_share(coef - coef.mean(1, keepdims=True))


def collinearity(g: F64) -> float:
    d = np.sqrt(np.diag(g))
    c = g / np.outer(d, d)
    return float((c.sum() - len(g)) / (len(g) ** 2 - len(g)))


def relative_flags(
    rows: list[dict[str, Any]], s: F64, live: npt.NDArray[np.bool_], f: float
) -> npt.NDArray[np.bool_]:
    """1 - s below f x (1 - the lower third of the live scores of the same round)."""
    flag = np.zeros(len(rows), bool)
    by_run: dict[tuple[float, int, int], list[int]] = {}
    for i, r in enumerate(rows):
        by_run.setdefault(r["run"], []).append(i)
    for idx in by_run.values():
        scores = sorted(s[i] for i in idx if live[i])
        if not scores:
            continue
        ref = scores[(len(scores) - 1) // 3]
        for i in idx:
            flag[i] = 1 - s[i] < f * (1 - ref)
    return flag


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--fractions", default="0.2,0.3")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--validation", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if not args.data_dir:
        sys.exit("set FEDLEDGER_MNIST_DIR or pass --data-dir")
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    started = time.perf_counter()
    jobs = [(s, args.rounds, f, args.validation, args.data_dir) for f in fractions for s in seeds]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for job, got in zip(jobs, pool.map(_collect, jobs), strict=True):
            rows.extend(got)
            print(f"malicious {job[2]:.0%} seed {job[0]}: {len(got)} updates", flush=True)

    bad = np.array([r["bad"] for r in rows])
    early = np.array([r["round"] <= EARLY for r in rows])
    reason = np.array([r["reason"] for r in rows])
    frac = np.array([r["run"][0] for r in rows])
    # rejected by a check other than label_mismatch; derived_from_others runs after it
    other = ~np.isin(reason, ["ok", "label_mismatch", "derived_from_others"])
    s = np.array([mismatch(r) for r in rows])
    b = np.array([off_share(r["response"] - r["response"].mean(0, keepdims=True)) for r in rows])
    near_init = np.array([collinearity(r["gram"]) > COLLINEAR for r in rows])
    current = reason != "ok"
    candidates: list[tuple[str, Callable[[], npt.NDArray[np.bool_]]]] = [
        ("current", lambda: current),
        ("relative 0.2", lambda: current | (~other & relative_flags(rows, s, ~other, 0.2))),
        ("relative 0.25", lambda: current | (~other & relative_flags(rows, s, ~other, 0.25))),
        ("response", lambda: current | (~other & near_init & (b > 0.9))),
        (
            "both (relative 0.2)",
            lambda: (
                current
                | (~other & (relative_flags(rows, s, ~other, 0.2) | (near_init & (b > 0.9))))
            ),
        ),
    ]
    print(
        f"\nlabel flip, seeds {args.seeds}, {args.rounds} rounds, validation {args.validation}: "
        f"flips rejected / honest rejected, and the flips that pass in rounds 1-{EARLY} "
        f"and after\n"
    )
    print("| rule | " + " | ".join(f"{f:.0%} malicious" for f in fractions) + " |")
    print("| --- |" + " --- |" * len(fractions))
    for name, flags in candidates:
        rej = flags()
        cells = []
        for f in fractions:
            m = frac == f
            passed = m & bad & ~rej
            cells.append(
                f"{100 * rej[m & bad].mean():.1f} % / {100 * rej[m & ~bad].mean():.2f} % "
                f"(pass {int((passed & early).sum())} + {int((passed & ~early).sum())})"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\ntotal wall time {time.perf_counter() - started:.0f}s with {args.workers} worker(s)")


if __name__ == "__main__":
    main()

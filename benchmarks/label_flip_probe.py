"""How far any validation-set score can separate the label flips of the first rounds.

    FEDLEDGER_MNIST_DIR=../shared/data/mnist python benchmarks/label_flip_probe.py \
        [--seeds 0,1,2,3] [--rounds 12] [--malicious 0.3] [--validation 256] [--workers 2]

The robustness benchmark's workload (MNIST 8,000/2,000, 100 clients Dirichlet(0.5), 10 per
round, 2 local epochs, label flip y -> 9 - y), the default screen with a public validation
set, for a few seeds. For every submitted update it records the validation set's response
to a step of ``1/step`` of the update: the mean change of each logit over the images of
each true class, a 10 x 10 matrix M (rows: true class, columns: logit), centred per image
over the logits (softmax ignores a common shift) and per logit over the classes (a logit
raised on every image is a prior, not a mapping). That matrix is what the validation set
can tell about the update's input-to-label mapping at that step; the screen's loss check
is one function of the same logits.

Per group of rounds it prints the fraction of flipped updates that each score flags when
its threshold flags 2 % (and 5 %) of the honest updates of the same rounds:

* ``screen``: the default screen's own verdicts (its rejections of honest updates are what
  they are, not tuned to 2 %);
* ``loss``: the validation loss change after the step (the screen's ``raises_validation_loss``
  statistic, in float here);
* ``selectivity``: the trace of M over its norm (does the update raise each class's logit
  on that class's own images?), which knows nothing of the attack;
* ``oracle``: a logistic regression over all 100 entries of M, trained on the other seeds'
  labelled updates (leave-one-seed-out) - it learns the attack's own mapping y -> 9 - y,
  which no deployable screen knows, so it bounds from above what a score of M can do;
* ``labels``: the screen's ``label_mismatch`` statistic (ADR 0407: the off-diagonal share
  of the update's coefficients on the gradients of each logit summed over each validation
  class, for the last two layers, exact); it reads the update's weights directly rather
  than the logits' response to it.

The figures are in docs/BENCHMARKS.md ("Label flip in the first rounds").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# One BLAS and OpenMP thread per worker process, set before numpy loads: 15 jobs on 16 cores,
# each with numpy's default of a thread per core, ran over 4x slower (measured).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread settings)
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GROUPS = [(1, 5), (6, 10), (11, 10**9)]


def _probe(job: tuple[int, int, float, int, int, str]) -> list[dict[str, Any]]:
    """One seed's run: per update, its round, whether it is malicious, the screen's verdict,
    the loss change and the response matrix M."""
    seed, rounds, malicious, validation, step, data_dir = job
    import torch

    torch.set_num_threads(1)
    from fl.aggregate import dequantize
    from fl.data import load_dataset, split
    from fl.data.validation import draw_validation
    from fl.models import build_model, state_dict_of, unflatten
    from fl.simulate import DEFAULT_MODELS, RoundUpdates, SimConfig, run_simulation

    cfg = SimConfig(dataset="mnist", data_dir=data_dir, rounds=rounds, rule="robust",
                    attack="label_flip", malicious=malicious, device="cpu", seed=seed,
                    eval_every=rounds, validation=validation)  # fmt: skip
    train_set, _ = split(load_dataset("mnist", data_dir), cfg.test_fraction, cfg.seed)
    # the screen's own validation draw (fl.simulate draws it with the same seed)
    val = draw_validation(train_set, validation, [cfg.seed, 0x56414C])
    vx, vy = torch.tensor(val.x), np.asarray(val.y)
    net = build_model(DEFAULT_MODELS["mnist"], {}, seed=0)
    template = state_dict_of(net)
    classes = int(vy.max()) + 1
    rows: list[dict[str, Any]] = []
    from fractions import Fraction

    from fl.aggregate.labels import LabelBasis
    from fl.aggregate.screen import ScreenConfig
    from fl.models.exact import ExactModel, ValidationLoss

    exact = ExactModel(DEFAULT_MODELS["mnist"])

    def logits(flat_q: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        net.load_state_dict(unflatten(dequantize(flat_q), template))
        with torch.no_grad():
            return net(vx).double().numpy()  # type: ignore[no-any-return]

    def nll(lg: npt.NDArray[np.float64]) -> float:
        top = lg.max(1, keepdims=True)
        logp = lg - top - np.log(np.exp(lg - top).sum(1, keepdims=True))
        return float(-logp[np.arange(len(vy)), vy].mean())

    def observe(r: RoundUpdates) -> None:
        before = logits(r.global_q)
        directions = ValidationLoss(exact, r.global_q, val.x, val.y).label_directions()
        assert directions is not None
        basis = LabelBasis(directions, ScreenConfig().label_ridge)
        for u, bad, v in zip(r.updates, r.malicious, r.result.verdicts, strict=True):
            share = basis.mismatch(u.delta)
            after = logits(r.global_q + u.delta // step)
            d = after - before
            d -= d.mean(1, keepdims=True)
            m = np.stack([d[vy == c].mean(0) for c in range(classes)])
            m -= m.mean(0, keepdims=True)
            rows.append({"seed": seed, "round": r.round, "bad": bad, "accepted": v.accepted,
                         "loss": nll(after) - nll(before), "m": m,
                         "labels": float(share if share is not None else Fraction(0))})  # fmt: skip

    run_simulation(cfg, on_updates=observe)
    return rows


def _flagged(scores_h: npt.NDArray[np.float64], scores_b: npt.NDArray[np.float64],
             fpr: float) -> float:
    """Fraction of ``scores_b`` above the threshold that flags ``fpr`` of ``scores_h``
    (higher score = more suspect)."""
    if not len(scores_b):
        return float("nan")
    t = np.quantile(scores_h, 1 - fpr)
    return float(np.mean(scores_b > t))


def _oracle(rows: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
    """Leave-one-seed-out logistic regression on M (normalised): a score per row."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.array([r["m"].ravel() / (np.linalg.norm(r["m"]) + 1e-12) for r in rows])
    y = np.array([r["bad"] for r in rows])
    seeds = np.array([r["seed"] for r in rows])
    out = np.zeros(len(rows))
    for s in np.unique(seeds):
        fit = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        fit.fit(x[seeds != s], y[seeds != s])
        out[seeds == s] = fit.decision_function(x[seeds == s])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--malicious", type=float, default=0.3)
    p.add_argument("--validation", type=int, default=256)
    p.add_argument("--step", type=int, default=10, help="probe a step of 1/STEP of each update")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if not args.data_dir:
        sys.exit("set FEDLEDGER_MNIST_DIR or pass --data-dir")
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) < 2:
        sys.exit("the oracle needs at least two seeds (it is trained on the others)")
    started = time.perf_counter()
    jobs = [(s, args.rounds, args.malicious, args.validation, args.step, args.data_dir)
            for s in seeds]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for seed, got in zip(seeds, pool.map(_probe, jobs), strict=True):
            rows.extend(got)
            print(f"seed {seed}: {len(got)} updates", flush=True)
    scores = {
        "loss": np.array([r["loss"] for r in rows]),
        "selectivity": np.array([-np.trace(r["m"]) / (np.linalg.norm(r["m"]) + 1e-12)
                                 for r in rows]),
        "oracle": _oracle(rows),
        "labels": np.array([r["labels"] for r in rows]),
    }
    rnd = np.array([r["round"] for r in rows])
    bad = np.array([r["bad"] for r in rows])
    rejected = np.array([not r["accepted"] for r in rows])
    print(f"\nlabel flip at {args.malicious:.0%}, seeds {args.seeds}, step 1/{args.step}, "
          f"validation {args.validation}: flipped updates flagged at 2 % / 5 % of honest flagged\n")
    print("| rounds | honest / flipped | screen (honest rejected) | loss | selectivity | oracle "
          "| labels |")
    print("| --- | ---: | --- | --- | --- | --- | --- |")
    for lo, hi in GROUPS:
        g = (rnd >= lo) & (rnd <= hi)
        if not g.any():
            continue
        h, b = g & ~bad, g & bad
        cells = [f"{100 * rejected[b].mean():.0f} % ({100 * rejected[h].mean():.1f} %)"]
        for name in ("loss", "selectivity", "oracle", "labels"):
            sc = scores[name]
            cells.append(f"{100 * _flagged(sc[h], sc[b], 0.02):.0f} / "
                         f"{100 * _flagged(sc[h], sc[b], 0.05):.0f} %")
        label = f"{lo}-{hi}" if hi < 10**9 else f"{lo}-{args.rounds}"
        print(f"| {label} | {h.sum()} / {b.sum()} | " + " | ".join(cells) + " |")
    print(f"\ntotal wall time {time.perf_counter() - started:.0f}s with {args.workers} worker(s)")


if __name__ == "__main__":
    main()

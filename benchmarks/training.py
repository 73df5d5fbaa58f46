"""Local-training throughput against a minimal hand-written torch loop, and aggregation cost.

    python benchmarks/training.py [--data-dir DIR] [--threads 1] [--repeats 3] [--agg-sizes 47000,1000000]
                                  [--device cpu|cuda]

Training: the MNIST CNN on 8,000 samples (real MNIST when a directory is given or
FEDLEDGER_MNIST_DIR is set, random images of the same shape otherwise), SGD with
momentum, batch 32, one epoch per measurement; `train_local` (deterministic mode,
explicit batch schedule, hooks) next to the shortest loop that trains the same
model on the same data. Aggregation: 100 quantized updates of 47k and of 1M
parameters through each rule, next to a float32 numpy mean as the baseline.

Times are CPU seconds of this process (`time.process_time`) with one torch thread: on a
shared machine wall-clock time mostly measures the neighbours, CPU time measures the code.
With `--device cuda` the training rows are wall seconds, synchronized before each reading.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl.aggregate import ScreenContext, Update, aggregate, quantize  # noqa: E402
from fl.data import Dataset, load_mnist, split  # noqa: E402
from fl.models import build_model  # noqa: E402
from fl.pol.precision import full_fp32  # noqa: E402
from fl.train import TrainConfig, train_local  # noqa: E402


def _data(data_dir: str | None) -> Dataset:
    if data_dir:
        return split(load_mnist(data_dir), 0.2, seed=0)[0]
    rng = np.random.default_rng(0)
    x = rng.random((8000, 1, 28, 28), dtype=np.float32)
    return Dataset("random", x, rng.integers(0, 10, 8000).astype(np.int64), 10)


def _clock(device: str) -> float:
    """CPU seconds on the CPU (neighbours do not inflate them); wall seconds after a sync on CUDA."""
    if device == "cpu":
        return time.process_time()
    torch.cuda.synchronize()
    return time.perf_counter()


def _hand_loop(ds: Dataset, seed: int, device: str) -> float:
    model = build_model("mnist_cnn", seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.from_numpy(ds.x).to(device), torch.from_numpy(ds.y).to(device)
    g = torch.Generator().manual_seed(seed)
    t = _clock(device)
    perm = torch.randperm(len(ds), generator=g).to(device)
    for i in range(0, len(ds), 32):
        idx = perm[i : i + 32]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return len(ds) / (_clock(device) - t)


def _ours(ds: Dataset, seed: int, deterministic: bool, device: str, pol: bool = False) -> float:
    model = build_model("mnist_cnn", seed=0)
    cfg = TrainConfig(
        lr=0.05, momentum=0.9, epochs=1, batch_size=32, seed=seed, deterministic=deterministic
    )
    t = _clock(device)
    with full_fp32() if pol else contextlib.nullcontext():
        res = train_local(model, ds, cfg, device, on_step=lambda *a: None, progress=lambda *a: None)
    return res.samples / (_clock(device) - t)


def bench_training(ds: Dataset, repeats: int, device: str) -> None:
    runs: dict[str, list[float]] = {"hand-written loop": [], "train_local (deterministic)": [],
                                    "train_local (non-deterministic)": []}  # fmt: skip
    _hand_loop(ds.subset(np.arange(256)), 0, device)  # warm-up
    for r in range(repeats):  # interleaved, so drifting machine load hits all alike
        runs["hand-written loop"].append(_hand_loop(ds, r, device))
        runs["train_local (deterministic)"].append(_ours(ds, r, True, device))
        runs["train_local (non-deterministic)"].append(_ours(ds, r, False, device))
        if device != "cpu":  # PoL records under full_fp32: no TF32, no cuDNN (same on CPU)
            runs.setdefault("train_local (deterministic, full_fp32 as PoL)", []).append(
                _ours(ds, r, True, device, pol=True)
            )
    base = statistics.median(runs["hand-written loop"])
    where = (
        f"CPU, {torch.get_num_threads()} thread(s), CPU time"
        if device == "cpu"
        else f"{torch.cuda.get_device_name()}, wall time"
    )
    print(
        f"\n### Local training, mnist_cnn, {len(ds)} samples, batch 32, SGD momentum, {where}, median of {repeats}\n"
    )
    print("| loop | samples/s | vs hand-written |")
    print("| --- | ---: | ---: |")
    for name, vals in runs.items():
        med = statistics.median(vals)
        print(f"| {name} | {med:,.0f} | {100 * (med / base - 1):+.1f} % |")


def bench_aggregation(sizes: list[int], n: int) -> None:
    print(f"\n### Aggregation of {n} updates (CPU seconds, one run each)\n")
    rules = ["fedavg", "median", "trimmed", "krum", "multikrum", "robust"]
    cols = [*rules, "robust + ScreenContext"]
    print("| params | float32 mean (baseline) | quantize all | " + " | ".join(cols) + " |")
    print("| ---: | ---: | ---: | " + " | ".join("---:" for _ in cols) + " |")
    for size in sizes:
        rng = np.random.default_rng(size)
        base = rng.normal(0, 0.01, size).astype(np.float32)
        floats = [(base + rng.normal(0, 0.01, size)).astype(np.float32) for _ in range(n)]
        t = time.process_time()
        np.mean(np.stack(floats), axis=0)
        t_float = time.process_time() - t
        t = time.process_time()
        qs = [quantize(f) for f in floats]
        t_quant = time.process_time() - t
        del floats
        ups = [Update.of(q, int(rng.integers(10, 200)), i) for i, q in enumerate(qs)]
        cells = []
        # the last 640 coordinates as the output layer (mnist_cnn's fc2.weight), batch 32
        shaped = ScreenContext((size - 640, size), 32)
        for rule, ctx in [*((r, None) for r in rules), ("robust", shaped)]:
            t = time.process_time()
            aggregate(rule, ups, None, ctx)
            cells.append(f"{time.process_time() - t:.2f}")
        print(f"| {size:,} | {t_float:.3f} | {t_quant:.2f} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--agg-sizes", default="47000,1000000")
    p.add_argument("--agg-updates", type=int, default=100)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda (training rows only)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs visible")
    if not args.skip_training:
        bench_training(_data(args.data_dir), args.repeats, args.device)
    bench_aggregation([int(s) for s in args.agg_sizes.split(",") if s], args.agg_updates)


if __name__ == "__main__":
    main()

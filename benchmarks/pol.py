"""Proof-of-learning cost and tolerance calibration.

    python benchmarks/pol.py [--data-dir DIR] [--threads 1] [--repeats 3] [--skip-calibration]

1. Recording overhead: ``record_training`` (checkpoint every k steps into a MemorySink)
   next to plain ``train_local`` on the same model, data and schedule, interleaved in one
   run; for the MNIST CNN (8,000 images, real MNIST when a directory is given or
   FEDLEDGER_MNIST_DIR is set, random images otherwise) and the digits MLP (1,797 images,
   the worst case: sub-millisecond steps). The data commitment (one SHA-256 per sample,
   computed once per data set and reusable across rounds) is reported on its own row.
2. Verification cost: ``verify`` under ``attest`` and ``replay`` (q = 2 largest + 2 seeded
   picks) and ``make_reveal``, as a fraction of the plain training time.
3. Calibration: relative replay distances of honest segments under perturbations that
   model other hardware (thread count, another fp32 conv kernel, 1-ulp weight noise,
   TF32-like gradient rounding), and of each forgery in ``fl.pol.forgeries``.

Times are CPU seconds of this process (``time.process_time``) with one torch thread: on
a shared machine wall-clock time mostly measures the neighbours.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl.aggregate import sq_norm  # noqa: E402
from fl.data import Dataset, load_digits, load_mnist, sample_hashes, split  # noqa: E402
from fl.models import build_model, flatten, from_safetensors  # noqa: E402
from fl.pol import (  # noqa: E402
    DEFAULT_TOLERANCE,
    MemorySink,
    PolVerdict,
    Recorder,
    SegmentDistance,
    Transcript,
    make_reveal,
    record_training,
    select_segments,
    verify,
)
from fl.pol.distance import (
    common_fixed,  # noqa: E402
    compare,  # noqa: E402
)
from fl.pol.forgeries import FORGERIES, HonestRun, honest_run  # noqa: E402
from fl.pol.precision import cuda_math, full_fp32  # noqa: E402
from fl.train import (  # noqa: E402
    TrainConfig,
    batch_schedule,
    export_optimizer_state,
    import_optimizer_state,
    make_optimizer,
    run_steps,
    train_local,
)

ROUND = hashlib.sha256(b"benchmark round").digest()


def _mnist(data_dir: str | None, n: int) -> Dataset:
    if data_dir:
        return split(load_mnist(data_dir), 0.2, seed=0)[0].subset(np.arange(n))
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    return Dataset("random", x, rng.integers(0, 10, n).astype(np.int64), 10)


def _cpu(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


# ---------------------------------------------------------------- 1 + 2: overhead and verification


def _checkpoint_ms(model_id: str, ds: Dataset, cfg: TrainConfig, n: int = 40) -> float:
    """CPU ms of one checkpoint (weights + optimizer state to safetensors, put, norm, batch hash)."""
    model = build_model(model_id, seed=0)
    res = train_local(model, ds.subset(np.arange(64)), cfg, "cpu")  # real optimizer state
    opt = make_optimizer(model, cfg)
    import_optimizer_state(model, opt, res.optimizer_state, cfg.optimizer)
    rec = Recorder(MemorySink(), 1, n + 1, res.state)
    batch = np.arange(cfg.batch_size, dtype=np.int64)
    t = time.process_time()
    for i in range(n):
        rec.on_step(i, batch, model, opt)
    return 1000 * (time.process_time() - t) / n


def bench_cost(
    name: str,
    model_id: str,
    ds: Dataset,
    cfg: TrainConfig,
    ks: list[int],
    verify_k: int,
    repeats: int,
) -> None:
    hashes = sample_hashes(ds)
    t_commit, _ = _cpu(lambda: sample_hashes(ds))
    plain: list[float] = []
    rec: dict[int, list[float]] = {k: [] for k in ks}
    stored: dict[int, int] = {}
    runs: dict[int, tuple[MemorySink, bytes, Transcript]] = {}
    warm = ds.subset(np.arange(min(64, len(ds))))
    train_local(build_model(model_id, seed=0), warm, cfg, "cpu")  # warm-up: imports, kernels
    record_training(
        build_model(model_id, seed=0), warm, cfg, round_id=ROUND, k=2, sink=MemorySink(),
        model_id=model_id, device="cpu",
    )  # fmt: skip
    variants: list[int | None] = [None, *ks]  # None: the plain baseline
    for r in range(repeats):
        # rotate the order each repeat, so drifting load and order effects hit all alike
        for k in variants[r % len(variants) :] + variants[: r % len(variants)]:
            model = build_model(model_id, seed=0)
            if k is None:
                t0 = time.process_time()
                train_local(model, ds, cfg, "cpu")
                plain.append(time.process_time() - t0)
                continue
            sink = MemorySink()
            t0 = time.process_time()
            _, cid, t = record_training(
                model, ds, cfg, round_id=ROUND, k=k, sink=sink, model_id=model_id,
                device="cpu", hashes=hashes,
            )  # fmt: skip
            rec[k].append(time.process_time() - t0)
            stored[k] = sink.total_bytes
            runs[k] = (sink, cid, t)
    base = statistics.median(plain)
    steps = len(batch_schedule(len(ds), cfg.epochs, cfg.batch_size, cfg.seed))
    ckpt = _checkpoint_ms(model_id, ds, cfg)
    step_ms = 1000 * base / steps
    print(
        f"\n### {name}: recording overhead ({len(ds):,} samples, {steps} steps of "
        f"{step_ms:.2f} ms, one checkpoint {ckpt:.2f} ms; median of {repeats})\n"
    )
    print(
        "| run | CPU s | samples/s | end-to-end vs baseline | checkpoint cost / training | stored |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| train_local (baseline) | {base:.2f} | {len(ds) * cfg.epochs / base:,.0f} | | | |")
    for k in ks:
        med = statistics.median(rec[k])
        share = ckpt * math.ceil(steps / k) / (1000 * base)
        print(
            f"| record_training k={k} | {med:.2f} | {len(ds) * cfg.epochs / med:,.0f} | "
            f"{100 * (med / base - 1):+.1f} % | {100 * share:.1f} % | {stored[k] / 2**20:.1f} MiB |"
        )
    print(
        f"| data commitment (once per data set) | {t_commit:.2f} | | | {100 * t_commit / base:.1f} % | |"
    )

    k = verify_k
    sink, cid, t = runs[k]
    seed = hashlib.sha256(b"block").digest()
    chosen = select_segments(t, seed)
    replayed = sum(t.segments[i].end - t.segments[i].start for i in chosen)
    t_rev, rcid = _cpu(lambda: make_reveal(t, ds, chosen, sink, hashes=hashes))
    assert isinstance(rcid, bytes)

    def check(policy: str) -> PolVerdict:
        return verify(
            cid, sink, seed=seed, policy=policy, expected_start_cid=t.start_cid,
            expected_round_id=ROUND, update_cid=t.update_cid, reveal_cid=rcid,
        )  # fmt: skip

    t_att, v_att = _cpu(lambda: check("attest"))
    t_rep, v_rep = _cpu(lambda: check("replay"))
    assert isinstance(v_att, PolVerdict) and isinstance(v_rep, PolVerdict)
    assert v_att.ok and v_rep.ok, (v_att, v_rep)
    nseg = len(t.segments)
    print(f"\n### {name}: verification at k={k} ({nseg} segments, replaying {len(chosen)})\n")
    print("| step | CPU s | of training | notes |")
    print("| --- | ---: | ---: | --- |")
    mib = len(sink.get(rcid)) / 2**20
    print(
        f"| make_reveal (trainer) | {t_rev:.2f} | {100 * t_rev / base:.1f} % | {mib:.1f} MiB revealed |"
    )
    print(
        f"| verify attest | {t_att:.2f} | {100 * t_att / base:.1f} % | all {nseg} checkpoints: shapes, norms, bounds |"
    )
    print(
        f"| verify replay | {t_rep:.2f} | {100 * t_rep / base:.1f} % | attest + proofs + "
        f"{replayed} of {steps} steps replayed |"
    )


# ---------------------------------------------------------------- 3: calibration


def _rel(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], p: dict[str, torch.Tensor]
) -> tuple[float, float]:
    """(|W' - W| / |W' - W_prev|, same with max norms) from exact integers, shown as floats."""
    x, y, z = common_fixed(flatten(a), flatten(b), flatten(p))
    l2 = math.sqrt(sq_norm(x - y) / sq_norm(x - z))
    linf = float(np.max(np.abs(x - y))) / float(np.max(np.abs(x - z)))
    return l2, linf


Snap = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]


def _snapshots(
    model_id: str, ds: Dataset, cfg: TrainConfig, k: int, device: str, threads: int = 1
) -> tuple[list[Snap], list[np.ndarray]]:
    """Train once on ``device`` and keep (weights, optimizer state, step) every k steps."""
    sched = batch_schedule(len(ds), cfg.epochs, cfg.batch_size, cfg.seed)
    model = build_model(model_id, seed=0)
    snaps: list[Snap] = [({n: v.clone() for n, v in model.state_dict().items()}, {}, 0)]

    def on_step(step: int, idx: object, m: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        if (step + 1) % k == 0:
            w = {n: v.detach().to("cpu", copy=True) for n, v in m.state_dict().items()}
            snaps.append((w, export_optimizer_state(m, opt), step + 1))

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    train_local(model, ds, cfg, device, schedule=sched, on_step=on_step)
    torch.set_num_threads(before)
    return snaps, sched


def calibrate_honest(model_id: str, ds: Dataset, cfg: TrainConfig, k: int, conv: bool) -> None:
    snaps, sched = _snapshots(model_id, ds, cfg, k, "cpu", threads=2)
    gen = torch.Generator().manual_seed(0)

    def noisy(g: torch.Tensor) -> torch.Tensor:
        return g * (1 + 2.0**-11 * (torch.rand(g.shape, generator=gen) * 2 - 1))

    def replay(i: int, variant: str) -> tuple[float, float]:
        (w0, o0, s0), (w1, _, s1) = snaps[i], snaps[i + 1]
        m = build_model(model_id, seed=0)
        if variant == "ulp":
            w0 = {
                n: v * (1 + 2.0**-23 * torch.randint(-1, 2, v.shape, generator=gen))
                for n, v in w0.items()
            }
        m.load_state_dict(w0)
        hooks = [p.register_hook(noisy) for p in m.parameters()] if variant == "tf32" else []
        with torch.backends.mkldnn.flags(enabled=variant != "kernel"):
            r = run_steps(m, o0, ds, sched[s0:s1], cfg, "cpu")
        for h in hooks:
            h.remove()
        return _rel(r.state, w1, snaps[i][0])

    print(
        f"\n### Honest replay distances, {model_id}, k={k}, {len(snaps) - 1} segments (max over segments)\n"
    )
    print("| honest variation | rel. L2 | rel. L-inf |")
    print("| --- | ---: | ---: |")
    print("| same device and build (the CPU replay) | 0 | 0 |")
    rows = [("trained with 2 threads, replayed with 1", "threads")]
    if conv:
        rows.append(("another fp32 conv kernel (oneDNN off)", "kernel"))
    rows += [
        ("1-ulp noise on the start weights", "ulp"),
        ("TF32-like gradient rounding (2^-11) every step", "tf32"),
    ]
    for label, variant in rows:
        vals = [replay(i, variant) for i in range(len(snaps) - 1)]
        print(f"| {label} | {max(v[0] for v in vals):.2e} | {max(v[1] for v in vals):.2e} |")


def calibrate_cross_device(model_id: str, ds: Dataset, cfg: TrainConfig, k: int) -> None:
    """Trained on one device type and CUDA math setting, replayed on another."""
    if not torch.cuda.is_available():
        print(f"\n(no CUDA device: cross-device replay distances for {model_id} not measured)")
        return
    settings = {  # name -> (device, tf32, cudnn); None: full_fp32 / the new precision API
        "CPU": ("cpu", False, True),
        "CUDA fp32 + cuDNN": ("cuda", False, True),
        "CUDA fp32 + cuDNN, fp32_precision=ieee": ("cuda", "ieee", True),
        "CUDA fp32, cuDNN off": ("cuda", False, False),
        "CUDA TF32 + cuDNN": ("cuda", True, True),
        "CUDA under full_fp32 (record_training, verify)": ("cuda", None, None),
    }

    def run(name: str, fn: Callable[[], object]) -> object:
        device, tf32, cudnn = settings[name]
        if tf32 is None:
            with full_fp32():
                return fn()
        if tf32 == "ieee":  # torch >= 2.9: the explicit per-backend precision
            conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul
            prev = (conv.fp32_precision, mm.fp32_precision)  # type: ignore[attr-defined]
            conv.fp32_precision = mm.fp32_precision = "ieee"  # type: ignore[attr-defined]
            try:
                return fn()
            finally:
                conv.fp32_precision, mm.fp32_precision = prev  # type: ignore[attr-defined]
        with cuda_math(bool(tf32), bool(cudnn)):
            return fn()

    recorded: dict[str, tuple[list[Snap], list[np.ndarray]]] = {}

    def distance(trained: str, replayed: str) -> tuple[float, float]:
        if trained not in recorded:
            dev = settings[trained][0]
            recorded[trained] = run(trained, lambda: _snapshots(model_id, ds, cfg, k, dev))  # type: ignore[assignment]
        snaps, sched = recorded[trained]
        vals = []
        for i in range(len(snaps) - 1):
            (w0, o0, s0), (w1, _, s1) = snaps[i], snaps[i + 1]
            m = build_model(model_id, seed=0)
            m.load_state_dict(w0)
            dev = settings[replayed][0]
            r = run(
                replayed,
                lambda m=m, o0=o0, s0=s0, s1=s1, dev=dev: run_steps(
                    m, o0, ds, sched[s0:s1], cfg, dev
                ),
            )
            vals.append(_rel(r.state, w1, w0))  # type: ignore[attr-defined]
        return max(v[0] for v in vals), max(v[1] for v in vals)

    pol = "CUDA under full_fp32 (record_training, verify)"
    pairs = [
        ("CUDA fp32 + cuDNN", "CUDA fp32 + cuDNN"),
        ("CUDA fp32 + cuDNN", "CPU"),
        ("CPU", "CUDA fp32 + cuDNN"),
        ("CUDA fp32 + cuDNN, fp32_precision=ieee", "CPU"),
        ("CUDA fp32, cuDNN off", "CPU"),
        (pol, "CPU"),
        ("CPU", pol),
        (pol, pol),
        ("CUDA TF32 + cuDNN", "CPU"),
    ]
    print(
        f"\n### Cross-device replay distances, {model_id}, k={k}, "
        f"{torch.cuda.get_device_name()} (max over segments)\n"
    )
    print("| trained on | replayed on | rel. L2 | rel. L-inf |")
    print("| --- | --- | ---: | ---: |")
    for trained, replayed in pairs:
        try:
            l2, linf = distance(trained, replayed)
        except (RuntimeError, AttributeError) as e:  # e.g. a torch without the new precision API
            print(f"| {trained} | {replayed} | error: {str(e).splitlines()[0][:80]} | |")
            continue
        print(f"| {trained} | {replayed} | {l2:.2e} | {linf:.2e} |")


def _forged_distances(run: HonestRun, t: Transcript) -> list[SegmentDistance]:
    """Replay every segment of a (forged) transcript on the committed data; the distances."""
    sched = batch_schedule(len(run.dataset), run.cfg.epochs, run.cfg.batch_size, run.cfg.seed)
    states: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = [
        (run.start_state, {})
    ] + [
        (from_safetensors(run.sink.get(s.model_cid)), from_safetensors(run.sink.get(s.optim_cid)))
        for s in t.segments
    ]
    out = []
    for i, seg in enumerate(t.segments):
        (w0, o0), (w1, o1) = states[i], states[i + 1]
        m = build_model(run.model_id, seed=0)
        m.load_state_dict(w0)
        r = run_steps(m, o0, run.dataset, sched[seg.start : seg.end], run.cfg, "cpu")
        out.append(compare(i, r.state, w1, w0, r.optimizer_state, o1, o0, 0))
    return out


def calibrate_forgeries(ds: Dataset) -> None:
    configs = {
        "SGD+momentum, clip": TrainConfig(lr=0.1, momentum=0.9, weight_decay=1e-4, clip_norm=2.0, epochs=2, batch_size=16, seed=3),
        "SGD": TrainConfig(lr=0.1, epochs=2, batch_size=16, seed=4),
        "Adam": TrainConfig(optimizer="adam", lr=0.01, epochs=2, batch_size=16, seed=5),
    }  # fmt: skip
    tol = DEFAULT_TOLERANCE
    print(
        f"\n### Forgeries (digits MLP, {len(ds)} samples, k=4, 8 segments): verdicts, and the replay "
        f"distances of the forged segments (honest ones replay to exactly 0). Tolerance: L2 "
        f"{tol.rel_l2_ppm / 1e4:g} %, L-inf {tol.rel_linf_ppm / 1e4:g} %, cos >= {tol.min_cos_ppm / 1e6:g}\n"
    )
    print(
        "| forgery | config | attest | replay (default picks) | forged segments | min rel. L2 | min rel. L-inf | max cos |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    seed = hashlib.sha256(b"calibration block").digest()
    for cname, cfg in configs.items():
        run = honest_run(MemorySink(), ds, cfg, k=4)
        for fname, forge in FORGERIES.items():
            t, cid = forge(run)
            rc = make_reveal(t, ds, select_segments(t, seed), run.sink)
            verdicts = [
                verify(
                    cid, run.sink, seed=seed, policy=policy, expected_start_cid=run.transcript.start_cid,
                    expected_round_id=run.round_id, update_cid=t.update_cid, reveal_cid=rc,
                ).code
                for policy in ("attest", "replay")
            ]  # fmt: skip
            forged = [d for d in _forged_distances(run, t) if d.l2_ppm or d.optim_ppm]
            cells = (
                f"{min(d.l2_ppm for d in forged) / 1e4:,.1f} % | "
                f"{min(d.linf_ppm for d in forged) / 1e4:,.1f} % | "
                f"{max(d.cos_ppm for d in forged) / 1e6:.3f}"
            )
            print(
                f"| {fname} | {cname} | {verdicts[0]} | {verdicts[1]} | {len(forged)} | {cells} |"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--skip-calibration", action="store_true")
    p.add_argument(
        "--cross-device-only",
        action="store_true",
        help="only the CUDA-trained, CPU-replayed distances (needs a CUDA device)",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU time; MNIST: {'real' if a.data_dir else 'random images'}"
    )
    sgd = TrainConfig(lr=0.05, momentum=0.9, clip_norm=5.0, epochs=1, batch_size=32, seed=1)
    digits_cfg = TrainConfig(lr=0.05, momentum=0.9, epochs=2, batch_size=32, seed=1)
    if a.cross_device_only:
        calibrate_cross_device("mnist_cnn", _mnist(a.data_dir, 2048), sgd, 32)
        calibrate_cross_device("mlp", load_digits(), digits_cfg, 32)
        return
    if not a.skip_cost:
        mnist = _mnist(a.data_dir, 8000)
        bench_cost("mnist_cnn", "mnist_cnn", mnist, sgd, [8, 32, 128], 32, a.repeats)
        client = dataclasses.replace(sgd, epochs=2)
        bench_cost(
            "mnist_cnn, one FL client (80 samples, 2 epochs)",
            "mnist_cnn",
            mnist.subset(np.arange(80)),
            client,
            [1, 2, 6],
            1,
            3 * a.repeats,
        )
        bench_cost(
            "mlp (digits, 8 epochs)",
            "mlp",
            load_digits(),
            dataclasses.replace(sgd, epochs=8),
            [8, 32, 128],
            32,
            a.repeats,
        )
    if not a.skip_calibration:
        calibrate_honest("mnist_cnn", _mnist(a.data_dir, 2048), sgd, 32, conv=True)
        calibrate_honest("mlp", load_digits(), digits_cfg, 32, conv=False)
        calibrate_cross_device("mnist_cnn", _mnist(a.data_dir, 2048), sgd, 32)
        calibrate_cross_device("mlp", load_digits(), digits_cfg, 32)
        calibrate_forgeries(load_digits().subset(np.arange(240)))


if __name__ == "__main__":
    main()

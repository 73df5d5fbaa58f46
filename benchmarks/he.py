"""Acceptance 4 (HE): CKKS cost per 1M parameters, and encrypted vs plaintext FedAvg on MNIST.

    FEDLEDGER_MNIST_DIR=../shared/data/mnist python benchmarks/he.py [--rounds 50] [--threads 1]

Part 1 (no data needed): for each parameter set and slot layout, encrypt one update of
1,000,000 values, add 10 encrypted updates with the public context, decrypt the sum with
the secret context; CPU seconds (median of 3, so neighbours on a shared machine do not
inflate them) and bytes per 1M parameters next to the plaintext baseline (float32 bytes,
quantize + fixed-point FedAvg of the same 10 updates) measured in the same run.

Part 1b: CKKS decryption error of sums of 1, 100 and the largest allowed number of
encryptions for every parameter set, against the stated bound.

Part 2 (MNIST): the FedAvg workload of benchmarks/fl_mnist.py (100 clients Dirichlet(0.5),
10 per round, mnist_cnn, 2 local epochs) once in plaintext and once under HE (exact layout:
the decrypted sum is rounded to the plaintext integers, so the runs are bit-identical).
Reports accuracy of both, the ciphertext size of one update, the HE operations' time per
round and the round-time ratio HE / plaintext, by wall time and by process CPU time.

Part 3 (``--parts dpratio``): the same comparison for DP-FedAvg (clip 0.3, z 0.8575 =
epsilon 8 after 50 rounds) in plaintext and under HE with the layout fitted to the noise (2 lanes here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl.aggregate import Update, aggregate, quantize  # noqa: E402
from fl.privacy import (  # noqa: E402
    LAYOUTS,
    PARAMS,
    Layout,
    SecretContext,
    ZeroPool,
    add,
    decrypt,
    encrypt,
)
from fl.privacy.packing import from_grid, to_grid  # noqa: E402
from fl.privacy.pipeline import PrivacyConfig  # noqa: E402
from fl.simulate import RoundMetrics, SimConfig, SimResult, run_simulation  # noqa: E402

MILLION = 1_000_000
SUMMANDS = 10


def _cpu(fn: Any, repeats: int) -> tuple[Any, float]:
    """Run ``fn`` ``repeats`` times; its result and the median process CPU seconds of one run."""
    times, out = [], None
    for _ in range(repeats):
        c = time.process_time()
        out = fn()
        times.append(time.process_time() - c)
    return out, float(np.median(times))


def micro(values: int, repeats: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    floats = [rng.normal(0, 0.01, values).astype(np.float32) for _ in range(SUMMANDS)]

    qs, t_quant = _cpu(lambda: [quantize(f) for f in floats], repeats)
    _, t_avg = _cpu(lambda: aggregate("fedavg", [Update.of(q, 1) for q in qs]), repeats)
    rows.append(
        {"config": "plaintext (float32 -> 2^-24 ints, fixed-point FedAvg)",
         "encrypt_s": t_quant / SUMMANDS, "add_s": t_avg / SUMMANDS, "decrypt_s": 0.0,
         "bytes": 4 * values, "security": "-"}
    )  # fmt: skip

    configs: list[tuple[str, str, Layout]] = [
        ("n8192", "exact", LAYOUTS["exact"]),
        ("n8192", "packed2", LAYOUTS["packed2"]),
        ("n8192", "packed3", LAYOUTS["packed3"]),
        ("n4096", "exact", LAYOUTS["exact"]),
        ("n16384", "exact", LAYOUTS["exact"]),
    ]
    for pname, lname, layout in configs:
        sk = SecretContext.generate(PARAMS[pname])
        pub = sk.public()
        bound = layout.value_bound << (24 - layout.frac_bits)
        q = np.clip(qs[0], -bound, bound)
        blob, t_enc = _cpu(lambda: encrypt(q, pub, layout, 1), repeats)  # noqa: B023
        total, t_add = _cpu(lambda: add([blob] * SUMMANDS, pub), repeats)  # noqa: B023
        dec, t_dec = _cpu(lambda: decrypt(total, sk), repeats)  # noqa: B023
        assert np.array_equal(dec.values, SUMMANDS * from_grid(to_grid(q, layout), layout))
        rows.append(
            {"config": f"CKKS {pname} ({PARAMS[pname].security_bits}-bit), {lname}: {layout.describe()}",
             "encrypt_s": t_enc, "add_s": t_add / SUMMANDS, "decrypt_s": t_dec, "bytes": len(blob),
             "security": PARAMS[pname].security_bits, "public_context_bytes": len(pub.to_bytes()),
             "max_residual": dec.max_residual}
        )  # fmt: skip
        print(f"  measured {rows[-1]['config']}", flush=True)
        if pname == "n8192" and lname in ("exact", "packed2"):
            # offline/online: the encryptions of zero made beforehand (not timed here; they
            # cost what `encrypt` above costs), the online part is encoding + one addition
            pool = ZeroPool(pub, int(q.size), layout)
            pool.fill(repeats)
            t0 = time.process_time()
            pool.fill(1)
            t_off = time.process_time() - t0
            blob2, t_on = _cpu(lambda: encrypt(q, pub, layout, 1, zeros=pool), repeats)  # noqa: B023
            assert np.array_equal(decrypt(add([blob2], pub), sk).values,
                                  from_grid(to_grid(q, layout), layout))
            rows.append(
                {"config": f"CKKS {pname}, {lname}, online (encryptions of zero made offline: "
                           f"{t_off * MILLION / values:.2f} s per 1M)",
                 "encrypt_s": t_on, "add_s": t_add / SUMMANDS, "decrypt_s": t_dec,
                 "bytes": len(blob2), "security": PARAMS[pname].security_bits,
                 "offline_s": t_off}
            )  # fmt: skip
            print(f"  measured {rows[-1]['config']}", flush=True)
    scale = MILLION / values
    print(
        f"\n### CKKS cost per 1M parameters ({values:,} values measured, {SUMMANDS} summands; "
        f"CPU seconds, median of {repeats})\n"
    )
    print(
        "| configuration | encrypt (s) | add, per summand (s) | decrypt sum (s) | bytes per update | vs float32 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['config']} | {r['encrypt_s'] * scale:.2f} | {r['add_s'] * scale:.3f} | "
            f"{r['decrypt_s'] * scale:.2f} | {r['bytes'] * scale / 1e6:.1f} MB | "
            f"{r['bytes'] / (4 * values):.1f}x |"
        )
    return rows


def noise() -> list[dict[str, Any]]:
    """CKKS decryption error of sums of 1, 100 and the largest allowed number of encryptions."""
    rows = []
    print(
        "\n### CKKS noise in integer units (one ciphertext per summand, values at the layout's bound)\n"
    )
    print(
        "| parameters | summands | max error seen | stated bound (10 sigma, worst slot) | decrypted sum exact |"
    )
    print("| --- | ---: | ---: | ---: | --- |")
    for name, params in PARAMS.items():
        sk = SecretContext.generate(params)
        pub = sk.public()
        layout = Layout(24, 1, 36, params.max_summands)
        rng = np.random.default_rng(1)
        b = layout.value_bound
        vals = [
            rng.integers(-b, b + 1, params.capacity, dtype=np.int64)
            for _ in range(params.max_summands)
        ]
        blobs = [encrypt(v, pub, layout) for v in vals]
        for n in sorted({1, 100, params.max_summands}):
            dec = decrypt(add(blobs[:n], pub), sk)
            ok = bool(np.array_equal(dec.values, np.sum(vals[:n], axis=0)))
            rows.append({"params": name, "summands": n, "max_residual": dec.max_residual,
                         "bound": params.error_bound(n), "exact": ok})  # fmt: skip
            print(
                f"| {name} | {n} | {dec.max_residual:.4f} | {params.error_bound(n):.4f} | {ok} |",
                flush=True,
            )
    return rows


def compare(
    data_dir: str, rounds: int, device: str, runs: list[tuple[str, PrivacyConfig]], title: str
) -> dict[str, Any]:
    """Run a plaintext and an encrypted configuration of the MNIST workload; compare them."""
    base: dict[str, Any] = {
        "dataset": "mnist",
        "data_dir": data_dir,
        "rounds": rounds,
        "device": device,
    }
    out: dict[str, Any] = {}
    for name, privacy in runs:
        cpu: list[float] = []
        last = [time.process_time()]

        def report(
            m: RoundMetrics, name: str = name, cpu: list[float] = cpu, last: list[float] = last
        ) -> None:
            now = time.process_time()  # per-round CPU: neighbours on the machine do not inflate it
            # The RDP accountant's step (reporting, not part of a round) is left out, and so is
            # the trainers' offline precomputation (made before the round, reported apart).
            cpu.append(now - last[0] - m.privacy.get("accountant_seconds", 0.0)
                       - m.privacy.get("precompute_cpu_seconds", 0.0))
            last[0] = now
            print(
                f"{name} round {m.round}: acc {m.accuracy:.4f} "
                f"({m.seconds:.2f} s wall, {cpu[-1]:.2f} s CPU)",
                flush=True,
            )

        res = run_simulation(SimConfig(privacy=privacy, **base), on_round=report)
        out[name] = {"result": res, "cpu": cpu}
    (pn, _), (hn, _) = runs
    plain: SimResult = out[pn]["result"]
    enc: SimResult = out[hn]["result"]
    # Round 1 also pays for loading data and generating keys: ratios use rounds 2..R.
    steady = slice(1, None) if rounds > 1 else slice(None)
    ops_wall = [
        m.privacy["encrypt_seconds"] + m.privacy["add_seconds"] + m.privacy["decrypt_seconds"]
        for m in enc.rounds
    ][steady]
    ops_cpu = [m.privacy["he_cpu_seconds"] for m in enc.rounds][steady]
    same = [a.accuracy for a in plain.rounds] == [b.accuracy for b in enc.rounds]
    exact = all(m.privacy["he_equals_plaintext"] for m in enc.rounds)
    wall_p = sum(m.seconds for m in plain.rounds[steady])
    wall_h = sum(m.seconds for m in enc.rounds[steady])
    cpu_p, cpu_h = sum(out[pn]["cpu"][steady]), sum(out[hn]["cpu"][steady])
    n = len(enc.rounds[steady])
    r0 = enc.rounds[0].privacy
    print(f"\n### {title}, {rounds} rounds, 10 of 100 clients\n")
    print("| run | final accuracy | best | per round: wall (s) | per round: CPU (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _ in runs:
        r = out[name]["result"]
        print(
            f"| {name} | {r.final_accuracy:.4f} | {max(m.accuracy for m in r.rounds):.4f} | "
            f"{sum(m.seconds for m in r.rounds[steady]) / n:.2f} | "
            f"{sum(out[name]['cpu'][steady]) / n:.2f} |"
        )
    print(
        f"\nper-round accuracies identical: {same}; decrypted FedAvg == plaintext FedAvg of the same "
        f"submissions in every round: {exact}; final accuracy difference "
        f"{abs(plain.final_accuracy - enc.final_accuracy) * 100:.2f} points"
    )
    print(
        f"one encrypted update: {r0['ciphertext_bytes']:,} bytes; HE operations per round "
        f"(10 encryptions + add + decrypt): {np.mean(ops_wall):.3f} s wall, {np.mean(ops_cpu):.3f} s CPU "
        f"(encrypt {np.mean([m.privacy['encrypt_seconds'] for m in enc.rounds[steady]]):.3f}, "
        f"add {np.mean([m.privacy['add_seconds'] for m in enc.rounds[steady]]):.3f}, "
        f"decrypt {np.mean([m.privacy['decrypt_seconds'] for m in enc.rounds[steady]]):.3f} s wall)"
    )
    pre = [m.privacy.get("precompute_cpu_seconds", 0.0) for m in enc.rounds][steady]
    print(
        f"offline, before each round (the trainers' encryptions of zero, made while they wait; "
        f"not in the round times above): {np.mean(pre):.3f} s CPU per round"
    )
    # Deployment: trainers encrypt in parallel, so a round's critical path holds one trainer's
    # training and encryption, then the validators' add and the key holder's decryption.
    clients = 10
    train_one = sum(m.train_seconds for m in plain.rounds[steady]) / n / clients
    enc_one = float(np.mean([m.privacy["encrypt_seconds"] for m in enc.rounds[steady]])) / clients
    agg = float(
        np.mean(
            [m.privacy["add_seconds"] + m.privacy["decrypt_seconds"] for m in enc.rounds[steady]]
        )
    )
    other = (wall_p - sum(m.train_seconds for m in plain.rounds[steady])) / n  # evaluation, FedAvg
    ratios = {
        "cpu": cpu_h / cpu_p,
        "wall": wall_h / wall_p,
        "within_cpu": cpu_h / (cpu_h - sum(ops_cpu)),
        "parallel_trainers": (train_one + enc_one + agg + other) / (train_one + other),
    }
    print(
        f"round-time ratio {hn} / {pn} (goal <= 1.15): CPU {ratios['cpu']:.3f}, wall {ratios['wall']:.3f} "
        f"(separate runs, rounds 2..{rounds}); CPU within the encrypted run {ratios['within_cpu']:.3f}; "
        f"with the 10 trainers encrypting in parallel (deployment, derived) {ratios['parallel_trainers']:.3f}"
    )
    return {
        pn: plain.to_plain(), hn: enc.to_plain(), "cpu": {k: v["cpu"] for k, v in out.items()},
        "ratios": ratios, "offline_cpu_per_round": float(np.mean(pre)) if pre else 0.0,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--values", type=int, default=MILLION, help="update size for part 1")
    p.add_argument("--dp-z", type=float, default=0.8575, help="dpratio: noise multiplier")
    p.add_argument("--repeats", type=int, default=3, help="part 1: median of this many runs")
    p.add_argument("--parts", default="micro,noise,mnist")
    p.add_argument("--json", dest="json_out", help="write the figures to this file")
    p.add_argument("--no-precompute", action="store_true",
                   help="mnist/dpratio: trainers encrypt from scratch (no offline encryptions of zero)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {}
    if "micro" in args.parts:
        report["micro"] = micro(args.values, args.repeats)
    if "noise" in args.parts:
        report["noise"] = noise()
    if "mnist" in args.parts:
        if not args.data_dir:
            sys.exit("set FEDLEDGER_MNIST_DIR or pass --data-dir (or --parts micro)")
        report["mnist"] = compare(
            args.data_dir, args.rounds, args.device,
            [("plaintext", PrivacyConfig()),
             ("HE", PrivacyConfig(mode="he", he_precompute=not args.no_precompute))],
            "MNIST FedAvg, plaintext vs CKKS (n8192, exact layout)",
        )  # fmt: skip
    if "dpratio" in args.parts:
        if not args.data_dir:
            sys.exit("set FEDLEDGER_MNIST_DIR or pass --data-dir")
        dp = {"clip": 0.3, "noise_multiplier": args.dp_z}
        report["dpratio"] = compare(
            args.data_dir, args.rounds, args.device,
            [("DP", PrivacyConfig(mode="dp", **dp)),
             ("DP+HE", PrivacyConfig(mode="dp+he", he_precompute=not args.no_precompute, **dp))],
            f"MNIST DP-FedAvg (clip 0.3, z {args.dp_z}), plaintext vs CKKS (n8192, layout fitted to the noise)",
        )  # fmt: skip
    print(f"\n{torch.get_num_threads()} torch thread(s), device {args.device}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()

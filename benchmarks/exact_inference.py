"""Cost of the screen's exact integer forward pass against torch float32 inference (ADR 0404).

    python benchmarks/exact_inference.py [--samples 256] [--repeats 5] [--data-dir ../shared/data/mnist]

One thread for both (torch.set_num_threads(1); set OPENBLAS_NUM_THREADS=1 for numpy). Per
registry model: milliseconds per forward pass plus cross-entropy over ``--samples`` inputs
(real MNIST images for the MNIST CNN when ``--data-dir`` is given, uniform noise otherwise;
the cost does not depend on the values), the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data-dir", default=os.environ.get("FEDLEDGER_MNIST_DIR"))
    args = p.parse_args()

    import numpy as np
    import torch

    from fl.aggregate import quantize
    from fl.models import build_model, flatten, input_shape
    from fl.models.exact import ExactModel, cross_entropy_q, quantize_inputs

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{args.samples} samples, best of {args.repeats}, one thread\n")
    print("| model | parameters | exact (ms) | torch float32 (ms) | ratio | max logit difference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model_id in ("mlp", "mnist_cnn", "cifar_cnn"):
        shape = input_shape(model_id)
        x = rng.random((args.samples, *shape), dtype=np.float32)
        if model_id == "mnist_cnn" and args.data_dir:
            from fl.data import load_mnist

            x = load_mnist(args.data_dir).x[: args.samples]
        y = np.zeros(len(x), dtype=np.int64)
        net = build_model(model_id, {}, seed=1)
        q = quantize(flatten(net.state_dict()))
        exact, xq = ExactModel(model_id), quantize_inputs(x)
        logits = exact.logits(q, xq)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            cross_entropy_q(exact.logits(q, xq), y)
            times.append(time.perf_counter() - t)
        xt, ftimes = torch.from_numpy(x), []
        with torch.no_grad():
            ref = net(xt).double().numpy()
            for _ in range(args.repeats):
                t = time.perf_counter()
                torch.nn.functional.cross_entropy(net(xt), torch.from_numpy(y))
                ftimes.append(time.perf_counter() - t)
        diff = float(np.abs(logits / (1 << 28) - ref).max())
        print(f"| {model_id} | {exact.size:,} | {1000 * min(times):.1f} | {1000 * min(ftimes):.1f} "
              f"| {min(times) / min(ftimes):.1f} | {diff:.1e} |")


if __name__ == "__main__":
    main()

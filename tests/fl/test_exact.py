"""Exact integer inference: agreement with torch, order-independence, determinism across processes."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fl.aggregate import quantize
from fl.models import ModelFormatError, build_model, flatten
from fl.models import exact as ex
from fl.models.exact import (
    ExactModel,
    ValidationLoss,
    cross_entropy_q,
    exp_neg_q,
    ln_q,
    plan_of,
    quantize_inputs,
)

ONE = 1 << 28


def test_ln2_constant_and_series_accuracy() -> None:
    # Prepare: a grid over the ranges the cross-entropy uses
    z = -np.arange(0, 45 * ONE, ONE // 997, dtype=np.int64)
    s = np.arange(ONE, 16 * ONE, (1 << 19) + 3, dtype=np.int64)
    # Execute / Assert: errors far below anything a threshold could resolve
    assert ex.LN2_Q == round(math.log(2) * ONE)
    assert np.abs(exp_neg_q(z) / ONE - np.exp(z / ONE)).max() < 1e-8
    assert np.abs(ln_q(s, 4) / ONE - np.log(s / ONE)).max() < 1e-7
    assert exp_neg_q(np.array([0], dtype=np.int64))[0] == ONE
    assert ln_q(np.array([ONE], dtype=np.int64))[0] == 0


def _inputs(model_id: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    shape = {"mlp": (64,), "mnist_cnn": (1, 28, 28), "cifar_cnn": (3, 32, 32)}[model_id]
    return rng.random((n, *shape), dtype=np.float32)


@pytest.mark.parametrize("model_id", ["mlp", "mnist_cnn", "cifar_cnn"])
def test_logits_and_loss_match_torch(model_id: str) -> None:
    # Prepare
    net = build_model(model_id, {}, seed=1)
    x = _inputs(model_id, 16)
    y = np.arange(16, dtype=np.int64) % 10
    q = quantize(flatten(net.state_dict()))
    # Execute
    logits = ExactModel(model_id).logits(q, quantize_inputs(x))
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).double()
    ce = cross_entropy_q(logits, y) / ONE / 16
    ref_ce = float(torch.nn.functional.cross_entropy(ref, torch.from_numpy(y)))
    # Assert: fixed point at 2^-14..2^-16 stays within 1e-2 of float32 inference
    assert logits.dtype == np.int64 and logits.shape == (16, 10)
    assert np.abs(logits / ONE - ref.numpy()).max() < 1e-2
    assert abs(ce - ref_ce) < 1e-3


def test_summation_order_and_batching_do_not_change_a_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    net = build_model("mnist_cnn", {}, seed=2)
    q = quantize(flatten(net.state_dict()))
    xq = quantize_inputs(_inputs("mnist_cnn", 12))
    model = ExactModel("mnist_cnn")
    whole = model.logits(q, xq)
    # Execute: other chunkings of every dot product, and the samples one at a time
    monkeypatch.setattr(ex, "CHUNK", 7)
    chunked = model.logits(q, xq)
    single = np.concatenate([model.logits(q, xq[i : i + 1]) for i in range(12)])
    # Assert
    assert np.array_equal(whole, chunked)
    assert np.array_equal(whole, single)


def test_saturation_is_deterministic_not_an_overflow() -> None:
    model = ExactModel("mlp")
    q = np.full(model.size, 1 << 40, dtype=np.int64)  # every weight 65,536: far past |w| < 32
    logits = model.logits(q, quantize_inputs(np.ones((2, 64), dtype=np.float32)))
    assert np.array_equal(logits, model.logits(q, quantize_inputs(np.ones((2, 64), np.float32))))
    assert cross_entropy_q(logits, np.array([0, 1])) >= 0


_CHILD = """
import hashlib, sys, numpy as np
from fl.aggregate import quantize
from fl.models import build_model, flatten
from fl.models.exact import ExactModel, ValidationLoss
net = build_model("mnist_cnn", {}, seed=4)
q = quantize(flatten(net.state_dict()))
rng = np.random.default_rng(5)
x = rng.random((40, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, 40)
loss = ValidationLoss(ExactModel("mnist_cnn"), q, x, y, batch=int(sys.argv[1]))
delta = (rng.normal(0, 0.01, q.size) * (1 << 24)).astype(np.int64)
d = loss.label_directions()
print(loss(delta), loss(np.zeros_like(delta)), hashlib.sha256(d.matrix.tobytes()).hexdigest(),
      hashlib.sha256(d.index.tobytes()).hexdigest(), d.present)
"""


def test_validation_loss_and_label_directions_are_identical_across_processes() -> None:
    # Execute: two processes, with different BLAS thread counts and batch sizes
    outs = []
    for threads, batch in (("1", "40"), ("2", "7")):
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        run = subprocess.run([sys.executable, "-c", _CHILD, batch], capture_output=True, text=True,
                             env={**__import__("os").environ, **env}, timeout=120, check=True)  # fmt: skip
        outs.append(run.stdout.split())
    # Assert
    assert outs[0] == outs[1]
    assert len(outs[0]) >= 3 and outs[0][0] != outs[0][1]


def test_label_directions_are_the_last_two_layers_logit_gradients_summed_per_class() -> None:
    # Prepare: the digits MLP (64 -> 64 -> 10: hidden net.1, output net.3), a set without
    # classes 2 and 4-9
    model = ExactModel("mlp")
    net = build_model("mlp", {}, seed=6)
    q = quantize(flatten(net.state_dict()))
    rng = np.random.default_rng(7)
    x = rng.random((30, 64), dtype=np.float32)
    y = np.array([0, 1, 3] * 10, dtype=np.int64)
    # Execute
    d = ValidationLoss(model, q, x, y, batch=7).label_directions()
    # Assert: one row per (present class, logit), over net.1.weight then net.3.weight, equal
    # to torch's gradient of the logit summed over the class (in 2^-30 units, to quantization)
    assert d is not None and d.present == [0, 1, 3] and d.rows == 10
    assert d.matrix.shape == (30, 64 * 64 + 10 * 64) and d.matrix.dtype == np.int64
    w1, w2 = net.net[1].weight, net.net[3].weight
    assert d.index[0] == model.offsets["net.1.weight"]
    assert d.index[-1] == model.offsets["net.3.weight"] + 10 * 64 - 1
    for ci, c in enumerate(d.present):
        for k in (0, 3, 9):
            logit = net(torch.tensor(x[y == c]))[:, k].sum()
            g1, g2 = torch.autograd.grad(logit, [w1, w2])
            want = torch.cat([g1.reshape(-1), g2.reshape(-1)]).double().numpy()
            got = d.matrix[ci * 10 + k] / 2.0**30
            assert np.abs(got - want).max() < 1e-3 * np.abs(want).max() + 1e-6
    # the hidden layer's inputs and outputs agree with the forward pass
    a, h = model.dense_inputs(q, quantize_inputs(x))
    assert np.array_equal(h, model.features(q, quantize_inputs(x))) and a.shape == (30, 64)


def test_label_directions_without_a_hidden_layer_are_the_output_layers() -> None:
    # Prepare: a linear model (no hidden layer): its output layer reads the inputs
    model = ExactModel("mlp", {"hidden": []})
    q = quantize(flatten(build_model("mlp", {"hidden": []}, seed=1).state_dict()))
    rng = np.random.default_rng(8)
    x = rng.random((12, 64), dtype=np.float32)
    y = np.array([2, 5] * 6, dtype=np.int64)
    # Execute
    d = ValidationLoss(model, q, x, y).label_directions()
    # Assert: row (c, k) holds the class's summed inputs in row k of the output layer
    assert d is not None and d.present == [2, 5] and d.matrix.shape == (20, 640)
    x_q = quantize_inputs(x)
    block = d.matrix[1 * 10 + 7].reshape(10, 64)
    assert np.array_equal(block[7], x_q[y == 5].sum(0) << ex.FW) and not block[:7].any()
    assert model.last_two_linear() is None


def test_validation_loss_rejects_bad_shapes_and_unknown_models() -> None:
    model = ExactModel("mlp")
    q = np.zeros(model.size, dtype=np.int64)
    with pytest.raises(ModelFormatError, match="global model"):
        ValidationLoss(model, q[:-1], np.zeros((1, 64), np.float32), np.zeros(1, np.int64))
    with pytest.raises(ModelFormatError, match="validation set"):
        ValidationLoss(model, q, np.zeros((0, 64), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ModelFormatError, match="int64 weights"):
        model.logits(q[:-1], quantize_inputs(np.zeros((1, 64), np.float32)))
    with pytest.raises(ModelFormatError, match="no exact inference plan"):
        plan_of(torch.nn.Sequential(torch.nn.Linear(2, 2)))

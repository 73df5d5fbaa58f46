"""Exact integer inference: a registry model's logits and cross-entropy from fixed-point weights.

The robustness screen's validation check (ADR 0404) decides a consensus verdict from a
validation loss, so the loss must be the same integer on every validator: float
inference is not (summation order, SIMD width, cuDNN algorithms and libm's ``exp`` all
vary between machines). Here every step is integer arithmetic:

* weights are the aggregation's fixed-point vector (2^-24 units) floored to ``FW`` = 16
  fractional bits, inputs rounded to ``FA`` = 14, activations floored back to ``FA`` after
  each layer; weights and activations saturate at +-(2^21 - 1) (|w| < 32, |a| < 128; a
  trained registry model stays far inside, and saturation is itself deterministic);
* a dot product runs as float64 matrix products over chunks of at most ``CHUNK`` = 1024
  terms: each product is below 2^42 and any partial sum of 1024 of them below 2^52, so
  every intermediate value is an integer that float64 holds exactly and the result is the
  same for any summation order, blocking or FMA use of the BLAS. The chunk results add in
  int64;
* ``exp`` and ``ln`` of the cross-entropy are fixed-point series in int64 (Q28): range
  reduction by ln 2, Horner for exp(-r), 2 atanh((m-1)/(m+1)) for ln m, all with floor
  division, error below 1e-7 per value.

The plan of operations comes from the registry's architectures (:func:`plan_of`); a
model class without one raises :class:`fl.models.weights.ModelFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from torch import nn

from fl.models.layers import Conv2d
from fl.models.nets import MLP, CifarCNN, MnistCNN
from fl.models.registry import build_model
from fl.models.weights import ModelFormatError, parameter_order

__all__ = ["ExactModel", "LabelDirections", "ValidationLoss", "cross_entropy_q", "exp_neg_q", "ln_q", "quantize_inputs"]

IntArray = npt.NDArray[np.int64]

SCALE_BITS = 24  # the aggregation's fixed point (fl.aggregate.fixed)
FW = 16
FA = 14
SAT = (1 << 21) - 1
CHUNK = 1024
Q = 28
ONE = 1 << Q
LN2_Q = 186065279  # round(ln 2 * 2^28)
_EXP_TERMS = 12  # r < ln 2: r^12 / 12! < 3e-11
_ATANH_TERMS = 9  # t <= 1/3: t^19 / 19 < 5e-11

Op = tuple[str, str, int]  # (kind, parameter prefix, padding)


def plan_of(net: nn.Module) -> list[Op]:
    """The forward pass of a registry model as a list of integer operations."""
    if isinstance(net, MnistCNN):
        return [("conv", "conv1.", 0), ("relu", "", 0), ("pool", "", 0),
                ("conv", "conv2.", 0), ("relu", "", 0), ("pool", "", 0),
                ("flatten", "", 0), ("linear", "fc1.", 0), ("relu", "", 0),
                ("linear", "fc2.", 0)]  # fmt: skip
    if not isinstance(net, (MLP, CifarCNN)):
        raise ModelFormatError(f"no exact inference plan for {type(net).__name__}")
    ops: list[Op] = []
    for name, m in net.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, Conv2d):
            pad = m.padding
            if not isinstance(pad, tuple) or pad[0] != pad[1] or m.stride != (1, 1):
                raise ModelFormatError(f"{name}: unsupported convolution geometry")
            ops.append(("conv", prefix, pad[0]))
        elif isinstance(m, nn.Linear):
            ops.append(("linear", prefix, 0))
        elif isinstance(m, nn.ReLU):
            ops.append(("relu", "", 0))
        elif isinstance(m, nn.MaxPool2d):
            if m.kernel_size not in (2, (2, 2)) or m.stride not in (2, (2, 2)):
                raise ModelFormatError(f"{name}: only 2x2 max-pooling is supported")
            ops.append(("pool", "", 0))
        elif isinstance(m, nn.Flatten):
            ops.append(("flatten", "", 0))
    return ops


def quantize_inputs(x: npt.NDArray[np.float32]) -> IntArray:
    """Features to FA fractional bits (round half to even; x * 2^14 is exact in float64)."""
    q = np.rint(np.asarray(x, dtype=np.float64) * (1 << FA))
    return np.clip(q, -SAT, SAT).astype(np.int64)


FloatArray = npt.NDArray[np.float64]


def _affine(a: FloatArray, w: FloatArray, layer: _Layer, shift: int, low: float | None,
            high: float | None) -> FloatArray:
    """floor((a @ w + bias) / 2^shift), clipped to [low, high], exactly (module docstring).

    Activations travel as float64 that hold integers, and up to CHUNK terms the sum plus
    the bias (below 2^52 + 2^46) is still exact, so the floor of a power-of-two scaling is
    exact too: converting to int64 for every layer cost more than the products."""
    k = a.shape[1]
    if k <= CHUNK:
        out = a @ w
        out += layer.bias_f
        out *= 2.0**-shift
        np.floor(out, out=out)
    else:
        acc = np.zeros((a.shape[0], w.shape[1]), dtype=np.int64) + layer.bias
        for s in range(0, k, CHUNK):
            acc += (a[:, s : s + CHUNK] @ w[s : s + CHUNK]).astype(np.int64)
        out = (acc >> shift).astype(np.float64)
    if low is not None or high is not None:
        np.clip(out, low, high, out=out)
    return out


@dataclass(frozen=True)
class _Layer:
    weight: FloatArray  # FW bits, integer-valued; linear (out, in), conv (out, in, kh, kw)
    bias: IntArray  # FW + FA bits
    bias_f: FloatArray  # the same, as float64 (|bias| <= 2^46: exact)


class ExactModel:
    """A registry model's forward pass over fixed-point weight vectors (2^-24 units)."""

    def __init__(self, model_id: str, config: dict[str, object] | None = None) -> None:
        net = build_model(model_id, dict(config or {}), seed=0)
        self.plan = plan_of(net)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, shape in parameter_order(net.state_dict()):
            self.offsets[name], self.shapes[name] = offset, shape
            offset += int(np.prod(shape, dtype=np.int64))
        self.size = offset

    def _param(self, flat_q: IntArray, name: str) -> IntArray:
        if name not in self.offsets:
            raise ModelFormatError(f"parameter {name} is missing from the model")
        o = self.offsets[name]
        n = int(np.prod(self.shapes[name], dtype=np.int64))
        return flat_q[o : o + n].reshape(self.shapes[name])

    def _layer(self, flat_q: IntArray, prefix: str) -> _Layer:
        w = np.clip(self._param(flat_q, prefix + "weight") >> (SCALE_BITS - FW), -SAT, SAT)
        w = w.astype(np.float64)
        # Bias at FW + FA = 30 bits, from 24: a left shift, exact.
        b = self._param(flat_q, prefix + "bias") << (FW + FA - SCALE_BITS)
        return _Layer(w, b, b.astype(np.float64))

    def logits(self, flat_q: IntArray, x_q: IntArray) -> IntArray:
        """Logits in Q28 for inputs from :func:`quantize_inputs`."""
        return self._forward(flat_q, x_q, features=False)

    def features(self, flat_q: IntArray, x_q: IntArray) -> IntArray:
        """What the output layer reads (the last hidden activations, FA fractional bits)."""
        return self._forward(flat_q, x_q, features=True)

    def last_two_linear(self) -> tuple[int, str, str] | None:
        """(plan index, prefix, prefix) of the last two layers when the plan ends with
        linear, ReLU, linear (every registry model with a hidden dense layer); else None."""
        tail = self.plan[-3:]
        if len(tail) == 3 and [op[0] for op in tail] == ["linear", "relu", "linear"]:
            return len(self.plan) - 3, tail[0][1], tail[2][1]
        return None

    def dense_inputs(self, flat_q: IntArray, x_q: IntArray) -> tuple[IntArray, IntArray]:
        """The inputs of the last two linear layers (FA fractional bits): what the hidden
        dense layer reads and what the output layer reads (see :meth:`last_two_linear`)."""
        pair = self.last_two_linear()
        if pair is None:
            raise ModelFormatError("the model does not end with linear, ReLU, linear")
        a = self._forward(flat_q, x_q, features=True, stop=pair[0])
        layer = self._layer(flat_q, pair[1])
        h = self._apply("linear", a.astype(np.float64), layer, 0, FW, 0, SAT)
        return a, h.astype(np.int64)

    def _forward(self, flat_q: IntArray, x_q: IntArray, features: bool,
                 stop: int | None = None) -> IntArray:
        if flat_q.dtype != np.int64 or flat_q.shape != (self.size,):
            raise ModelFormatError(f"expected {self.size} int64 weights, got {flat_q.shape}")
        a: FloatArray = np.clip(x_q, -SAT, SAT).astype(np.float64)
        last = max(i for i, op in enumerate(self.plan) if op[0] in ("conv", "linear"))
        if stop is not None:
            last = stop  # the input of the layer at ``stop`` (features=True)
        fused = False  # the layer before a ReLU saturates at 0 itself
        for i, (kind, prefix, pad) in enumerate(self.plan):
            if kind == "relu":
                if not fused:
                    a = np.maximum(a, 0)
            elif kind == "pool":
                n, c, h, w = a.shape
                a = a[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
                a = a.max(axis=(3, 5))
            elif kind == "flatten":
                a = a.reshape(a.shape[0], -1)
            else:
                layer = self._layer(flat_q, prefix)
                if i == last and features:
                    return a.astype(np.int64)
                if i == last:  # logits: FW + FA bits to Q28, not saturated
                    out = self._apply(kind, a, layer, pad, FW + FA - Q, None, None)
                    return out.astype(np.int64)
                fused = i + 1 < len(self.plan) and self.plan[i + 1][0] == "relu"
                a = self._apply(kind, a, layer, pad, FW, 0 if fused else -SAT, SAT)
                continue
            fused = False
        raise ModelFormatError("the plan has no output layer")

    @classmethod
    def _apply(cls, kind: str, a: FloatArray, layer: _Layer, pad: int, shift: int,
               low: float | None, high: float | None) -> FloatArray:
        if kind == "linear":
            return _affine(a, layer.weight.T, layer, shift, low, high)
        return cls._conv(a, layer, pad, shift, low, high)

    @staticmethod
    def _conv(a: FloatArray, layer: _Layer, pad: int, shift: int, low: float | None,
              high: float | None) -> FloatArray:
        out_c, in_c, kh, kw = layer.weight.shape
        if pad:
            a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        n = a.shape[0]
        win = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(2, 3))
        oh, ow = win.shape[2], win.shape[3]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, in_c * kh * kw)
        out = _affine(cols, layer.weight.reshape(out_c, -1).T, layer, shift, low, high)
        return out.reshape(n, oh, ow, out_c).transpose(0, 3, 1, 2)


def exp_neg_q(x: IntArray) -> IntArray:
    """exp(x) in Q28 for x <= 0 in Q28."""
    t = -x
    k = t // LN2_Q
    r = t - k * LN2_Q  # [0, ln 2)
    p = np.full_like(r, ONE)
    for j in range(_EXP_TERMS, 0, -1):  # e^-r = 1 - r(1 - r/2(1 - r/3(...)))
        p = ONE - (r * p) // (j * ONE)
    shift: IntArray = np.minimum(k, 62)
    return p >> shift


def ln_q(s: IntArray, max_exponent: int = 62 - Q) -> IntArray:
    """ln(s) in Q28 for ONE <= s < 2^(Q + max_exponent)."""
    e = np.zeros_like(s)
    for j in range(1, max_exponent + 1):
        e += s >= (ONE << j)
    m = s >> e  # [1, 2) in Q28
    t = ((m - ONE) << Q) // (m + ONE)  # [0, 1/3]
    t2 = (t * t) >> Q
    total, term = t.copy(), t.copy()
    for k in range(1, _ATANH_TERMS + 1):
        term = (term * t2) >> Q
        total += term // (2 * k + 1)
    return e * LN2_Q + 2 * total


def cross_entropy_q(logits: IntArray, y: npt.NDArray[np.int64]) -> int:
    """Sum over samples of -log softmax(logits)[y], in Q28 units, as a Python int."""
    if logits.shape[0] == 0:
        return 0
    top = logits.max(axis=1, keepdims=True)
    d = np.maximum(logits - top, -(62 * LN2_Q))  # exp below 2^-62 is 0 either way
    s = exp_neg_q(d).sum(axis=1)
    classes = logits.shape[1]
    lse = ln_q(s, max(1, int(classes).bit_length()))
    picked = np.take_along_axis(d, y.reshape(-1, 1), axis=1)[:, 0]
    return int((lse - picked).sum())


@dataclass(frozen=True)
class LabelDirections:
    """What :meth:`ValidationLoss.label_directions` returns: one row per (class c, logit k),
    row ``c_index * rows + k`` with c_index the position of c in ``present``; its columns
    are the flat parameters at ``index`` (the hidden and the output layer's weights)."""

    matrix: IntArray
    index: IntArray
    present: list[int]
    rows: int


class ValidationLoss:
    """Exact mean cross-entropy of ``global + delta`` on a fixed validation set, in 2^-28 nats.

    The robustness screen's loss oracle (:class:`fl.aggregate.ScreenContext`): a pure
    function of the delta, the same integer on every machine. Evaluated in batches of
    ``batch`` samples to bound memory; the sum is exact, so batching changes nothing."""

    def __init__(
        self,
        model: ExactModel,
        global_q: IntArray,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int64],
        batch: int = 256,
    ) -> None:
        if global_q.shape != (model.size,):
            raise ModelFormatError(f"global model has {global_q.shape}, expected {model.size}")
        if len(x) == 0 or len(x) != len(y):
            raise ModelFormatError(f"validation set of {len(x)} inputs and {len(y)} labels")
        self.model, self.global_q = model, global_q.astype(np.int64)
        self.x_q, self.y = quantize_inputs(x), np.asarray(y, dtype=np.int64)
        self.batch = batch

    def __len__(self) -> int:
        return len(self.y)

    def label_directions(self) -> LabelDirections | None:
        """Per validation class c and logit k, the gradient of logit k summed over the
        class's samples, with respect to the weights of the last two linear layers, at the
        global model; the output layer's alone when no hidden dense layer feeds it through a
        ReLU; None when the output layer is not dense.

        Logit k reads the output layer's row k times the hidden activations h, and h reads
        the hidden layer's weights through the ReLU: d z_k / d W2[k] = h and
        d z_k / d W1 = (W2[k] * [h > 0]) outer a, with a the hidden layer's input. Summed
        over class c: H_c in row k, and W2[k, j] * S_c[j] with S_c = sum of [h_j > 0] a.
        Both in FW + FA fractional bits, so the two layers' parts are on one scale."""
        out_op = [op for op in self.model.plan if op[0] in ("conv", "linear")][-1]
        if out_op[0] != "linear":
            return None
        pair = self.model.last_two_linear()
        chunks = range(0, len(self.y), self.batch)
        if pair is not None:
            parts = [self.model.dense_inputs(self.global_q, self.x_q[s : s + self.batch])
                     for s in chunks]
            a = np.concatenate([p[0] for p in parts])
            h = np.concatenate([p[1] for p in parts])
            names = [pair[1] + "weight", pair[2] + "weight"]
        else:
            h = np.concatenate([self.model.features(self.global_q, self.x_q[s : s + self.batch])
                                for s in chunks])
            a, names = h[:, :0], [out_op[1] + "weight"]
        w2 = self.model._layer(self.global_q, out_op[1]).weight.astype(np.int64)  # rows x H
        rows = w2.shape[0]
        present = [c for c in range(rows) if np.any(self.y == c)]
        blocks = []
        for c in present:
            mine = self.y == c
            s_c = (h[mine] > 0).astype(np.int64).T @ a[mine]  # H x A, |.| < 2^21 * n_c
            h_c = h[mine].sum(axis=0) << FW  # H
            for k in range(rows):
                d2 = np.zeros((rows, h.shape[1]), dtype=np.int64)
                d2[k] = h_c
                blocks.append(np.concatenate([(w2[k][:, None] * s_c).ravel(), d2.ravel()]))
        index = np.concatenate([self.model.offsets[n]
                                + np.arange(int(np.prod(self.model.shapes[n]))) for n in names])
        matrix = np.stack(blocks) if blocks else np.zeros((0, index.size), dtype=np.int64)
        return LabelDirections(matrix, index, present, rows)

    def __call__(self, delta: IntArray) -> int:
        w = self.global_q + delta
        total = 0
        for s in range(0, len(self.y), self.batch):
            logits = self.model.logits(w, self.x_q[s : s + self.batch])
            total += cross_entropy_q(logits, self.y[s : s + self.batch])
        return total // len(self.y)

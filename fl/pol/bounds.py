"""Data-free step-size bounds: how far a segment's steps can move the weights (integers only).

Both bounds hold for *any* gradients, so a verifier checks them without the data.
All quantities are in the aggregation's fixed point (2^-24 units) and computed with
exact rationals rounded in the safe direction, so every verifier gets the same ints.

SGD (torch semantics: ``d = clip(g) + wd * w``; ``buf = mu * buf + d``; ``w -= lr * buf``)
with gradient clipping ``|clip(g)| <= c``: per step ``|buf_t| <= mu |buf_{t-1}| + c +
wd (|w_start| + D_{t-1})`` and ``D_t = D_{t-1} + lr |buf_t|`` bounds the L2 distance
from the segment's start. Without clipping the gradient, hence the step, is unbounded
and the check is skipped.

Adam (betas 0.9 / 0.999, bias-corrected, as ``torch.optim.Adam``): by Cauchy-Schwarz
``|m_t| <= (1-b1) sqrt(R_t) sqrt(v_t / (1-b2))`` with ``R_t = sum_{j<t} (b1^2/b2)^j``,
so each coordinate moves at most
``lr * (1-b1) sqrt(R_t (1-b2^t)) / ((1-b1^t) sqrt(1-b2))`` per step (exactly ``lr`` at
t = 1, about ``7.3 lr`` for large t), whatever the gradients and the weight decay.
"""

from __future__ import annotations

import math
from fractions import Fraction

from fl.train import TrainConfig

__all__ = ["adam_linf_bound_q", "sgd_l2_bound_q", "slack"]

SCALE = 1 << 24
_P = 1 << 96  # precision of the Adam bound's powers
_B1 = Fraction(9, 10)
_B2 = Fraction(999, 1000)
_R = _B1 * _B1 / _B2


def _dec(x: float) -> Fraction:
    return Fraction(repr(float(x)))  # the decimal the task wrote, as TrainConfig.to_plain does


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def slack(bound: int, n: int) -> int:
    """Room for float32 rounding in training (1/1024 relative) and for quantization (sqrt n)."""
    return bound + bound // 1024 + math.isqrt(n) + 2


def sgd_l2_bound_q(
    cfg: TrainConfig, w_norm_q: int, buf_norm_q: int, steps: int
) -> tuple[int, int] | None:
    """``(max |w_end - w_start|_2, max |buf_end|_2)`` after ``steps`` SGD steps, or None.

    ``w_norm_q`` / ``buf_norm_q`` bound the weights' and the momentum buffer's norms at
    the segment start. None when ``clip_norm`` is unset (no data-free bound exists).
    """
    if cfg.clip_norm is None:
        return None
    lr, mu, wd = _dec(cfg.lr), _dec(cfg.momentum), _dec(cfg.weight_decay)
    c = _ceil(_dec(cfg.clip_norm) * SCALE)
    v, d = buf_norm_q, 0
    for _ in range(steps):
        v = _ceil(mu * v + c + wd * (w_norm_q + d))
        d = _ceil(d + lr * v)
    return d, v


def _scaled(base: Fraction, up: bool) -> int:
    return _ceil(base * _P) if up else (base.numerator * _P) // base.denominator


def _mul(a: int, b: int, up: bool) -> int:
    return -((-a * b) // _P) if up else (a * b) // _P


def _pow(base: Fraction, t: int, up: bool) -> int:
    result, b = _P, _scaled(base, up)
    while t:
        if t & 1:
            result = _mul(result, b, up)
        b = _mul(b, b, up)
        t >>= 1
    return result


def _ceil_sqrt(x: Fraction) -> Fraction:
    """An upper bound of sqrt(x) with denominator _P."""
    s = _ceil(x * _P * _P)
    r = math.isqrt(s)
    return Fraction(r if r * r == s else r + 1, _P)


def adam_linf_bound_q(cfg: TrainConfig, first_step: int, steps: int) -> int:
    """Max per-coordinate move over Adam steps ``first_step+1 .. first_step+steps`` (2^-24 units)."""
    lr = _dec(cfg.lr)
    const = (1 - _B1) ** 2 / ((1 - _R) * (1 - _B2))
    t = first_step + 1
    rt, b2t, b1t = _pow(_R, t, False), _pow(_B2, t, False), _pow(_B1, t, True)
    r_lo, b2_lo, b1_hi = _scaled(_R, False), _scaled(_B2, False), _scaled(_B1, True)
    total = Fraction(0)
    done = 0
    while done < steps:
        sq = const * Fraction((_P - rt) * (_P - b2t), (_P - b1t) ** 2)
        term = _ceil_sqrt(sq)
        nxt = (_mul(rt, r_lo, False), _mul(b2t, b2_lo, False), _mul(b1t, b1_hi, True))
        if nxt == (rt, b2t, b1t):  # the powers stopped changing: every later term is equal
            total += term * (steps - done)
            break
        total += term
        done += 1
        rt, b2t, b1t = nxt
    return _ceil(lr * SCALE * total)

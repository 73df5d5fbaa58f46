"""Which labels an update taught to which classes: its ridge decomposition on the validation set's
class-by-logit gradients of the last two layers, in deterministic integer arithmetic (ADR 0407).

An update trained on data labelled y moves the weights along the gradients of logit y on
the inputs of y's class. Given the directions D[c, k] (the gradient of logit k summed over
the validation images of class c: :meth:`fl.models.exact.ValidationLoss.label_directions`)
the least-squares coefficients of the update on them say, for every logit k, which classes'
images it learnt to raise k on: an honest trainer's on class k, a label flipper's on other
classes. The output layer alone (ADR 0406) could not tell this in the first rounds, where
the class means of the last hidden features are almost collinear (pairwise cosines 0.88-0.99
on the MNIST CNN at initialisation); through the hidden layer's ReLU gates and inputs the
directions of different classes stay apart.

Exactness: the directions and each update are cut to ``b`` significant bits (a floor shift by
a power of two) so that every product of the Gram matrix and of the update's dot products,
and every partial sum of them, is an integer below 2^52 that float64 holds exactly; the
result is then the same for any summation order of the BLAS. The ridge system is solved by
Gaussian elimination in Python integers with ``FRAC`` fractional bits and floor division,
the same steps on every machine. The ridge keeps the system well conditioned (its
condition number is at most about n / ridge), so the fixed point loses nothing that matters
to a share compared with a threshold.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fl.aggregate.exact import maxabs

if TYPE_CHECKING:  # the screen does not import torch (fl.models does)
    from fl.models.exact import LabelDirections

__all__ = ["LabelBasis"]

IntVec = npt.NDArray[np.int64]
FRAC = 48  # fractional bits of the elimination's multipliers and of the solution


def _exact_bits(length: int) -> int:
    """Significant bits per factor so that a dot product of ``length`` terms stays below 2^52."""
    return max(1, (52 - max(length - 1, 1).bit_length()) // 2)


def _cut(v: npt.NDArray[np.int64], bits: int) -> npt.NDArray[np.float64]:
    """``v`` floor-shifted right until its largest magnitude is below 2^bits, as float64."""
    shift = max(0, maxabs(v).bit_length() - bits)
    return (v >> shift).astype(np.float64)


class LabelBasis:
    """The round's directions, their ridge-regularised Gram matrix, factorised once."""

    def __init__(self, directions: LabelDirections, ridge: Fraction) -> None:
        self.present, self.rows, self.index = directions.present, directions.rows, directions.index
        self.bits = _exact_bits(directions.matrix.shape[1])
        self.d = _cut(directions.matrix, self.bits)
        n = self.d.shape[0]
        gram = [[int(v) for v in row] for row in (self.d @ self.d.T)]  # exact (module docstring)
        trace = sum(gram[i][i] for i in range(n))
        lam = ridge.numerator * trace // (ridge.denominator * max(n, 1))
        for i in range(n):
            gram[i][i] += lam
        self.usable = n > 0 and trace > 0 and len(self.present) >= 2
        self.upper, self.lower = _eliminate(gram) if self.usable else ([], [])

    def coefficients(self, u: IntVec) -> list[int] | None:
        """The update's ridge coefficients in 2^-FRAC units, row (c, k) at c x rows + k for
        the c-th present class; None when there is nothing to decompose."""
        if not self.usable:
            return None
        uv = _cut(u[self.index], self.bits)
        rhs = [int(v) for v in self.d @ uv]  # exact (module docstring)
        if not any(rhs):
            return None
        return _solve(self.upper, self.lower, rhs)

    def mismatch(self, u: IntVec) -> Fraction | None:
        """The share of the positive coefficients (each logit's centred over the classes)
        that lies off the diagonal; None when there is nothing to decompose."""
        return self.share(self.coefficients(u))

    def share(self, coef: list[int] | None) -> Fraction | None:
        """:meth:`mismatch` of the coefficients :meth:`coefficients` returned."""
        if coef is None:
            return None
        p = len(self.present)
        pos_all = pos_off = 0
        for k in range(self.rows):
            col = [coef[ci * self.rows + k] for ci in range(p)]
            total = sum(col)
            for ci, v in enumerate(col):
                centred = v * p - total  # p x (v - mean): integers, same signs
                if centred > 0:
                    pos_all += centred
                    if self.present[ci] != k:
                        pos_off += centred
        return Fraction(pos_off, pos_all) if pos_all > 0 else None


def _eliminate(a: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """Gaussian elimination of a symmetric positive definite matrix without pivoting, with
    multipliers in FRAC fractional bits: (the upper triangle, the multipliers)."""
    n = len(a)
    a = [list(row) for row in a]
    lower = [[0] * n for _ in range(n)]
    for k in range(n):
        piv = a[k][k]
        if piv <= 0:  # a positive definite matrix keeps positive pivots; guard the fixed point
            raise ArithmeticError("label basis is not positive definite")
        rowk = a[k]
        for i in range(k + 1, n):
            m = (a[i][k] << FRAC) // piv
            lower[i][k] = m
            if m:
                ri = a[i]
                for j in range(k + 1, n):
                    ri[j] -= (m * rowk[j]) >> FRAC
    return a, lower


def _solve(upper: list[list[int]], lower: list[list[int]], rhs: list[int]) -> list[int]:
    """x with upper-triangular back substitution after the multipliers' forward pass, in
    2^FRAC units of rhs / matrix."""
    n = len(rhs)
    y = list(rhs)
    for k in range(n):
        if y[k]:
            for i in range(k + 1, n):
                y[i] -= (lower[i][k] * y[k]) >> FRAC
    x = [0] * n
    for i in range(n - 1, -1, -1):
        row = upper[i]
        s = (y[i] << FRAC) - sum(row[j] * x[j] for j in range(i + 1, n))
        x[i] = s // row[i]
    return x

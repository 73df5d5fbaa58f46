"""BatchCrypt-style packing of quantized update coordinates into CKKS slot integers.

A :class:`Layout` says how an update (int64 at the fixed-point scale 2^-24 of
:mod:`fl.aggregate.fixed`) becomes slot values that CKKS encrypts and adds:

1. **requantize** to the layout's grid 2^-``frac_bits`` (exact when ``frac_bits`` is 24,
   otherwise ``floor((u + 2^(k-1)) / 2^k)`` with ``k = 24 - frac_bits``);
2. **weight**: the trainer multiplies by its aggregation weight w (sample count, or 1),
   so that the sum of all contributions is ``sum(w_i v_i)`` and FedAvg is one division;
3. **pack** ``lanes`` consecutive values into one slot integer as signed digits in base
   ``2^lane_bits``: ``V = sum_l c_l 2^(lane_bits l)`` (value ``j*lanes + l`` goes to lane l
   of slot j, lane 0 least significant).

Headroom (Zhang et al., BatchCrypt, USENIX ATC 2020): every value satisfies
``|v| <= value_bound = (2^(lane_bits-1) - 1) // max_weight`` and the weights of one sum
total at most ``max_weight``, so each lane of the sum stays in
``(-2^(lane_bits-1), 2^(lane_bits-1))`` and no carry crosses into the next lane. The
balanced-digit decoding in :func:`unpack` is then exact. Sign handling needs no offset
(BatchCrypt's two sign bits): digits are signed and the slot holds their exact sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fl.aggregate.fixed import SCALE_BITS
from fl.privacy.errors import HeError
from ledger.codec import record

__all__ = [
    "EXACT",
    "LAYOUTS",
    "Layout",
    "PackingError",
    "from_grid",
    "pack",
    "to_grid",
    "unpack",
]

IntVec = npt.NDArray[np.int64]
# Slot integers must stay exactly representable in float64 (the CKKS encoder takes doubles).
MAX_SLOT_BITS = 52


class PackingError(HeError):
    """A value outside the layout's range, or an impossible layout."""


@record(552)
@dataclass(frozen=True)
class Layout:
    """How quantized values sit in CKKS slots (see the module docstring).

    ``frac_bits``: grid 2^-frac_bits (24 = the aggregation fixed point, bit-exact FedAvg);
    ``lanes``: values per slot; ``lane_bits``: bits per lane including sign and headroom;
    ``max_weight``: the largest total weight (sum of the summands' weights) one sum may hold.
    """

    frac_bits: int
    lanes: int
    lane_bits: int
    max_weight: int

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= SCALE_BITS:
            raise PackingError(f"frac_bits must be in 0..{SCALE_BITS}, got {self.frac_bits}")
        if self.lanes < 1 or self.lane_bits < 2:
            raise PackingError("a layout needs at least one lane of at least 2 bits")
        if self.slot_bits > MAX_SLOT_BITS:
            raise PackingError(
                f"{self.lanes} lanes of {self.lane_bits} bits exceed {MAX_SLOT_BITS} bits per slot"
            )
        if self.max_weight < 1:
            raise PackingError("max_weight must be positive")
        if self.value_bound < 1:
            raise PackingError(
                f"lane_bits {self.lane_bits} leave no room for values with max_weight "
                f"{self.max_weight} (headroom needs {self.max_weight.bit_length()} bits)"
            )

    @property
    def slot_bits(self) -> int:
        """Signed width of one slot integer: |V| < 2^(slot_bits - 1)."""
        return self.lanes * self.lane_bits

    @property
    def value_bound(self) -> int:
        """Largest |v| of one contribution on the layout's grid (before weighting)."""
        return ((1 << (self.lane_bits - 1)) - 1) // self.max_weight

    @property
    def max_abs(self) -> float:
        """The value range in model units: |x| <= max_abs."""
        return self.value_bound / float(1 << self.frac_bits)

    @property
    def resolution(self) -> float:
        return 1.0 / float(1 << self.frac_bits)

    def slots_for(self, count: int) -> int:
        return -(-count // self.lanes)

    def describe(self) -> str:
        return (
            f"{self.lanes} x {self.lane_bits}-bit lanes, grid 2^-{self.frac_bits}, "
            f"|x| <= {self.max_abs:.6g}, total weight <= {self.max_weight}"
        )

    @staticmethod
    def fitted(
        max_abs: float, max_weight: int, lanes: int, slot_bits: int, resolution: float
    ) -> Layout:
        """The finest grid whose range covers ``max_abs`` with ``lanes`` lanes in ``slot_bits``.

        Raises :class:`PackingError` when that grid is coarser than ``resolution``.
        """
        if max_abs <= 0 or resolution <= 0:
            raise PackingError("max_abs and resolution must be positive")
        lane_bits = slot_bits // lanes
        top = ((1 << (lane_bits - 1)) - 1) // max_weight
        if top < 1:
            raise PackingError(f"{lanes} lanes leave no room for {max_weight} summands")
        frac = SCALE_BITS
        while frac > 0 and top / float(1 << frac) < max_abs:
            frac -= 1
        layout = Layout(frac, lanes, lane_bits, max_weight)
        if layout.max_abs < max_abs:
            raise PackingError(f"|x| <= {max_abs} does not fit {lanes} lanes of {lane_bits} bits")
        if layout.resolution > resolution:
            raise PackingError(
                f"{lanes} lanes give a grid of {layout.resolution:.3g}, coarser than {resolution:.3g}"
            )
        return layout


# Bit-exact FedAvg with the plaintext rule: 2^-24 grid, one 36-bit lane, sample weights up
# to 2048 per sum, so |x| < 1.0 per coordinate (updates of the MNIST workload stay below 0.7).
EXACT = Layout(frac_bits=SCALE_BITS, lanes=1, lane_bits=36, max_weight=1 << 11)
LAYOUTS = {
    "exact": EXACT,
    # Unit weights (one per summand), up to 64 summands: BatchCrypt-style 2 and 3 lanes.
    "packed2": Layout(frac_bits=11, lanes=2, lane_bits=18, max_weight=64),
    "packed3": Layout(frac_bits=6, lanes=3, lane_bits=12, max_weight=32),
}


def to_grid(q: IntVec, layout: Layout) -> IntVec:
    """Requantize 2^-24 fixed-point ints to the layout's grid (round half up, exact ints)."""
    shift = SCALE_BITS - layout.frac_bits
    if shift == 0:
        return q.astype(np.int64, copy=True)
    return (q + np.int64(1 << (shift - 1))) >> np.int64(shift)


def from_grid(v: IntVec, layout: Layout) -> IntVec:
    """Back to 2^-24 units (exact: |v| < 2^52 and the shift is at most 24 bits)."""
    return v.astype(np.int64) << np.int64(SCALE_BITS - layout.frac_bits)


def check_values(v: IntVec, layout: Layout) -> None:
    if v.size:
        m = max(int(v.max()), -int(v.min()))
        if m > layout.value_bound:
            raise PackingError(
                f"a value of {m / float(1 << layout.frac_bits):.6g} is outside the layout's "
                f"range +-{layout.max_abs:.6g} ({layout.describe()})"
            )


def pack(v: IntVec, weight: int, layout: Layout) -> npt.NDArray[np.float64]:
    """Grid values (int64) times ``weight`` -> slot integers as float64 (exact, < 2^52)."""
    if v.dtype != np.int64 or v.ndim != 1:
        raise PackingError(f"pack takes a 1-D int64 vector, got {v.dtype} {v.shape}")
    if type(weight) is not int or not 1 <= weight <= layout.max_weight:
        raise PackingError(f"weight must be an int in 1..{layout.max_weight}, got {weight!r}")
    check_values(v, layout)
    k = layout.lanes
    padded = np.zeros(layout.slots_for(v.size) * k, dtype=np.int64)
    padded[: v.size] = v
    lanes = padded.reshape(-1, k) * np.int64(weight)
    slots = np.zeros(lanes.shape[0], dtype=np.int64)
    for lane in range(k - 1, -1, -1):  # Horner: |partial| < 2^(slot_bits-1) <= 2^51
        slots = slots * np.int64(1 << layout.lane_bits) + lanes[:, lane]
    return slots.astype(np.float64)


def unpack(slots: IntVec, layout: Layout, count: int) -> IntVec:
    """Slot integers of a sum -> the ``count`` per-value sums (balanced base-2^lane_bits digits)."""
    if slots.dtype != np.int64 or slots.ndim != 1:
        raise PackingError("unpack takes a 1-D int64 vector")
    if slots.size < layout.slots_for(count):
        raise PackingError(f"{slots.size} slots cannot hold {count} values")
    limit = 1 << (layout.slot_bits - 1)
    if slots.size and max(int(slots.max()), -int(slots.min())) >= limit:
        raise PackingError("a slot integer is outside the layout's range (overflowed sum)")
    b = layout.lane_bits
    half, mask = np.int64(1 << (b - 1)), np.int64((1 << b) - 1)
    rest = slots.copy()
    out = np.empty((slots.size, layout.lanes), dtype=np.int64)
    for lane in range(layout.lanes):
        digit = ((rest + half) & mask) - half
        out[:, lane] = digit
        rest = (rest - digit) >> np.int64(b)
    if rest.any():  # a slot beyond its lanes' signed range: carries crossed the lanes
        raise PackingError("packed lanes overflowed (more weight than the layout's headroom)")
    return out.reshape(-1)[:count].copy()

"""Client-level differential privacy for FedAvg: clip each update, add a share of Gaussian noise.

DP-FedAvg (McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent
Language Models", ICLR 2018) with uniform weights and a fixed number m of clients per round:

* each sampled client clips its update (delta) to L2 norm ``S`` (``clip``);
* the round releases ``(sum_i clip(u_i) + N(0, (z S)^2 I)) / m``, i.e. the sum of clipped
  updates has sensitivity S (one client added or removed) and Gaussian noise of standard
  deviation ``sigma = z S`` where z is the *noise multiplier*;
* the accountant (:mod:`fl.privacy.accountant`) composes one Poisson-subsampled Gaussian
  mechanism with sampling rate ``q = m / K`` per round (the standard approximation for
  fixed-size client sampling, as in McMahan et al. and TensorFlow Federated).

There is no trusted server to add the noise, so each client adds its **share**
``N(0, (z S)^2 / m)`` before it submits (and before encryption under HE): the m shares
sum to the full noise. The guarantee holds against anyone who sees only the aggregate
(with HE: validators and other trainers). A party that sees one update in plaintext sees
only that client's share, i.e. noise multiplier ``z / sqrt(m)`` on that update
(:meth:`DpParams.local_noise_multiplier`); clients that skip their share or collude
reduce the aggregate noise. docs/privacy.md has the full threat model.

Everything happens on a fixed-point grid 2^-frac_bits (2^-24 = the aggregation fixed point,
coarser for packed HE layouts): the clipped update is rounded to the grid and then scaled
down until its *exact integer* norm is at most S, so the sensitivity is exactly S after
quantization, and the noise is a Gaussian rounded to the grid. Noise comes from SHAKE-256
keyed by a 256-bit seed (os.urandom unless a seed is given for tests and replay), turned
into normals by Box-Muller in float64.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from fl.aggregate.exact import sq_norm
from fl.aggregate.fixed import SCALE_BITS
from fl.privacy.errors import DpError
from ledger.codec import record

__all__ = [
    "ClipResult",
    "DpParams",
    "Privatized",
    "clip_to_grid",
    "dequantize_f64",
    "gaussian_noise",
    "l2_norm",
    "noise_seed",
    "privatize",
]

IntVec = npt.NDArray[np.int64]
FloatVec = npt.NDArray[np.float64]
_SEED_DOMAIN = b"fedledger/dp/noise/v1"
_MAX_SHRINK_STEPS = 64


def _decimal(value: str, name: str) -> Fraction:
    if not isinstance(value, str):
        raise DpError(f"{name} must be a decimal string, got {type(value).__name__}")
    try:
        d = Decimal(value)
    except InvalidOperation as e:
        raise DpError(f"{name} {value!r} is not a decimal number") from e
    if not d.is_finite():
        raise DpError(f"{name} must be finite")
    return Fraction(d)


@record(550)
@dataclass(frozen=True)
class DpParams:
    """A task's DP settings, canonical (decimal strings, no floats) so they can go on chain.

    ``clip``: L2 bound S of each update (model units); ``noise_multiplier``: z, the std of
    the aggregate noise over S; ``delta``: the task's delta; ``clients``: the population K;
    ``clients_per_round``: m, the number of noise shares per round (q = m / K).
    """

    clip: str
    noise_multiplier: str
    delta: str
    clients: int
    clients_per_round: int

    def __post_init__(self) -> None:
        if _decimal(self.clip, "clip") <= 0:
            raise DpError("clip must be positive")
        if _decimal(self.noise_multiplier, "noise_multiplier") < 0:
            raise DpError("noise_multiplier must be >= 0")
        if not 0 < _decimal(self.delta, "delta") < 1:
            raise DpError("delta must be in (0, 1)")
        if type(self.clients) is not int or type(self.clients_per_round) is not int:
            raise DpError("clients and clients_per_round must be ints")
        if not 1 <= self.clients_per_round <= self.clients:
            raise DpError("clients_per_round must be in 1..clients")

    @classmethod
    def of(
        cls,
        clip: float | str,
        noise_multiplier: float | str,
        delta: float | str,
        clients: int,
        clients_per_round: int,
    ) -> DpParams:
        """Build from floats: each is stored as its shortest round-trip decimal string."""
        return cls(
            _as_decimal(clip), _as_decimal(noise_multiplier), _as_decimal(delta), clients,
            clients_per_round,
        )  # fmt: skip

    @property
    def clip_value(self) -> float:
        return float(_decimal(self.clip, "clip"))

    @property
    def z(self) -> float:
        return float(_decimal(self.noise_multiplier, "noise_multiplier"))

    @property
    def delta_value(self) -> float:
        return float(_decimal(self.delta, "delta"))

    @property
    def sampling_rate(self) -> float:
        return self.clients_per_round / self.clients

    @property
    def client_noise_std(self) -> float:
        """Each client's share: std z S / sqrt(m), so m shares sum to std z S."""
        return self.z * self.clip_value / math.sqrt(self.clients_per_round)

    @property
    def local_noise_multiplier(self) -> float:
        """The noise multiplier of a single update seen in plaintext: z / sqrt(m)."""
        return self.z / math.sqrt(self.clients_per_round)


def _as_decimal(v: float | str) -> str:
    if isinstance(v, str):
        return v
    if not math.isfinite(v):
        raise DpError(f"{v!r} is not finite")
    return repr(float(v))


def dequantize_f64(q: IntVec) -> FloatVec:
    """2^-24 fixed point -> float64, exactly (no float32 rounding before clipping)."""
    return np.asarray(q, dtype=np.int64).astype(np.float64) / float(1 << SCALE_BITS)


def l2_norm(x: npt.ArrayLike) -> float:
    """L2 norm in float64 (the clipping decision; the bound itself is checked exactly)."""
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64)))


@dataclass(frozen=True, eq=False)
class ClipResult:
    values: IntVec  # on the grid 2^-frac_bits, exact integer norm <= clip * 2^frac_bits
    norm: float  # the update's L2 norm before clipping
    factor: float  # the scale applied (1.0 when the update was already within the bound)


def clip_to_grid(
    delta: npt.ArrayLike, clip: str | float, frac_bits: int = SCALE_BITS
) -> ClipResult:
    """Scale ``delta`` to L2 norm <= clip, rounded to the grid with the bound exact after rounding.

    Rounding to the grid can lengthen a vector by up to sqrt(d)/2 grid steps, so the scale
    is reduced until ``sum(q_i^2) <= (clip 2^frac_bits)^2`` holds in exact integers.
    """
    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 1:
        raise DpError(f"clip takes a 1-D vector, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DpError("update contains NaN or infinity")
    if not 0 <= frac_bits <= SCALE_BITS:
        raise DpError(f"frac_bits must be in 0..{SCALE_BITS}")
    bound = _decimal(clip if isinstance(clip, str) else _as_decimal(clip), "clip")
    if bound <= 0:
        raise DpError("clip must be positive")
    unit = float(1 << frac_bits)
    bound_sq = bound * bound * (1 << (2 * frac_bits))
    norm = l2_norm(x)
    factor = 1.0 if norm <= float(bound) else float(bound) / norm
    for _ in range(_MAX_SHRINK_STEPS):
        q = np.rint(x * (factor * unit))
        if np.abs(q).max(initial=0.0) > 2.0**41:
            raise DpError("update is outside the fixed-point range")
        qi = q.astype(np.int64)
        s = sq_norm(qi)
        if s <= bound_sq:
            return ClipResult(qi, norm, factor)
        factor *= float(bound) * unit / math.sqrt(s) * (1.0 - 2.0**-20)
    return ClipResult(np.zeros(x.size, dtype=np.int64), norm, 0.0)  # pragma: no cover


def noise_seed(*parts: int | bytes | str) -> bytes:
    """A 32-byte noise seed derived from labels (tests, simulation replay)."""
    h = hashlib.sha256(_SEED_DOMAIN)
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode("utf-8")
        h.update(len(b).to_bytes(4, "big") + b)
    return h.digest()


def gaussian_noise(n: int, std: float, seed: bytes | None = None) -> FloatVec:
    """n draws of N(0, std^2): SHAKE-256(seed) as the bit source, Box-Muller in float64.

    ``seed=None`` draws a fresh 256-bit seed from the OS (production); a given seed
    makes the noise reproducible (tests and replay of a simulation).
    """
    if n < 0 or not math.isfinite(std) or std < 0:
        raise DpError("noise needs n >= 0 and a finite std >= 0")
    if seed is None:
        seed = os.urandom(32)
    if len(seed) < 16:
        raise DpError("a noise seed needs at least 128 bits")
    pairs = (n + 1) // 2
    raw = np.frombuffer(hashlib.shake_256(seed).digest(16 * pairs), dtype="<u8").reshape(-1, 2)
    # 53-bit uniforms in (0, 1]: never 0, so the logarithm is finite.
    u = ((raw >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u[:, 0]))
    theta = 2.0 * np.pi * u[:, 1]
    z = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).reshape(-1)[:n]
    return z * std


@dataclass(frozen=True, eq=False)
class Privatized:
    values: IntVec  # clipped update plus noise share, 2^-24 fixed point (multiples of the grid)
    norm: float  # norm before clipping
    clipped: bool


def privatize(
    delta: npt.ArrayLike,
    params: DpParams,
    *,
    seed: bytes | None = None,
    frac_bits: int = SCALE_BITS,
) -> Privatized:
    """Clip a float update to S and add this client's noise share, on the grid 2^-frac_bits.

    Returns 2^-24 fixed-point ints (what :func:`fl.aggregate.aggregate` and
    :func:`fl.privacy.he.encrypt` take); with ``frac_bits`` < 24 every value is a multiple
    of 2^(24 - frac_bits), so an HE layout with that grid requantizes without rounding.
    """
    c = clip_to_grid(delta, params.clip, frac_bits)
    noise = gaussian_noise(c.values.size, params.client_noise_std * float(1 << frac_bits), seed)
    total = c.values + np.rint(noise).astype(np.int64)
    return Privatized(total << np.int64(SCALE_BITS - frac_bits), c.norm, c.factor < 1.0)

"""One task's privacy mode end to end (none | dp | he | dp+he), as the FL harness runs it.

Per round: each client turns its quantized delta into a submission (:meth:`client`):
DP clips it and adds the client's noise share, HE encrypts ``weight * delta`` under the
public context. The aggregator (:meth:`aggregate`) runs plaintext FedAvg, or adds the
ciphertexts with the public context only and lets the key holder decrypt the sum and
divide by the total weight. :meth:`end_round` charges the round to the RDP accountant.

Weights: plain HE keeps sample-weighted FedAvg (clients pre-multiply by their sample
count); every DP mode uses uniform weights (1 per client), which is what the DP-FedAvg
sensitivity analysis assumes. Privacy modes allow only the ``fedavg`` rule: robust rules
need plaintext (HE) or select updates by data-dependent criteria (which breaks the
sensitivity bound of DP).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fl.aggregate import AggregateResult, Update, Verdict, aggregate, canonical_order
from fl.aggregate.fixed import SCALE_BITS, vector_digest
from fl.privacy.accountant import PrivacyAccountant, noise_multiplier_for
from fl.privacy.dp import DpParams, dequantize_f64, noise_seed, privatize
from fl.privacy.errors import PrivacyError
from fl.privacy.packing import LAYOUTS, Layout, PackingError, from_grid, to_grid

__all__ = ["MODES", "PrivacyConfig", "PrivacyPipeline", "Submission", "fit_dp_layout"]

MODES = ("none", "dp", "he", "dp+he")
IntVec = npt.NDArray[np.int64]
# dp+he: the grid must cover |x| <= clip + TAIL_SIGMAS noise stds, be finer than a quarter
# of the noise std (quantization then adds under 1 % to the noise variance) and finer than a
# quarter of a typical clipped coordinate, clip / sqrt(d): the clipped update is rounded to
# the grid before the noise is added, and a coarser grid rounds most of the signal to zero
# (measured: a grid of 2^-7 cost 13 points of MNIST accuracy at epsilon 8).
TAIL_SIGMAS = 8.0
GRID_PER_SIGMA = 4.0
GRID_PER_COORDINATE = 4.0


@dataclass(frozen=True)
class PrivacyConfig:
    mode: str = "none"
    clip: float = 1.0  # L2 bound per update (DP modes)
    noise_multiplier: float | None = None  # z; None: calibrate from epsilon
    epsilon: float | None = None  # target epsilon after all rounds (DP modes)
    delta: float = 1e-5
    he_params: str = "n8192"
    he_layout: str = "auto"  # auto | exact | packed2 | packed3
    # offline/online encryption: each trainer makes its encryptions of zero before the round
    # (fl.privacy.he.ZeroPool), so a submission costs encoding and one addition per ciphertext
    he_precompute: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PrivacyError(f"unknown privacy mode {self.mode!r} (known: {', '.join(MODES)})")
        if self.uses_dp:
            if (self.noise_multiplier is None) == (self.epsilon is None):
                raise PrivacyError("DP needs exactly one of noise_multiplier and epsilon")
            if not (math.isfinite(self.clip) and self.clip > 0):
                raise PrivacyError("clip must be positive")
            if not 0 < self.delta < 1:
                raise PrivacyError("delta must be in (0, 1)")
        from fl.privacy.he import PARAMS

        if self.he_params not in PARAMS:
            raise PrivacyError(
                f"unknown HE parameters {self.he_params!r} (known: {', '.join(PARAMS)})"
            )
        if self.he_layout != "auto" and self.he_layout not in LAYOUTS:
            raise PrivacyError(f"unknown HE layout {self.he_layout!r}")

    @property
    def uses_dp(self) -> bool:
        return self.mode in ("dp", "dp+he")

    @property
    def uses_he(self) -> bool:
        return self.mode in ("he", "dp+he")


@dataclass(frozen=True, eq=False)
class Submission:
    delta: IntVec  # what the client submits in plaintext terms (after DP / range fitting)
    weight: int
    ciphertext: bytes | None
    clamped: int  # coordinates fitted into the HE layout's range


@dataclass
class RoundStats:
    epsilon: float | None = None
    dp_seconds: float = 0.0
    accountant_seconds: float = 0.0  # CPU time of the RDP accountant's step (reporting only)
    encrypt_seconds: float = 0.0
    add_seconds: float = 0.0
    decrypt_seconds: float = 0.0
    he_cpu_seconds: float = 0.0  # process CPU time of encrypt + add + decrypt
    # offline: the trainers' encryptions of zero for this round, made before it (while they
    # wait for it to open); not part of the round's critical path
    precompute_seconds: float = 0.0
    precompute_cpu_seconds: float = 0.0
    ciphertext_bytes: int = 0  # one submission
    clamped: int = 0
    he_equals_plaintext: bool | None = None
    max_residual: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_plain(self) -> dict[str, Any]:
        skip = ("extra", "epsilon")  # epsilon is a RoundMetrics field of its own
        out = {k: v for k, v in vars(self).items() if k not in skip and v is not None}
        out.update(self.extra)
        return out


def fit_dp_layout(dp: DpParams, slot_bits: int, per_round: int, num_params: int) -> Layout:
    """The DP+HE layout: unit weights (total at most ``per_round``, rounded up to a power of
    two), a grid that covers the clip plus TAIL_SIGMAS noise stds and is fine against both
    the noise and a typical clipped coordinate, and the most lanes (3, 2, 1) that allow it.

    Shared by the harness and the chain (node.fl.he_work), so both pack the same way.
    """
    weight = 1 << max(0, (per_round - 1).bit_length())
    sigma = dp.client_noise_std
    reach = dp.clip_value + TAIL_SIGMAS * sigma
    fine = dp.clip_value / (GRID_PER_COORDINATE * math.sqrt(max(1, num_params)))
    if sigma > 0:
        fine = min(fine, sigma / GRID_PER_SIGMA)
    for lanes in (3, 2, 1):
        try:
            return Layout.fitted(reach, weight, lanes, slot_bits, fine)
        except PackingError:
            continue
    raise PrivacyError(f"no HE layout covers +-{reach:.3g} at resolution {fine:.3g}")


class PrivacyPipeline:
    def __init__(
        self,
        cfg: PrivacyConfig,
        *,
        clients: int,
        per_round: int,
        rounds: int,
        seed: int,
        max_round_weight: int,
        num_params: int,
    ) -> None:
        """``max_round_weight``: the largest total sample count a round can have (HE headroom);
        ``num_params``: the model's parameter count (fits the DP+HE grid)."""
        self.cfg = cfg
        self.seed = seed
        self.dp: DpParams | None = None
        self.accountant: PrivacyAccountant | None = None
        self.layout: Layout | None = None
        self.zeros: Any = None  # fl.privacy.he.ZeroPool under HE with he_precompute
        self.stats = RoundStats()
        if cfg.uses_dp:
            q = per_round / clients
            z = cfg.noise_multiplier
            if z is None:
                assert cfg.epsilon is not None
                z = noise_multiplier_for(cfg.epsilon, cfg.delta, q, max(1, rounds))
            self.dp = DpParams.of(cfg.clip, z, cfg.delta, clients, per_round)
            self.accountant = PrivacyAccountant(z, q, cfg.delta)
        if cfg.uses_he:
            from fl.privacy.he import PARAMS, SecretContext

            params = PARAMS[cfg.he_params]
            self.secret = SecretContext.generate(params)  # the task's key holder
            self.public = self.secret.public()  # what trainers and validators receive
            self.layout = self._layout(params.slot_bits, per_round, max_round_weight, num_params)
            if cfg.he_precompute:
                from fl.privacy.he import ZeroPool

                self.zeros = ZeroPool(self.public, num_params, self.layout)

    def _layout(
        self, slot_bits: int, per_round: int, max_round_weight: int, num_params: int
    ) -> Layout:
        cfg = self.cfg
        if cfg.he_layout != "auto":
            return LAYOUTS[cfg.he_layout]
        if self.dp is None:  # weighted FedAvg, bit-exact with the plaintext rule
            # Headroom for exactly the largest round weight: every bit of range counts here
            # (MNIST deltas reach |x| = 1.1; 1686 samples per round leave |x| < 1.24).
            return Layout(SCALE_BITS, 1, slot_bits, max_round_weight)
        return fit_dp_layout(self.dp, slot_bits, per_round, num_params)

    @property
    def frac_bits(self) -> int:
        return self.layout.frac_bits if self.layout is not None else SCALE_BITS

    def precompute(self, updates: int) -> None:
        """Before a round: the trainers' encryptions of zero for ``updates`` submissions
        (each trainer makes its own while it waits; the harness makes them in one place)."""
        if self.zeros is None:
            return
        t, c = time.perf_counter(), time.process_time()
        self.zeros.fill(max(0, updates - len(self.zeros)))
        self.stats.precompute_seconds += time.perf_counter() - t
        self.stats.precompute_cpu_seconds += time.process_time() - c

    def weight(self, samples: int) -> int:
        return 1 if self.dp is not None else samples

    def client(
        self, delta: IntVec, samples: int, rnd: int, client: int, *, honest: bool = True
    ) -> Submission:
        """Turn a client's quantized delta into its submission (malicious ones skip DP noise)."""
        weight = self.weight(samples)
        if self.dp is not None and honest:
            t = time.perf_counter()
            seed = noise_seed(self.seed, rnd, client)
            delta = privatize(
                dequantize_f64(delta), self.dp, seed=seed, frac_bits=self.frac_bits
            ).values
            self.stats.dp_seconds += time.perf_counter() - t
        blob = None
        clamped = 0
        if self.layout is not None:
            from fl.privacy.he import encrypt

            grid = to_grid(delta, self.layout)
            bound = self.layout.value_bound
            clamped = int(np.count_nonzero(np.abs(grid) > bound))
            # The client fits its update into the task's range; the submission is what it encrypts.
            delta = from_grid(np.clip(grid, -bound, bound), self.layout)
            t, c = time.perf_counter(), time.process_time()
            blob = encrypt(delta, self.public, self.layout, weight, zeros=self.zeros)
            self.stats.encrypt_seconds += time.perf_counter() - t
            self.stats.he_cpu_seconds += time.process_time() - c
            self.stats.ciphertext_bytes = len(blob)
            self.stats.clamped += clamped
        return Submission(delta, weight, blob, clamped)

    def aggregate(
        self, updates: Sequence[Update], ciphertexts: Sequence[bytes | None]
    ) -> AggregateResult:
        """FedAvg of the round: plaintext, or add (public context) + decrypt (key holder)."""
        if self.layout is None:
            return aggregate("fedavg", list(updates))
        from fl.privacy.he import add, decrypt, fedavg_delta

        order = canonical_order(list(updates))
        blobs = [ciphertexts[i] for i in order]
        if any(b is None for b in blobs):
            raise PrivacyError("an update under HE has no ciphertext")
        t, c = time.perf_counter(), time.process_time()
        total = add([b for b in blobs if b is not None], self.public)
        self.stats.add_seconds += time.perf_counter() - t
        t = time.perf_counter()
        summed = decrypt(total, self.secret)
        delta = fedavg_delta(summed)
        self.stats.decrypt_seconds += time.perf_counter() - t
        self.stats.he_cpu_seconds += time.process_time() - c
        self.stats.max_residual = summed.max_residual
        # The harness also holds the plaintext submissions (on the layout's grid): check that
        # the encrypted path reproduced the plaintext rule bit for bit.
        plain = aggregate("fedavg", list(updates))
        self.stats.he_equals_plaintext = bool(np.array_equal(plain.delta, delta))
        verdicts = [Verdict(True, "ok", 0) for _ in updates]
        return AggregateResult("fedavg", delta, verdicts, vector_digest(delta))

    def end_round(self) -> RoundStats:
        """Charge the round to the accountant; return (and reset) this round's figures."""
        if self.accountant is not None:
            c = time.process_time()
            self.stats.epsilon = self.accountant.step()
            self.stats.accountant_seconds = time.process_time() - c
        out, self.stats = self.stats, RoundStats()
        return out

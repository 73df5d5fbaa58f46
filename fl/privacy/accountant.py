"""Privacy spent by DP-FedAvg rounds: Google's dp-accounting RDP accountant, and noise calibration.

One round is a Poisson-subsampled Gaussian mechanism: ``PoissonSampledDpEvent(q,
GaussianDpEvent(z))`` with q = clients per round / clients and z the noise multiplier;
T rounds compose to ``SelfComposedDpEvent(..., T)``. The RDP accountant (Mironov 2017;
Mironov, Talwar, Zhang 2019 for the subsampled Gaussian) converts to (epsilon, delta) at
the task's delta with dp-accounting's default orders. Epsilon is reported, never used in
consensus: a task's budget is enforced by its number of rounds (an integer fixed at
creation with :func:`noise_multiplier_for` or :func:`max_rounds_for`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fl.privacy.errors import DpError

__all__ = ["PrivacyAccountant", "epsilon", "max_rounds_for", "noise_multiplier_for"]


class _DropExcludedOrders(logging.Filter):
    """dp-accounting logs a warning for every RDP order whose series does not converge.

    Those orders are left out of the minimum over orders, which can only make epsilon
    larger (conservative), so the message is noise in per-round logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


_FILTER_INSTALLED = False


def _dpa() -> Any:
    global _FILTER_INSTALLED
    import dp_accounting

    if not _FILTER_INSTALLED:
        logging.getLogger("absl").addFilter(_DropExcludedOrders())
        _FILTER_INSTALLED = True
    return dp_accounting


def _check(noise_multiplier: float, sampling_rate: float, delta: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise DpError(f"noise multiplier must be >= 0, got {noise_multiplier}")
    if not 0 < sampling_rate <= 1:
        raise DpError(f"sampling rate must be in (0, 1], got {sampling_rate}")
    if not 0 < delta < 1:
        raise DpError(f"delta must be in (0, 1), got {delta}")


def _round_event(noise_multiplier: float, sampling_rate: float) -> Any:
    dpa = _dpa()
    if noise_multiplier == 0:
        return dpa.NonPrivateDpEvent()
    return dpa.PoissonSampledDpEvent(sampling_rate, dpa.GaussianDpEvent(noise_multiplier))


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``rounds`` rounds (0 for no rounds, inf without noise)."""
    _check(noise_multiplier, sampling_rate, delta)
    if rounds < 0:
        raise DpError("rounds must be >= 0")
    if rounds == 0:
        return 0.0
    acc = _dpa().rdp.RdpAccountant()
    acc.compose(_round_event(noise_multiplier, sampling_rate), rounds)
    return float(acc.get_epsilon(delta))


def noise_multiplier_for(
    target_epsilon: float, delta: float, sampling_rate: float, rounds: int, tol: float = 1e-3
) -> float:
    """The smallest noise multiplier (within ``tol``) whose epsilon after ``rounds`` <= target."""
    _check(1.0, sampling_rate, delta)
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise DpError("target epsilon must be positive and finite")
    if rounds < 1:
        raise DpError("rounds must be >= 1")
    dpa = _dpa()
    try:
        z = dpa.calibrate_dp_mechanism(
            dpa.rdp.RdpAccountant,
            lambda z: dpa.SelfComposedDpEvent(_round_event(z, sampling_rate), rounds),
            target_epsilon,
            delta,
            dpa.LowerEndpointAndGuess(0.0, 1.0),
            tol=tol,
        )
    except Exception as e:  # NoBracketIntervalFoundError and numerical failures
        raise DpError(f"no noise multiplier reaches epsilon {target_epsilon}: {e}") from e
    return float(z)


def max_rounds_for(
    target_epsilon: float, delta: float, noise_multiplier: float, sampling_rate: float,
    limit: int = 100_000,
) -> int:  # fmt: skip
    """The most rounds whose epsilon stays <= target (0 if even one round exceeds it)."""
    _check(noise_multiplier, sampling_rate, delta)
    lo, hi = 0, 1
    while hi <= limit and epsilon(noise_multiplier, sampling_rate, hi, delta) <= target_epsilon:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if epsilon(noise_multiplier, sampling_rate, mid, delta) <= target_epsilon:
            lo = mid
        else:
            hi = mid
    return lo


class PrivacyAccountant:
    """Tracks one task: ``step()`` after each round returns epsilon spent so far at ``delta``."""

    def __init__(self, noise_multiplier: float, sampling_rate: float, delta: float) -> None:
        _check(noise_multiplier, sampling_rate, delta)
        self.noise_multiplier = noise_multiplier
        self.sampling_rate = sampling_rate
        self.delta = delta
        self.rounds = 0
        self._acc = _dpa().rdp.RdpAccountant()
        self._event = _round_event(noise_multiplier, sampling_rate)
        self.epsilon = 0.0

    def step(self, rounds: int = 1) -> float:
        if rounds < 1:
            raise DpError("step takes at least one round")
        self._acc.compose(self._event, rounds)
        self.rounds += rounds
        self.epsilon = float(self._acc.get_epsilon(self.delta))
        return self.epsilon

"""Privacy of updates: DP-FedAvg clipping and noise with an RDP accountant, CKKS encryption (TenSEAL).

The chain-facing API (docs/privacy.md):

* DP: :class:`DpParams`, :func:`clip_to_grid`, :func:`privatize`, :func:`gaussian_noise`,
  :class:`PrivacyAccountant`, :func:`epsilon`, :func:`noise_multiplier_for`;
* HE (``fl.privacy.he``, imports TenSEAL on first use): :class:`SecretContext`,
  :class:`PublicContext`, :func:`encrypt`, :func:`add`, :func:`decrypt`, :func:`inspect`,
  :func:`audit`, :func:`fedavg_delta`, :class:`HeParams` / :data:`PARAMS`,
  :class:`Layout` / :data:`LAYOUTS`.
"""

from typing import Any

from fl.privacy.accountant import PrivacyAccountant, epsilon, max_rounds_for, noise_multiplier_for
from fl.privacy.dp import DpParams, clip_to_grid, gaussian_noise, l2_norm, noise_seed, privatize
from fl.privacy.errors import (
    DpError,
    HeDecryptError,
    HeError,
    HeFormatError,
    HeKeyError,
    HeMismatchError,
    PrivacyError,
)
from fl.privacy.packing import EXACT, LAYOUTS, Layout, PackingError

_HE = (
    "DEFAULT_PARAMS",
    "PARAMS",
    "CiphertextHeader",
    "DecryptedSum",
    "HeParams",
    "PublicContext",
    "SecretContext",
    "ZeroPool",
    "add",
    "audit",
    "decrypt",
    "encrypt",
    "fedavg_delta",
    "inspect",
)

__all__ = [
    "EXACT",
    "LAYOUTS",
    "DpError",
    "DpParams",
    "HeDecryptError",
    "HeError",
    "HeFormatError",
    "HeKeyError",
    "HeMismatchError",
    "Layout",
    "PackingError",
    "PrivacyAccountant",
    "PrivacyError",
    "clip_to_grid",
    "epsilon",
    "gaussian_noise",
    "l2_norm",
    "max_rounds_for",
    "noise_multiplier_for",
    "noise_seed",
    "privatize",
    *_HE,
]


def __getattr__(name: str) -> Any:
    if name in _HE:
        from fl.privacy import he

        return getattr(he, name)
    raise AttributeError(f"module 'fl.privacy' has no attribute {name!r}")

"""Error types of the privacy package: DP configuration, HE formats, keys and ranges."""

from __future__ import annotations

__all__ = [
    "DpError",
    "HeDecryptError",
    "HeError",
    "HeFormatError",
    "HeKeyError",
    "HeMismatchError",
    "PrivacyError",
]


class PrivacyError(ValueError):
    """Base class: every defect of privacy input or configuration raises a subclass."""


class DpError(PrivacyError):
    """Impossible DP settings (clip, noise multiplier, sampling rate, delta) or inputs."""


class HeError(PrivacyError):
    """Base class of homomorphic-encryption errors."""


class HeFormatError(HeError):
    """Bytes that are not a well-formed encrypted update or context (truncated, corrupt, oversize)."""


class HeMismatchError(HeError):
    """A ciphertext or context for other parameters, another key, layout or vector length."""


class HeKeyError(HeError):
    """The operation needs the secret key and this party holds only the public context."""


class HeDecryptError(HeError):
    """Decrypted values are not integers within the noise margin (wrong key, corruption, overflow)."""

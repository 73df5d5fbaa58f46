"""Device choice (CUDA, then Apple MPS, then CPU; overridable) and the deterministic-mode scope."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["DeviceError", "deterministic_mode", "select_device"]


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(preference: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when present, then MPS, then CPU; otherwise the named device."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    pref = (preference or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(pref)
    except (RuntimeError, ValueError) as e:
        raise DeviceError(f"unknown device {preference!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {preference!r} requested but CUDA is not available")
    if dev.type == "mps" and not _mps_available():
        raise DeviceError(f"device {preference!r} requested but MPS is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device type {dev.type!r} (cpu, cuda, mps)")
    return dev


@contextmanager
def deterministic_mode(enabled: bool = True, device: torch.device | None = None) -> Iterator[None]:
    """Deterministic kernels for the scope, restoring the previous global settings afterwards.

    Determinism holds per device type and library build: a replay on the same kind of
    device reproduces training bit for bit; CPU and CUDA results differ in rounding.
    """
    if not enabled:
        yield
        return
    if device is not None and device.type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; only effective before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn

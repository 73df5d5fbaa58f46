"""Shared pytest fixtures: data paths and determinism settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST test set (IDX gz); `.ci/run` sets FEDLEDGER_MNIST_DIR."""
    d = os.environ.get("FEDLEDGER_MNIST_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("FEDLEDGER_MNIST_DIR not set (CI sets it to ../shared/data/mnist)")
    return Path(d)

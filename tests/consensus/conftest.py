"""Options of the consensus tests: ``--sim-seed N`` runs one simulation seed verbosely."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sim-seed",
        action="store",
        type=int,
        default=None,
        help="run only this seed of the consensus simulation (tests/consensus/test_sim.py)",
    )

"""The offline verdicts of benchmarks/label_flip_rules.py (the simulation itself is a benchmark)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from benchmarks.label_flip_rules import BOUNDS, rejected


def _row(run: int, reason: str, share: str | None) -> dict[str, Any]:
    return {"run": (0.3, 0, run), "round": run, "bad": False, "reason": reason,
            "share": None if share is None else Fraction(share)}  # fmt: skip


def test_other_checks_verdicts_stand_and_the_check_decides_on_the_rest() -> None:
    # Prepare: round 1 with honest shares about 0.5, a flip at 0.92 and a high share another
    # check already rejected (it must not set the median); round 2 late, shares about 0.8
    rows = [_row(1, "ok", "0.5"), _row(1, "ok", "0.45"), _row(1, "label_mismatch", "0.92"),
            _row(1, "one_sided", "0.99"), _row(1, "ok", "0.6"),
            _row(2, "ok", "0.8"), _row(2, "ok", "0.93"), _row(2, "ok", "0.78"),
            _row(2, "derived_from_others", "0.7")]  # fmt: skip
    # Execute
    default = rejected(rows, *BOUNDS[0])
    fixed_only = rejected(rows, "97/100", "0")
    # Assert
    assert BOUNDS[0] == ("97/100", "1/5")
    assert default == [False, False, True, True, False, False, False, False, True]
    assert fixed_only == [False, False, False, True, False, False, False, False, True]

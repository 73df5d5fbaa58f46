"""The offline verdicts of benchmarks/label_flip_rules.py (the simulation itself is a benchmark)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from benchmarks.label_flip_rules import BOUNDS, rejected

VAL_ONE = 1 << 28


def _row(run: int, reason: str, share: str | None, nats: str = "0.1") -> dict[str, Any]:
    return {"run": (0.3, 0, run), "round": run, "bad": False, "reason": reason,
            "share": None if share is None else Fraction(share),
            "base": int(Fraction(nats) * VAL_ONE)}  # fmt: skip


def test_other_checks_verdicts_stand_and_the_check_decides_on_the_rest() -> None:
    # Prepare: round 1 near chance (2.3 nats) with honest shares about 0.5, a flip at 0.92
    # and a high share another check already rejected (it must not set the median); round
    # 2 late (0.1 nats), shares about 0.8; round 3 at chance with a flip at 0.87, whose
    # diagonal is above 1/5 of the median's
    rows = [_row(1, "ok", "0.5", "2.3"), _row(1, "ok", "0.45", "2.3"),
            _row(1, "label_mismatch", "0.92", "2.3"), _row(1, "one_sided", "0.99", "2.3"),
            _row(1, "ok", "0.6", "2.3"),
            _row(2, "ok", "0.8"), _row(2, "ok", "0.93"), _row(2, "ok", "0.78"),
            _row(2, "derived_from_others", "0.7"),
            _row(3, "ok", "0.5", "2.3"), _row(3, "ok", "0.87", "2.3"),
            _row(3, "ok", "0.55", "2.3")]  # fmt: skip
    # Execute
    default = rejected(rows, *BOUNDS[0])
    relative = rejected(rows, "97/100", "1/5", "0")  # ADR 0407's default
    fixed_only = rejected(rows, "97/100", "0", "0")
    # Assert: the floor is 13/200 x 2.3 = 0.1495 in rounds 1 and 3, 0.0065 in round 2
    assert BOUNDS[0] == ("99/100", "0", "13/200")
    late = [False, False, False, True]
    assert default == [False, False, True, True, False, *late, False, True, False]
    assert relative == [False, False, True, True, False, *late, False, False, False]
    assert fixed_only == [False, False, False, True, False, *late, False, False, False]

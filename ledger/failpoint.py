"""Fail points: named places where tests make the process crash; no-ops unless enabled.

``FEDLEDGER_FAILPOINT`` holds comma-separated specs ``name[@n][:action]``:
the point ``name`` fires on its n-th hit (default the first) and either
exits the process at once with :data:`EXIT_CODE` (``exit``, the default: a
crash, no cleanup, no flushing) or raises :class:`FailpointError`
(``raise``). Example: ``FEDLEDGER_FAILPOINT=store.save.after_batch@3``.
"""

from __future__ import annotations

import os

ENV = "FEDLEDGER_FAILPOINT"
EXIT_CODE = 86

_hits: dict[str, int] = {}


class FailpointError(RuntimeError):
    """Raised by a fail point whose action is ``raise``."""


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        target, _, action = item.strip().partition(":")
        point, _, nth = target.partition("@")
        if point != name:
            continue
        count = _hits.get(name, 0) + 1
        _hits[name] = count
        if count != (int(nth) if nth else 1):
            return
        if action in ("", "exit"):
            os._exit(EXIT_CODE)
        if action == "raise":
            raise FailpointError(f"fail point {name} hit {count}")
        raise ValueError(f"{ENV}: unknown action {action!r} for {name}")


def reset() -> None:
    """Forget hit counts (tests that reuse one process)."""
    _hits.clear()

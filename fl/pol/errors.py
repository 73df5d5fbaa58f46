"""Errors of the proof-of-learning package (recording raises them; verification reports them)."""

from __future__ import annotations

__all__ = ["MissingContent", "PolError"]


class PolError(ValueError):
    """A transcript cannot be recorded, or a PoL object is malformed."""


class MissingContent(PolError, KeyError):
    """A content id does not resolve in the sink (a ``KeyError``, as the chain's store raises)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "missing content"

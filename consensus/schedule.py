"""Proposer priorities per height, derived deterministically from the chain's validator sets.

The core's :class:`~consensus.core.ValidatorSet` carries CometBFT proposer priorities, which
depend on the whole history of the set (every height's increment and every power change).
They are not part of the ledger's state, so every node recomputes them the same way: the
genesis set enters with one increment, and the set of height h+1 is the set of height h
with the power changes between the ledger's sets of h and h+1 applied and one increment
(CometBFT's ``state.NextValidators`` rule). A restarted or syncing node rebuilds them from
the store; checkpoints (one per committed height, kept in memory and in the WAL's
``EndHeight`` record) keep that cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from consensus.core import ValidatorSet as CoreSet
from ledger.validators import ValidatorSet as LedgerSet

# ledger validator set signing height h, or None if unknown
SetsAt = Callable[[int], LedgerSet | None]


def _powers(vs: LedgerSet) -> dict[bytes, int]:
    return {v.address: v.power for v in vs.validators}


def changes_between(old: LedgerSet, new: LedgerSet) -> list[tuple[bytes, int]]:
    """(address, new power) for every validator whose power changed; 0 removes."""
    a, b = _powers(old), _powers(new)
    out = [(addr, p) for addr, p in b.items() if a.get(addr) != p]
    out += [(addr, 0) for addr in a if addr not in b]
    return sorted(out)


class ProposerSchedule:
    """Core validator sets (with priorities) for each height of one chain."""

    def __init__(self, initial_height: int, sets_at: SetsAt, keep: int = 64):
        self.initial_height = initial_height
        self.sets_at = sets_at
        self.keep = keep
        self._cache: dict[int, CoreSet] = {}

    def remember(self, height: int, vs: CoreSet) -> None:
        """Record a checkpoint (e.g. from the WAL after a restart)."""
        self._cache[height] = vs
        for h in sorted(self._cache)[: max(0, len(self._cache) - self.keep)]:
            if h != self.initial_height:
                del self._cache[h]

    def set_for(self, height: int) -> CoreSet:
        if height in self._cache:
            return self._cache[height]
        if height < self.initial_height:
            raise ValueError(f"no validator set before the initial height {self.initial_height}")
        # Roll forward from the nearest checkpoint below (the genesis set at worst).
        known = [h for h in self._cache if h < height]
        if known:
            h0 = max(known)
            cur = self._cache[h0]
        else:
            h0 = self.initial_height
            first = self._ledger(h0)
            cur = CoreSet.genesis((v.address, v.power) for v in first.validators)
            self.remember(h0, cur)
        prev = self._ledger(h0)
        for h in range(h0 + 1, height + 1):
            nxt = self._ledger(h)
            cur = cur.next_height(changes_between(prev, nxt))
            prev = nxt
            self.remember(h, cur)
        return cur

    def _ledger(self, height: int) -> LedgerSet:
        vs = self.sets_at(height)
        if vs is None:
            raise ValueError(f"the validator set of height {height} is not known yet")
        return vs

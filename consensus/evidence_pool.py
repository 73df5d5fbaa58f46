"""Pending evidence of misbehaviour, verified on entry, included by proposers until committed."""

from __future__ import annotations

from collections import OrderedDict

from ledger.chainstate import ChainState
from ledger.codec import encode
from ledger.errors import InvalidEvidenceError
from ledger.evidence import DuplicateVoteEvidence, Evidence, verify_duplicate_vote
from ledger.validators import ValidatorSet

MAX_PENDING = 1000


class EvidencePool:
    def __init__(self) -> None:
        self._pending: OrderedDict[bytes, Evidence] = OrderedDict()
        self._committed: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, ev: Evidence, chain_id: str, vset: ValidatorSet | None,
            state: ChainState) -> bool:
        """Verify and keep ``ev``; False if already known, raises InvalidEvidenceError if bad."""
        key = ev.dedup_key()
        if key in self._pending or key in self._committed:
            return False
        if not isinstance(ev, DuplicateVoteEvidence):
            raise InvalidEvidenceError(f"unsupported evidence type {type(ev).__name__}")
        if vset is None:
            raise InvalidEvidenceError(f"no validator set known for height {ev.height}")
        max_age = state.params.evidence.max_age_num_blocks
        if ev.height < state.height - max_age:
            raise InvalidEvidenceError(f"evidence of height {ev.height} is too old")
        verify_duplicate_vote(chain_id, ev, vset)
        self._pending[key] = ev
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        return True

    def pending(self, max_bytes: int) -> list[Evidence]:
        """Evidence for the next proposal, oldest first, within ``max_bytes`` encoded."""
        out: list[Evidence] = []
        size = 0
        for ev in self._pending.values():
            n = len(encode(ev))
            if size + n > max_bytes:
                break
            out.append(ev)
            size += n
        return out

    def mark_committed(self, evidence: tuple[Evidence, ...] | list[Evidence]) -> None:
        for ev in evidence:
            self._pending.pop(ev.dedup_key(), None)
            self._committed.add(ev.dedup_key())

    def prune(self, state: ChainState) -> None:
        """Drop evidence too old to be included any more."""
        max_age = state.params.evidence.max_age_num_blocks
        for key in [k for k, ev in self._pending.items() if ev.height < state.height - max_age]:
            del self._pending[key]

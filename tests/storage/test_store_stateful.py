"""Stateful Hypothesis test: random put/get/pin/unpin/gc/restart sequences against a dict model.

The model knows every object's bytes and pins. Pinned objects must always be
readable and exact; unpinned ones may have been evicted by the quota (then
NotFound), never returned wrong. A put must fail with QuotaExceeded exactly
when the pinned blocks plus the new object's blocks exceed the quota.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from storage.chunker import boundaries
from storage.cid import Cid, chunk_cid
from storage.errors import NotFound, NotPinned, QuotaExceeded
from storage.manifest import OCTET_STREAM, build_manifest
from storage.store import ContentStore

CS = 1024
QUOTA = 8 * CS
_rng = random.Random(7)
POOL = [_rng.randbytes(CS) for _ in range(6)]  # shared blocks make objects share chunks

payloads = st.builds(
    lambda parts, tail: b"".join(parts) + tail,
    st.lists(st.sampled_from(POOL), max_size=5),
    st.binary(max_size=40),
)
reasons = st.sampled_from(["global model t1 r2", "own submission", "pol checkpoint"])


def blocks_of(data: bytes) -> dict[bytes, int]:
    """multihash -> size of every block an object needs (its chunks and its manifest)."""
    spans = boundaries(len(data), CS)
    chunks = [(chunk_cid(data[s:e]), e - s) for s, e in spans]
    _, mbytes, mcid = build_manifest(chunks, media_type=OCTET_STREAM, chunk_size=CS)
    out = {c.multihash: size for c, size in chunks}
    out[mcid.multihash] = len(mbytes)
    return out


class StoreModel(RuleBasedStateMachine):
    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="fedledger-stateful-"))
        self.store = ContentStore(self.dir / "s", chunk_size=CS, quota_bytes=QUOTA)
        self.data: dict[Cid, bytes] = {}
        self.pins: dict[Cid, set[str]] = {}
        self.maybe: set[Cid] = set()  # unpinned: present or evicted

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pinned(self) -> list[Cid]:
        return [c for c, rs in self.pins.items() if rs]

    def _protected_blocks(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for c in self._pinned():
            out.update(blocks_of(self.data[c]))
        return out

    @rule(target=objects, data=payloads, pin=st.none() | reasons)
    def put(self, data: bytes, pin: str | None) -> object:
        need = self._protected_blocks()
        need.update(blocks_of(data))
        fits = sum(need.values()) <= QUOTA
        try:
            cid = self.store.put_bytes(data, pin=pin)
        except QuotaExceeded:
            assert not fits, "QuotaExceeded although pinned + new content fit"
            self.maybe.clear()  # eviction may have run before the failure was certain
            return multiple()
        assert fits, "put succeeded beyond the quota"
        self.data[cid] = data
        if pin is not None:
            self.pins.setdefault(cid, set()).add(pin)
        if not self.pins.get(cid):
            self.maybe.add(cid)
        return cid

    @rule(cid=objects)
    def get(self, cid: Cid) -> None:
        try:
            got = self.store.get_bytes(cid)
        except NotFound:
            assert not self.pins.get(cid), "a pinned object vanished"
            self.maybe.discard(cid)
            return
        assert got == self.data[cid]

    @rule(cid=objects, reason=reasons)
    def pin(self, cid: Cid, reason: str) -> None:
        try:
            self.store.pin(cid, reason)
        except NotFound:
            assert not self.pins.get(cid)
            self.maybe.discard(cid)
            return
        self.pins.setdefault(cid, set()).add(reason)
        self.maybe.discard(cid)

    @rule(cid=objects, reason=reasons)
    def unpin(self, cid: Cid, reason: str) -> None:
        try:
            self.store.unpin(cid, reason)
        except NotPinned:
            assert reason not in self.pins.get(cid, set())
            return
        self.pins[cid].remove(reason)
        if not self.pins[cid]:
            self.maybe.add(cid)

    @rule()
    def gc(self) -> None:
        self.store.gc()
        for c in self.data:
            if not self.pins.get(c):
                assert not self.store.has(c), "gc kept an unpinned object"
        self.maybe.clear()

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store = ContentStore(self.dir / "s", chunk_size=CS, quota_bytes=QUOTA)

    @rule(cid=consumes(objects))
    def forget(self, cid: Cid) -> None:
        """Drop a handle from the bundle (keeps the bundle small, nothing else)."""

    @invariant()
    def pinned_objects_are_complete_and_exact(self) -> None:
        for c in self._pinned():
            assert self.store.has(c)
        assert self.store.used_bytes <= QUOTA

    @invariant()
    def pins_match_model(self) -> None:
        got = {(p.cid, p.reason) for p in self.store.pins()}
        want = {(c, r) for c, rs in self.pins.items() for r in rs}
        assert got == want

    @invariant()
    def store_invariants_hold(self) -> None:
        report = self.store.verify_integrity(deep=False)
        assert report.ok and not report.meta_errors, report


StoreModel.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreModel.TestCase


class LongStoreModel(StoreModel):
    """The same machine, ten times the examples and longer runs (``-m slow``)."""


LongStoreModel.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLongStoreModel = pytest.mark.slow(LongStoreModel.TestCase)

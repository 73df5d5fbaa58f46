"""AppState: incremental roots equal fresh ones; existence and absence proofs; overlays."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import merkle_root
from ledger.state import AppState, LeafProof, Overlay, QueryResult, state_leaf, verify_query

keys = st.binary(min_size=1, max_size=6)
values = st.binary(max_size=8)
changesets = st.lists(st.dictionaries(keys, st.one_of(st.none(), values), max_size=80), max_size=4)


@settings(max_examples=60, deadline=None)
@given(initial=st.dictionaries(keys, values, max_size=40), changes=changesets)
def test_incremental_root_equals_fresh_root(
    initial: dict[bytes, bytes], changes: list[dict[bytes, bytes | None]]
) -> None:
    state = AppState(initial)
    model = dict(initial)
    _ = state.root  # warm the leaf cache so later states reuse it
    for ch in changes:
        prev = state
        state = state.apply(ch)
        for k, v in ch.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        fresh = AppState(model)
        assert state == fresh
        assert (
            state.root
            == fresh.root
            == merkle_root([state_leaf(k, model[k]) for k in sorted(model)])
        )
        assert list(state.items()) == sorted(model.items())
        assert prev.apply(state.diff(prev)) == state


@settings(max_examples=60, deadline=None)
@given(kv=st.dictionaries(keys, values, max_size=30), probe=keys)
def test_queries_prove_presence_and_absence(kv: dict[bytes, bytes], probe: bytes) -> None:
    state = AppState(kv)
    root = state.root
    for key in [probe, *list(kv)[:3]]:
        q = state.query(key, 7)
        assert q.value == kv.get(key)
        assert verify_query(root, q)
        # a lie about the value, or a dropped neighbour, never verifies
        lie = dataclasses.replace(q, value=None if q.value is not None else b"x")
        assert not verify_query(root, lie)
        if q.value is None and q.proofs:
            assert not verify_query(
                root, dataclasses.replace(q, proofs=q.proofs[:1] if len(q.proofs) == 2 else ())
            )


def test_absence_cannot_be_faked_with_non_adjacent_leaves() -> None:
    state = AppState({b"a": b"1", b"b": b"2", b"c": b"3"})
    qa, qc = state.query(b"a", 0), state.query(b"c", 0)
    fake = QueryResult(b"b", None, 0, (qa.proofs[0], qc.proofs[0]))
    assert not verify_query(state.root, fake)
    assert verify_query(state.root, state.query(b"bb", 0))
    tampered = dataclasses.replace(qa.proofs[0], value=b"9")
    assert not LeafProof.verify(tampered, state.root)


def test_overlay_nesting_commit_and_rollback() -> None:
    base = AppState({b"k1": b"a", b"k2": b"b", b"z": b"z"})
    block = Overlay(base)
    tx = block.child()
    tx.set(b"k3", b"c")
    tx.delete(b"k1")
    assert list(tx.items(b"k")) == [(b"k2", b"b"), (b"k3", b"c")]
    assert block.get(b"k3") is None
    tx.commit()
    failed = block.child()
    failed.set(b"k2", b"zzz")  # dropped without commit: rolled back
    assert block.changes() == {b"k3": b"c", b"k1": None}
    new = base.apply(block.changes())
    assert new.as_dict() == {b"k2": b"b", b"k3": b"c", b"z": b"z"}
    assert base.as_dict() == {b"k1": b"a", b"k2": b"b", b"z": b"z"}  # immutable

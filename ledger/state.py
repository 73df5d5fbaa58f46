"""The application state as a sorted key/value map whose Merkle root is the app hash.

Leaves are ``encode([key, value])`` in ascending key order (bytes order);
the app hash is the RFC 6962 root over them (:mod:`ledger.merkle`). Sorted
leaves give both kinds of proof: a key that exists is proven by its leaf, a
key that does not by the two adjacent leaves (consecutive indices whose keys
bracket it).

:class:`AppState` is immutable. Blocks and transactions write through
:class:`Overlay` views (nested, so a failing transaction is rolled back by
dropping its overlay) and the block's changes become a new ``AppState`` with
:meth:`AppState.apply`. Leaf hashes are cached and carried from state to
state, so a block costs one SHA-256 per changed key plus one per inner node
(O(n) inner hashing: fine for the small states of a consortium chain; see
docs/ledger.md for the path to an incremental tree).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ledger.codec import encode, record
from ledger.merkle import (
    MerkleProof,
    leaf_hash,
    merkle_proof,
    merkle_root_of_leaf_hashes,
    verify_proof,
)

_BULK = 64  # above this many inserted/deleted keys, re-sort instead of bisecting


def state_leaf(key: bytes, value: bytes) -> bytes:
    return encode([key, value])


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


class AppState:
    """An immutable sorted map bytes -> bytes with a cached Merkle root."""

    __slots__ = ("_kv", "_keys", "_leaves", "_root")

    def __init__(self, kv: Mapping[bytes, bytes] | None = None) -> None:
        self._kv: dict[bytes, bytes] = dict(kv or {})
        for k, v in self._kv.items():
            if not isinstance(k, bytes) or not isinstance(v, bytes):
                raise TypeError("state keys and values are bytes")
        self._keys: list[bytes] = sorted(self._kv)
        self._leaves: dict[bytes, bytes] = {}
        self._root: bytes | None = None

    # ---------------------------------------------------------------- reads

    def get(self, key: bytes) -> bytes | None:
        return self._kv.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._kv

    def __len__(self) -> int:
        return len(self._kv)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AppState) and self._kv == other._kv

    __hash__ = None  # type: ignore[assignment]

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, in key order."""
        keys = self._keys
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            k = keys[i]
            yield k, self._kv[k]
            i += 1

    def as_dict(self) -> dict[bytes, bytes]:
        return dict(self._kv)

    # ---------------------------------------------------------------- hashing

    def _leaf_hashes(self) -> list[bytes]:
        leaves = self._leaves
        out = []
        for k in self._keys:
            h = leaves.get(k)
            if h is None:
                h = leaves[k] = leaf_hash(state_leaf(k, self._kv[k]))
            out.append(h)
        return out

    @property
    def root(self) -> bytes:
        """The app hash."""
        if self._root is None:
            self._root = merkle_root_of_leaf_hashes(self._leaf_hashes())
        return self._root

    # ---------------------------------------------------------------- writes

    def apply(self, changes: Mapping[bytes, bytes | None]) -> AppState:
        """A new state with ``changes`` applied (``None`` deletes a key)."""
        new = AppState.__new__(AppState)
        kv = dict(self._kv)
        leaves = dict(self._leaves)
        inserted: list[bytes] = []
        deleted: list[bytes] = []
        for k, v in changes.items():
            leaves.pop(k, None)
            if v is None:
                if kv.pop(k, None) is not None:
                    deleted.append(k)
            else:
                if not isinstance(k, bytes) or not isinstance(v, bytes):
                    raise TypeError("state keys and values are bytes")
                if k not in kv:
                    inserted.append(k)
                kv[k] = v
        if len(inserted) + len(deleted) > _BULK:
            keys = sorted(kv)
        elif inserted or deleted:
            keys = list(self._keys)
            for k in deleted:
                del keys[bisect.bisect_left(keys, k)]
            for k in inserted:
                bisect.insort(keys, k)
        else:
            keys = self._keys  # never mutated in place, so sharing is safe
        new._kv, new._keys, new._leaves, new._root = kv, keys, leaves, None
        return new

    def diff(self, other: AppState) -> dict[bytes, bytes | None]:
        """Changes that turn ``other`` into ``self``."""
        out: dict[bytes, bytes | None] = {}
        mine, theirs = self._kv, other._kv
        for k, v in mine.items():
            ov = theirs.get(k)
            if ov is not v and ov != v:
                out[k] = v
        for k in theirs:
            if k not in mine:
                out[k] = None
        return out

    # ---------------------------------------------------------------- proofs

    def _leaf_proof(self, index: int) -> LeafProof:
        raw = [state_leaf(k, self._kv[k]) for k in self._keys]
        p = merkle_proof(raw, index)
        k = self._keys[index]
        return LeafProof(k, self._kv[k], p.index, p.total, p.aunts)

    def query(self, key: bytes, height: int) -> QueryResult:
        """The value under ``key`` (or None) with a proof against :attr:`root`."""
        keys = self._keys
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            return QueryResult(key, self._kv[key], height, (self._leaf_proof(i),))
        proofs = []
        if i > 0:
            proofs.append(self._leaf_proof(i - 1))
        if i < len(keys):
            proofs.append(self._leaf_proof(i))
        return QueryResult(key, None, height, tuple(proofs))


@record(80)
@dataclass(frozen=True)
class LeafProof:
    """Inclusion of the leaf ``encode([key, value])`` at ``index`` of ``total`` leaves."""

    key: bytes
    value: bytes
    index: int
    total: int
    aunts: tuple[bytes, ...]

    def verify(self, root: bytes) -> bool:
        leaf = state_leaf(self.key, self.value)
        proof = MerkleProof(self.index, self.total, leaf_hash(leaf), tuple(self.aunts))
        return verify_proof(root, leaf, proof)


@record(81)
@dataclass(frozen=True)
class QueryResult:
    """A state query answer: the value (None if absent) and its proof.

    ``height`` is the last block applied; the proof checks against that
    state's app hash, which is the ``app_hash`` in the header of ``height + 1``.
    Existence: one leaf proof for ``key``. Absence: the proofs of the adjacent
    leaves (one at an edge, none for an empty state).
    """

    key: bytes
    value: bytes | None
    height: int
    proofs: tuple[LeafProof, ...]


def verify_query(root: bytes, result: QueryResult) -> bool:
    """True iff ``result`` is a correct answer for its key under app hash ``root``."""
    ps = result.proofs
    if not all(p.verify(root) for p in ps):
        return False
    key = result.key
    if result.value is not None:
        return len(ps) == 1 and ps[0].key == key and ps[0].value == result.value
    if not ps:
        return root == merkle_root_of_leaf_hashes([])
    if len(ps) == 2:
        left, right = ps
        return (
            left.key < key < right.key
            and left.total == right.total
            and right.index == left.index + 1
        )
    if len(ps) == 1:
        p = ps[0]
        if p.key > key:
            return p.index == 0
        return p.key < key and p.index == p.total - 1
    return False


class Overlay:
    """A writable view over an :class:`AppState` or another overlay.

    Writes stay in the overlay until :meth:`commit` pushes them into the parent
    overlay; dropping an overlay discards them (transaction rollback).
    """

    __slots__ = ("_base", "_writes")

    def __init__(self, base: AppState | Overlay) -> None:
        self._base = base
        self._writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Merged (key, value) pairs under ``prefix``, in key order."""
        mine = {k: v for k, v in self._writes.items() if k.startswith(prefix)}
        if not mine:
            yield from self._base.items(prefix)
            return
        merged = dict(self._base.items(prefix))
        for k, v in mine.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        for k in sorted(merged):
            yield k, merged[k]

    def child(self) -> Overlay:
        return Overlay(self)

    def commit(self) -> None:
        """Push this overlay's writes into its parent overlay."""
        if not isinstance(self._base, Overlay):
            raise TypeError("commit() needs a parent overlay; use changes() for the root")
        self._base._writes.update(self._writes)
        self._writes = {}

    def changes(self) -> dict[bytes, bytes | None]:
        return dict(self._writes)

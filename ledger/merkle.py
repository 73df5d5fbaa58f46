"""RFC 6962 Merkle trees over byte leaves, with inclusion proofs.

Shared by the ledger (block data hash, app hash), the FL engine (data
commitments) and PoL; like :mod:`ledger.codec` it imports nothing else from
the project. Leaves are hashed as ``sha256(0x00 || leaf)`` and inner nodes as
``sha256(0x01 || left || right)``, so a leaf can never pass as an inner node
(the second-preimage attack on naive Merkle trees). The split point is the
largest power of two below n, as in RFC 6962 and CometBFT; the root of the
empty list is ``sha256(b"")``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MerkleProof", "leaf_hash", "merkle_root", "merkle_proof", "verify_proof"]


def _sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def leaf_hash(leaf: bytes) -> bytes:
    return _sha(b"\x00" + leaf)


def _inner(left: bytes, right: bytes) -> bytes:
    return _sha(b"\x01" + left + right)


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = _split(n)
    return _inner(_root_of_hashes(hashes[:k]), _root_of_hashes(hashes[k:]))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return _sha(b"")
    return _root_of_hashes([leaf_hash(x) for x in leaves])


def merkle_root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Root when the caller already holds the leaf hashes (large data sets)."""
    if not hashes:
        return _sha(b"")
    return _root_of_hashes(list(hashes))


@dataclass(frozen=True)
class MerkleProof:
    index: int
    total: int
    leaf_hash: bytes
    aunts: tuple[bytes, ...]  # sibling hashes from the leaf up to the root

    def to_plain(self) -> list[object]:
        return [self.index, self.total, self.leaf_hash, list(self.aunts)]


def _proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return _proof(hashes[:k], index) + [_root_of_hashes(hashes[k:])]
    return _proof(hashes[k:], index - k) + [_root_of_hashes(hashes[:k])]


def merkle_proof(leaves: Sequence[bytes], index: int) -> MerkleProof:
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} out of range for {len(leaves)} leaves")
    hashes = [leaf_hash(x) for x in leaves]
    return MerkleProof(index, len(leaves), hashes[index], tuple(_proof(hashes, index)))


def _root_from_aunts(index: int, total: int, h: bytes, aunts: Sequence[bytes]) -> bytes | None:
    if total == 1:
        return h if not aunts else None
    if not aunts:
        return None
    k = _split(total)
    if index < k:
        left = _root_from_aunts(index, k, h, aunts[:-1])
        return None if left is None else _inner(left, aunts[-1])
    right = _root_from_aunts(index - k, total - k, h, aunts[:-1])
    return None if right is None else _inner(aunts[-1], right)


def verify_proof(root: bytes, leaf: bytes, proof: MerkleProof) -> bool:
    if not 0 <= proof.index < proof.total or leaf_hash(leaf) != proof.leaf_hash:
        return False
    return _root_from_aunts(proof.index, proof.total, proof.leaf_hash, proof.aunts) == root

"""Data commitments: a Merkle root over per-sample hashes, and inclusion proofs for PoL.

Sample-hash encoding (version 1)::

    sample_hash(x, y) = SHA-256( b"fedledger/sample/v1" || encode([shape, "<f4", x_bytes, y]) )

where ``encode`` is the canonical msgpack of :mod:`ledger.codec`, ``shape`` is the
list of the sample's dimensions, ``x_bytes`` the sample's float32 values in
little-endian C order and ``y`` the integer label. The commitment to a client's
data set is the RFC 6962 Merkle root (:mod:`ledger.merkle`) whose leaves are the
32-byte sample hashes in the order of the client's local data set (position i of
the local data set is leaf i; training batch indices refer to the same positions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fl.data.dataset import Dataset
from ledger.codec import encode, sha256
from ledger.merkle import MerkleProof, merkle_proof, merkle_root, verify_proof

__all__ = [
    "SAMPLE_DOMAIN",
    "data_commitment",
    "sample_hash",
    "sample_hashes",
    "sample_proof",
    "verify_sample",
]

SAMPLE_DOMAIN = b"fedledger/sample/v1"


def sample_hash(x: npt.ArrayLike, y: int) -> bytes:
    arr = np.ascontiguousarray(np.asarray(x, dtype="<f4"))
    payload = encode([[int(d) for d in arr.shape], "<f4", arr.tobytes(order="C"), int(y)])
    return sha256(SAMPLE_DOMAIN + payload)


def sample_hashes(dataset: Dataset, indices: npt.ArrayLike | None = None) -> list[bytes]:
    idx = range(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    return [sample_hash(dataset.x[i], int(dataset.y[i])) for i in idx]


def data_commitment(dataset: Dataset, indices: npt.ArrayLike | None = None) -> bytes:
    """Merkle root over the sample hashes of ``dataset[indices]`` (all samples when None)."""
    return merkle_root(sample_hashes(dataset, indices))


def sample_proof(hashes: Sequence[bytes], position: int) -> MerkleProof:
    """Inclusion proof for leaf ``position`` given the committed list of sample hashes."""
    return merkle_proof(hashes, position)


def verify_sample(root: bytes, x: npt.ArrayLike, y: int, proof: MerkleProof) -> bool:
    """True when sample (x, y) is leaf ``proof.index`` of the commitment ``root``."""
    return verify_proof(root, sample_hash(x, y), proof)

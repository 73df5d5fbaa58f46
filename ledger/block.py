"""Blocks: the header, its id, and the commitments that bind the body to the header.

Block id = SHA-256 of the canonical encoding of the header. The header
commits to the body through ``data_hash`` (Merkle root over the tx hashes),
``evidence_hash`` (Merkle root over evidence hashes), ``last_commit_hash``
(hash of the encoded last commit) and ``pol_hash`` (hash of the encoded PoL
section); an absent commit or PoL section hashes as ``EMPTY_HASH``
(SHA-256 of no bytes, also the Merkle root of an empty list).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from ledger.codec import decode_record, encode, record, sha256
from ledger.crypto import ADDRESS_LEN
from ledger.evidence import Evidence
from ledger.merkle import merkle_root
from ledger.tx import Tx
from ledger.votes import Commit

EMPTY_HASH = sha256(b"")
HASH_LEN = 32
MAX_CHAIN_ID_LEN = 50


def check_chain_id(chain_id: str) -> None:
    if not 0 < len(chain_id) <= MAX_CHAIN_ID_LEN or not chain_id.isascii():
        raise ValueError(f"chain id must be 1..{MAX_CHAIN_ID_LEN} ASCII characters")
    if not chain_id.isprintable() or " " in chain_id:
        raise ValueError("chain id must be printable with no spaces")


@dataclass(frozen=True)
class PolSection:
    """Base of the proof-of-learning section a proposal carries (filled by the FL issue)."""


@record(30)
@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    time: int  # unix milliseconds
    last_block_id: bytes  # empty for the first block
    last_commit_hash: bytes
    data_hash: bytes
    validators_hash: bytes  # the set that signs this block
    next_validators_hash: bytes  # the set that signs the next block
    app_hash: bytes  # state after the previous block
    last_results_hash: bytes  # results of the previous block's txs
    evidence_hash: bytes
    pol_hash: bytes
    proposer_address: bytes

    def __post_init__(self) -> None:
        check_chain_id(self.chain_id)
        if self.height < 1:
            raise ValueError("height must be >= 1")
        if self.time < 0:
            raise ValueError("time must be >= 0")
        if len(self.last_block_id) not in (0, HASH_LEN):
            raise ValueError(f"last_block_id must be empty or {HASH_LEN} bytes")
        for name in (
            "last_commit_hash",
            "data_hash",
            "validators_hash",
            "next_validators_hash",
            "app_hash",
            "last_results_hash",
            "evidence_hash",
            "pol_hash",
        ):
            if len(getattr(self, name)) != HASH_LEN:
                raise ValueError(f"{name} must be {HASH_LEN} bytes")
        if len(self.proposer_address) != ADDRESS_LEN:
            raise ValueError(f"proposer_address must be {ADDRESS_LEN} bytes")

    @cached_property
    def id(self) -> bytes:
        """The block id: SHA-256 of the encoded header."""
        return sha256(encode(self))


def data_hash(txs: Sequence[Tx]) -> bytes:
    return merkle_root([tx.hash for tx in txs])


def evidence_hash(evidence: Sequence[Evidence]) -> bytes:
    return merkle_root([ev.hash for ev in evidence])


def commit_hash(commit: Commit | None) -> bytes:
    return EMPTY_HASH if commit is None else sha256(encode(commit))


def pol_hash(pol: PolSection | None) -> bytes:
    return EMPTY_HASH if pol is None else sha256(encode(pol))


@record(31)
@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[Tx, ...]
    evidence: tuple[Evidence, ...]
    last_commit: Commit | None  # None only in the chain's first block
    pol: PolSection | None

    @property
    def id(self) -> bytes:
        return self.header.id

    @property
    def height(self) -> int:
        return self.header.height

    @cached_property
    def encoded(self) -> bytes:
        return encode(self)

    @classmethod
    def decode(cls, data: bytes, max_bytes: int) -> Block:
        """Strictly decode a block of at most ``max_bytes`` (the params' block.max_bytes).

        Raises :class:`ledger.codec.CodecError` for anything else; the codec's
        4 MiB default is not used, so chains with larger blocks decode too.
        """
        return decode_record(data, cls, max_size=max_bytes)

    def check_body_hashes(self) -> str | None:
        """Name the first header commitment the body does not match (None when all do)."""
        h = self.header
        if h.data_hash != data_hash(self.txs):
            return "data_hash"
        if h.evidence_hash != evidence_hash(self.evidence):
            return "evidence_hash"
        if h.last_commit_hash != commit_hash(self.last_commit):
            return "last_commit_hash"
        if h.pol_hash != pol_hash(self.pol):
            return "pol_hash"
        return None

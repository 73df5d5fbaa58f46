"""The consensus write-ahead log: the node's own signed messages, fsynced before they leave.

File format (``data/cs.wal``): a sequence of records ``u32 length | u32 crc32 | payload``,
payload = canonical msgpack of a :class:`WalRecord`. A crash can leave a torn last record;
:meth:`WAL.open` reads up to the first record whose length or CRC does not check out and
truncates the rest (reported), so a damaged tail never stops the node.

What is logged: every input fed to the core at the current height (verified messages of
other validators, fired timeouts, validity verdicts, the block this node built), written
without a sync, and every message this node signed, written with an fsync before it is
sent; an ``EndHeight`` marker after each commit. The core is deterministic, so replaying
a height's records through it on restart rebuilds the exact state it had — locks
included — and the node resumes without signing anything new for steps it already signed
(the privval guard would refuse anyway).

After ``EndHeight(h)`` the log is rotated to hold only that marker (atomic rename), so it
never grows beyond one height.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from consensus.messages import ConsensusMessage, ProposalMessage, VoteMessage
from ledger.block import Block
from ledger.codec import CodecError, decode_record, encode, record
from ledger.failpoint import failpoint

_HEADER = struct.Struct(">II")
MAX_RECORD = 8 * 1024 * 1024


class WalRecord:
    """Base of everything the WAL holds."""


@record(250)
@dataclass(frozen=True)
class WalReceived(WalRecord):
    """A verified message of another validator, as fed to the core."""

    message: ConsensusMessage


@record(251)
@dataclass(frozen=True)
class WalOwn(WalRecord):
    """A message this node signed; fsynced before it is sent."""

    message: ConsensusMessage


@record(252)
@dataclass(frozen=True)
class WalTimeout(WalRecord):
    kind: int
    height: int
    round: int


@record(253)
@dataclass(frozen=True)
class WalVerdict(WalRecord):
    height: int
    round: int
    value_id: bytes
    valid: bool


@record(254)
@dataclass(frozen=True)
class WalValue(WalRecord):
    """The block this node built when it was asked for a value (getValue())."""

    height: int
    round: int
    block: Block


@record(258)
@dataclass(frozen=True)
class WalEndHeight(WalRecord):
    """Height committed; carries the proposer-priority checkpoint of the next height."""

    height: int
    next_validators: tuple[tuple[bytes, int, int], ...]  # (address, power, priority)
    next_proposer: bytes | None


class WAL:
    """Append-only, CRC-checked, fsynced log of the node's own consensus messages."""

    def __init__(self, path: Path, log: object = None):
        self.path = path
        self.log = log
        self.records: list[WalRecord] = []
        self.truncated_bytes = 0
        self._fd = -1

    def open(self) -> list[WalRecord]:
        """Read the valid prefix (truncating a torn tail) and open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        records, good = _parse(data)
        if good < len(data):
            self.truncated_bytes = len(data) - good
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        self.records = records
        self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        return records

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append(self, rec: WalRecord, sync: bool = False) -> None:
        """Append; with ``sync`` return only once it (and everything before it) is durable.

        Inputs are appended without a sync; the node's own messages with one. One file, so
        the fsync of an own message also makes every input that led to it durable.
        """
        payload = encode(rec)
        if len(payload) > MAX_RECORD:
            raise ValueError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD}")
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        if sync:
            failpoint("wal.before_write")
        os.write(self._fd, frame)
        if sync:
            os.fsync(self._fd)
            failpoint("wal.after_write")
        self.records.append(rec)

    def end_height(self, rec: WalEndHeight) -> None:
        """Mark ``rec.height`` done and rotate: the new log holds only this marker."""
        payload = encode(rec)
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.write(fd, frame)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.close()
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self.records = [rec]

    def records_for_height(self, height: int) -> list[WalRecord]:
        """Records of ``height`` in log order (what a restart replays)."""
        return [r for r in self.records if _height_of(r) == height]

    def last_end_height(self) -> WalEndHeight | None:
        ends = [r for r in self.records if isinstance(r, WalEndHeight)]
        return ends[-1] if ends else None


def _height_of(rec: WalRecord) -> int:
    if isinstance(rec, (WalReceived, WalOwn)):
        msg = rec.message
        if isinstance(msg, ProposalMessage):
            return msg.proposal.height
        if isinstance(msg, VoteMessage):
            return msg.vote.height
        return -1
    if isinstance(rec, (WalTimeout, WalVerdict, WalValue)):
        return rec.height
    return -1


def _parse(data: bytes) -> tuple[list[WalRecord], int]:
    """Records of the valid prefix and its length in bytes."""
    out: list[WalRecord] = []
    pos = 0
    for rec, end in _iter(data):
        out.append(rec)
        pos = end
    return out, pos


def _iter(data: bytes) -> Iterator[tuple[WalRecord, int]]:
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if length > MAX_RECORD or end > len(data):
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return
        try:
            rec = decode_record(payload, WalRecord, max_size=MAX_RECORD)  # type: ignore[type-abstract]
        except CodecError:
            return
        yield rec, end
        pos = end

"""The content-sink interface PoL stores checkpoints, transcripts and reveals through."""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from fl.pol.errors import MissingContent

__all__ = ["ContentSink", "MemorySink"]


@runtime_checkable
class ContentSink(Protocol):
    """Content-addressed bytes: the chain wraps its content store (CIDv1 bytes) in one.

    ``put`` must be deterministic (the same bytes give the same id) because transcripts
    compare ids; ``get`` raises ``KeyError`` (or :class:`MissingContent`) when the id is unknown.
    """

    def put(self, data: bytes) -> bytes: ...

    def get(self, cid: bytes) -> bytes: ...


class MemorySink:
    """In-memory sink for tests and benchmarks: the id is the SHA-256 of the data."""

    def __init__(self) -> None:
        self._objects: dict[bytes, bytes] = {}

    def put(self, data: bytes) -> bytes:
        cid = hashlib.sha256(data).digest()
        self._objects[cid] = bytes(data)
        return cid

    def get(self, cid: bytes) -> bytes:
        if not isinstance(cid, (bytes, bytearray)):
            raise MissingContent(f"content id must be bytes, got {type(cid).__name__}")
        try:
            return self._objects[bytes(cid)]
        except KeyError as e:
            raise MissingContent(f"content {bytes(cid).hex()[:16]}... not found") from e

    def delete(self, cid: bytes) -> None:
        """Drop an object (tests: a checkpoint that does not resolve)."""
        self._objects.pop(bytes(cid), None)

    def replace(self, cid: bytes, data: bytes) -> None:
        """Store ``data`` under an id it does not hash to (tests: a corrupted store)."""
        self._objects[bytes(cid)] = bytes(data)

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, (bytes, bytearray)) and bytes(cid) in self._objects

    @property
    def total_bytes(self) -> int:
        return sum(len(v) for v in self._objects.values())

"""PoL content sinks over the node's content store, usable from a training worker thread.

Training and verification run in worker threads (torch blocks), while the content store
belongs to the trio thread. So a trainer's sink only *names* each object with the CID the
store will give it and buffers the bytes; the trio side writes them afterwards. A
verifier prefetches every object a transcript refers to, then verifies against memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fl.pol import MissingContent
from storage.cid import parse_cid
from storage.tensors import bytes_cid


class BufferedSink:
    """Names objects by their content-store CID; keeps the bytes until :meth:`flush`."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.objects: dict[bytes, bytes] = {}

    def put(self, data: bytes) -> bytes:
        cid = bytes(bytes_cid(bytes(data), chunk_size=self.chunk_size))
        self.objects[cid] = bytes(data)
        return cid

    def get(self, cid: bytes) -> bytes:
        try:
            return self.objects[bytes(cid)]
        except KeyError:
            raise MissingContent(f"object {parse_cid(cid)} is not in this sink") from None

    def flush(self, store: Any, pin: str | None = None) -> list[bytes]:
        """Write every buffered object into ``store`` (trio thread); returns their CIDs."""
        out = []
        for cid, data in self.objects.items():
            if store.has(cid):  # e.g. the round's global model, stored under its own CID
                if pin is not None:
                    store.pin(cid, pin)
                out.append(cid)
                continue
            got = bytes(store.put_bytes(data, chunk_size=self.chunk_size, pin=pin))
            if got != cid:  # the store and bytes_cid disagree: a bug, never silently
                raise RuntimeError(f"content store named an object {got.hex()}, expected "
                                   f"{cid.hex()}")
            out.append(cid)
        return out


class PrefetchedSink:
    """Read-only objects fetched in advance (for verification in a worker thread)."""

    def __init__(self, objects: dict[bytes, bytes] | None = None) -> None:
        self.objects = dict(objects or {})

    def add(self, cid: bytes, data: bytes) -> None:
        self.objects[bytes(cid)] = data

    def put(self, data: bytes) -> bytes:
        raise MissingContent("a verification sink is read-only")

    def get(self, cid: bytes) -> bytes:
        try:
            return self.objects[bytes(cid)]
        except KeyError:
            raise MissingContent(f"object {cid.hex()[:16]} was not fetched") from None

    def missing(self, cids: Iterable[bytes]) -> list[bytes]:
        return [c for c in cids if bytes(c) not in self.objects]

"""Exceptions raised by the content store and the exchange protocol."""

from __future__ import annotations

__all__ = [
    "BadPath",
    "ChunkUnavailable",
    "ContentTooLarge",
    "CorruptContent",
    "FetchError",
    "InvalidCID",
    "InvalidManifest",
    "NotFound",
    "NotPinned",
    "QuotaExceeded",
    "StorageError",
    "StoreClosed",
]


class StorageError(Exception):
    """Base class: every error the storage package raises on purpose."""


class InvalidCID(StorageError, ValueError):
    """A content id that is malformed or uses a codec/hash this node does not accept."""


class InvalidManifest(StorageError, ValueError):
    """Manifest bytes that do not decode, or describe an impossible layout."""


class NotFound(StorageError, KeyError):
    """The content (or one of its chunks) is not in the local store."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep messages readable
        return str(self.args[0]) if self.args else "not found"


class CorruptContent(StorageError):
    """A block on disk no longer matches its hash; it has been quarantined."""


class QuotaExceeded(StorageError):
    """Pinned (or in-flight) content leaves no room for the write under the byte quota."""

    def __init__(self, message: str, *, needed: int, quota: int, protected: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.quota = quota
        self.protected = protected


class ContentTooLarge(StorageError):
    """Content (or a single block) is larger than a configured limit."""


class NotPinned(StorageError, KeyError):
    """`pin_rm` of a (cid, reason) pair that is not pinned."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not pinned"


class StoreClosed(StorageError):
    """The store was used after `close()`."""


class FetchError(StorageError):
    """The exchange could not fetch content from any peer."""


class ChunkUnavailable(FetchError):
    """No reachable peer has (or will serve) a block the fetch needs."""


class BadPath(StorageError, ValueError):
    """A local path given to put/get is missing, not a regular file, or not writable."""

"""fedledger content store: CIDs, chunking, manifests, LevelDB store with pins/GC/quota, exchange."""

from storage.cid import Cid, Codec, chunk_cid, manifest_cid, parse_cid
from storage.errors import (
    BadPath,
    ChunkUnavailable,
    ContentTooLarge,
    CorruptContent,
    FetchError,
    InvalidCID,
    InvalidManifest,
    NotFound,
    NotPinned,
    QuotaExceeded,
    StorageError,
    StoreClosed,
)
from storage.store import ContentStat, ContentStore, GcResult, PinInfo

__all__ = [
    "BadPath",
    "ChunkUnavailable",
    "Cid",
    "Codec",
    "ContentStat",
    "ContentStore",
    "ContentTooLarge",
    "CorruptContent",
    "FetchError",
    "GcResult",
    "InvalidCID",
    "InvalidManifest",
    "NotFound",
    "NotPinned",
    "PinInfo",
    "QuotaExceeded",
    "StorageError",
    "StoreClosed",
    "chunk_cid",
    "manifest_cid",
    "parse_cid",
]

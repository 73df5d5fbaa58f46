"""Plain functions the operator RPC and the CLI call: JSON-ready results, storage exceptions on error.

Each function takes the node's `ContentStore` (and `Exchange` for network
fetches) and returns plain dicts/lists of str/int/bool, so the RPC layer can
return them as-is. Errors are `storage.errors` exceptions; `error_kind` names
them for RPC error objects.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.cid import parse_cid
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
)
from storage.manifest import OCTET_STREAM, SAFETENSORS_MEDIA_TYPE
from storage.store import ContentStore

__all__ = [
    "content_fetch",
    "content_gc",
    "content_get",
    "content_iter",
    "content_put",
    "content_stat",
    "content_verify",
    "error_kind",
    "pin_add",
    "pin_ls",
    "pin_rm",
]


def _media_type(path: Path, media_type: str | None) -> str:
    if media_type:
        return media_type
    if path.suffix == ".safetensors":
        return SAFETENSORS_MEDIA_TYPE
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or OCTET_STREAM


def content_put(
    store: ContentStore,
    path: str | os.PathLike[str],
    *,
    media_type: str | None = None,
    pin: str | None = None,
) -> dict[str, Any]:
    """Add a local file (operator-only); returns its stat. ``.safetensors`` files get tensor-aligned chunks."""
    p = Path(path)
    if not p.is_file():
        raise BadPath(f"{p} is not a readable regular file")
    mt = _media_type(p, media_type)
    try:
        if mt == SAFETENSORS_MEDIA_TYPE:
            from storage.tensors import put_safetensors_file

            cid = put_safetensors_file(store, p, pin=pin)
        else:
            with open(p, "rb") as f:
                cid = store.put_stream(f, media_type=mt, pin=pin)
    except OSError as e:
        raise BadPath(f"cannot read {p}: {e.strerror or e}") from e
    return store.stat(cid).to_json()


def content_stat(store: ContentStore, cid: str) -> dict[str, Any]:
    return store.stat(parse_cid(cid)).to_json()


def content_get(store: ContentStore, cid: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the object to ``path`` (atomically, hash-verified); returns cid, path and size."""
    c = parse_cid(cid)
    dest = Path(path)
    if dest.is_dir():
        dest = dest / str(c)
    if not dest.parent.is_dir():
        raise BadPath(f"directory {dest.parent} does not exist")
    try:
        size = store.read_to_path(c, dest)
    except OSError as e:
        raise BadPath(f"cannot write {dest}: {e.strerror or e}") from e
    return {"cid": str(c), "path": str(dest), "size": size}


def content_iter(store: ContentStore, cid: str) -> Iterator[bytes]:
    """The object's bytes chunk by chunk (each verified), for streaming RPC responses."""
    c = parse_cid(cid)
    if c.is_manifest:
        store.get_manifest(c)  # fail before the first byte if the object is unknown
    return store.iter_chunks(c)


def pin_add(store: ContentStore, cid: str, reason: str) -> dict[str, Any]:
    c = parse_cid(cid)
    added = store.pin(c, reason)
    return {"cid": str(c), "reason": reason, "added": added}


def pin_rm(store: ContentStore, cid: str, reason: str | None = None) -> dict[str, Any]:
    c = parse_cid(cid)
    return {"cid": str(c), "removed": store.unpin(c, reason)}


def pin_ls(store: ContentStore, cid: str | None = None) -> list[dict[str, Any]]:
    return [p.to_json() for p in store.pins(parse_cid(cid) if cid is not None else None)]


def content_gc(store: ContentStore) -> dict[str, int]:
    return store.gc().to_json()


def content_verify(store: ContentStore, *, deep: bool = True) -> dict[str, Any]:
    """Operator fsck: re-hash every block (quarantining corrupt ones) and check invariants."""
    r = store.verify_integrity(deep=deep)
    return {
        "ok": r.ok,
        "blocks": r.blocks,
        "corrupt": r.corrupt,
        "incomplete_manifests": r.incomplete_manifests,
        "dangling_pins": r.dangling_pins,
        "meta_errors": r.meta_errors,
    }


async def content_fetch(
    exchange: Any, cid: str, *, pin: str | None = None, progress: Any = None
) -> dict[str, Any]:
    """Fetch from peers (see `Exchange.fetch`), then stat."""
    c = await exchange.fetch(parse_cid(cid), pin=pin, progress=progress)
    return exchange.store.stat(c).to_json()


_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidCID, "invalid_cid"),
    (InvalidManifest, "invalid_manifest"),
    (BadPath, "bad_path"),
    (NotPinned, "not_pinned"),
    (NotFound, "not_found"),
    (QuotaExceeded, "quota_exceeded"),
    (ContentTooLarge, "too_large"),
    (CorruptContent, "corrupt"),
    (ChunkUnavailable, "unavailable"),
    (FetchError, "fetch_failed"),
    (StorageError, "storage_error"),
    (ValueError, "invalid_params"),
)


def error_kind(exc: BaseException) -> str:
    """A stable short name for an exception from these functions (for RPC error data)."""
    for cls, kind in _KINDS:
        if isinstance(exc, cls):
            return kind
    return "internal"

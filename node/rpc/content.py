"""Content store RPC methods: put/get/read/stat/fetch, pins and GC over `storage.api`.

Operator-only (bearer token): everything that touches the node's own
filesystem (``content_put`` reads a path, ``content_get`` writes one), pulls
bytes from peers (``content_fetch``), or changes what the node keeps
(``pin_add``, ``pin_rm``, ``content_gc``, ``content_verify``). Public reads:
``content_stat``, ``pin_ls`` and ``content_read`` (a range of verified chunks
as base64, at most :data:`MAX_READ_BYTES` per call, for clients on other
machines; the node's serving policy is asked with peer None and may refuse).

Storage errors become JSON-RPC errors whose ``data`` is ``{"kind", "detail"}``
with ``kind`` from :func:`storage.api.error_kind`: -32602 for bad CIDs, paths
and params, -32002 for content or pins the node does not have, -32000 for
quota/size limits and corruption, -32004 when no peer serves the content,
-32003 when a fetch misses its deadline.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.content import ExchangeNotReady, FetchTimeout
from node.rpc.jsonrpc import (
    INVALID_PARAMS,
    NOT_FOUND,
    SERVER_ERROR,
    TIMEOUT,
    UNAUTHORIZED,
    UNAVAILABLE,
    Param,
    Registry,
    RPCError,
    invalid_params,
)
from storage import api
from storage.cid import Cid, parse_cid
from storage.errors import ContentTooLarge, StorageError
from storage.store import MAX_PIN_REASON_BYTES

if TYPE_CHECKING:
    from node.daemon import Node

__all__ = ["MAX_READ_BYTES", "register_content", "storage_rpc_error"]

# One content_read answer: 4 MiB of data (about 5.6 MB of base64 JSON); one block of
# any size the protocol allows always fits.
MAX_READ_BYTES = 4 * 1024 * 1024
MAX_FETCH_TIMEOUT_S = 24 * 3600
MAX_FETCH_PEERS = 64
_CID_LEN = 128  # storage.cid refuses longer text anyway; bound it before parsing
_PATH_LEN = 4096

_CODES: dict[str, tuple[int, str]] = {
    "invalid_cid": (INVALID_PARAMS, "Invalid CID"),
    "invalid_manifest": (INVALID_PARAMS, "Invalid manifest"),
    "bad_path": (INVALID_PARAMS, "Bad path"),
    "invalid_params": (INVALID_PARAMS, "Invalid params"),
    "not_found": (NOT_FOUND, "Content not found"),
    "not_pinned": (NOT_FOUND, "Not pinned"),
    "quota_exceeded": (SERVER_ERROR, "Quota exceeded"),
    "too_large": (SERVER_ERROR, "Content too large"),
    "corrupt": (SERVER_ERROR, "Corrupt content"),
    "unavailable": (UNAVAILABLE, "Content unavailable"),
    "fetch_failed": (UNAVAILABLE, "Fetch failed"),
    "storage_error": (SERVER_ERROR, "Storage error"),
}


def storage_rpc_error(exc: BaseException) -> RPCError:
    """The JSON-RPC error for an exception from `storage.api` (or the content service)."""
    if isinstance(exc, FetchTimeout):
        return RPCError(TIMEOUT, "Fetch timed out", {"kind": "timeout", "detail": str(exc)})
    if isinstance(exc, ExchangeNotReady):
        return RPCError(
            UNAVAILABLE, "Exchange not running", {"kind": "unavailable", "detail": str(exc)}
        )
    kind = api.error_kind(exc)
    code, message = _CODES.get(kind, (SERVER_ERROR, "Storage error"))
    data: dict[str, Any] = {"kind": kind, "detail": str(exc)}
    for extra in ("needed", "quota", "protected"):  # QuotaExceeded's numbers
        if hasattr(exc, extra):
            data[extra] = getattr(exc, extra)
    return RPCError(code, message, data)


_Handler = Callable[..., Awaitable[Any]]


def _storage_errors(fn: _Handler) -> _Handler:
    """Turn storage (and param ValueError) exceptions into RPC errors; others stay internal."""

    @functools.wraps(fn)
    async def wrapper(**kwargs: Any) -> Any:
        try:
            return await fn(**kwargs)
        except RPCError:
            raise
        except (StorageError, ValueError) as e:
            raise storage_rpc_error(e) from None

    return wrapper


def _absolute(path: str, name: str = "path") -> Path:
    if "\x00" in path:
        raise invalid_params(f"{name}: contains a NUL byte")
    p = Path(path)
    if not p.is_absolute():
        raise invalid_params(
            f"{name}: must be absolute (it is resolved on the node's machine, not the client's)"
        )
    return p


def _cid_param(name: str = "cid", required: bool = True) -> Param:
    return Param(name, "str", required=required, max_len=_CID_LEN)


def register_content(reg: Registry, node: Node) -> None:
    svc = node.content

    @_storage_errors
    async def content_put(
        path: str, media_type: str | None = None, pin: str | None = None
    ) -> dict[str, Any]:
        """Add a file on the node's machine (absolute path) to the store; returns its stat."""
        p = _absolute(path)
        try:
            size = p.stat().st_size if p.is_file() else None
        except OSError:
            size = None  # api.content_put names the problem
        if size is not None and size > svc.store.max_content_bytes:
            raise ContentTooLarge(
                f"{p} has {size} bytes, over storage.max_object_bytes = "
                f"{svc.store.max_content_bytes}"
            )
        return api.content_put(svc.store, p, media_type=media_type, pin=pin)

    @_storage_errors
    async def content_stat(cid: str) -> dict[str, Any]:
        """Size, chunks present, pins and media type of a stored object."""
        return api.content_stat(svc.store, cid)

    @_storage_errors
    async def content_get(cid: str, path: str) -> dict[str, Any]:
        """Write a stored object to an absolute path on the node's machine (atomic, verified)."""
        return api.content_get(svc.store, cid, _absolute(path))

    @_storage_errors
    async def content_read(cid: str, chunk: int = 0, count: int | None = None) -> dict[str, Any]:
        """Verified chunks ``chunk``.. of an object as base64, at most 4 MiB per call."""
        c = parse_cid(cid)
        if not svc.may_read(c):
            raise RPCError(
                UNAUTHORIZED,
                "Forbidden",
                {
                    "kind": "forbidden",
                    "detail": f"the serving policy does not let RPC clients "
                    f"read {c}; operators can use content_get",
                },
            )
        loaded: dict[Cid, bytes] = {}
        if c.is_manifest:
            m = svc.store.get_manifest(c)
            refs = [(r.chunk_cid, r.size) for r in m.chunks]
            total, media_type = m.total_size, m.media_type
        else:
            loaded[c] = block = svc.store.get_block(c)
            refs = [(c, len(block))]
            total, media_type = len(block), None
        if chunk > len(refs) or (chunk == len(refs) and refs):
            raise invalid_params(f"chunk: {chunk} is past the last chunk ({len(refs) - 1})")
        offset = sum(size for _, size in refs[:chunk])
        parts: list[bytes] = []
        got = 0
        i = chunk
        while i < len(refs) and (count is None or i - chunk < count):
            ref, size = refs[i]
            if parts and got + size > MAX_READ_BYTES:
                break
            data = loaded.get(ref) or svc.store.get_block(ref)
            parts.append(data)
            got += len(data)
            i += 1
        return {
            "cid": str(c),
            "media_type": media_type,
            "size": total,
            "chunks": len(refs),
            "chunk": chunk,
            "count": i - chunk,
            "offset": offset,
            "length": got,
            "next": i if i < len(refs) else None,
            "data": base64.b64encode(b"".join(parts)).decode(),
        }

    @_storage_errors
    async def content_fetch(
        cid: str,
        pin: str | None = None,
        timeout_s: int | None = None,
        peers: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Fetch an object from connected peers (or ``peers``) into the store; returns its stat."""
        c = parse_cid(cid)
        peer_ids = _peer_ids(peers) if peers is not None else None
        stats = (await svc.wait_ready()).client.stats
        before = stats.bytes_fetched  # exact unless another fetch runs at the same time
        started = time.monotonic()
        await svc.fetch(c, pin=pin, peers=peer_ids, timeout_s=timeout_s)
        out = api.content_stat(svc.store, str(c))
        out["fetched_bytes"] = stats.bytes_fetched - before
        out["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        return out

    @_storage_errors
    async def pin_add(cid: str, reason: str) -> dict[str, Any]:
        """Pin a stored object for a reason (GC and eviction keep it and its chunks)."""
        return api.pin_add(svc.store, cid, reason)

    @_storage_errors
    async def pin_rm(cid: str, reason: str | None = None) -> dict[str, Any]:
        """Remove one pin reason of a CID, or all of them when no reason is given."""
        return api.pin_rm(svc.store, cid, reason)

    @_storage_errors
    async def pin_ls(cid: str | None = None) -> dict[str, Any]:
        """Pins (cid, reason, time), of one CID or all."""
        pins = api.pin_ls(svc.store, cid)
        return {"pins": pins, "count": len(pins)}

    @_storage_errors
    async def content_gc() -> dict[str, Any]:
        """Delete every unpinned block; returns blocks removed, bytes freed, bytes used."""
        res: dict[str, Any] = api.content_gc(svc.store)
        res["quota_bytes"] = svc.store.quota_bytes
        return res

    @_storage_errors
    async def content_verify(deep: bool = True) -> dict[str, Any]:
        """fsck: re-hash every block (quarantining corrupt ones) and check the invariants."""
        return api.content_verify(svc.store, deep=deep)

    reason = Param("reason", "str", max_len=MAX_PIN_REASON_BYTES)
    reg.add(
        "content_put",
        content_put,
        [
            Param("path", "str", required=True, max_len=_PATH_LEN),
            Param("media_type", "str", max_len=127),
            Param("pin", "str", max_len=MAX_PIN_REASON_BYTES),
        ],
        operator=True,
    )
    reg.add("content_stat", content_stat, [_cid_param()])
    reg.add(
        "content_get",
        content_get,
        [
            _cid_param(),
            Param("path", "str", required=True, max_len=_PATH_LEN),
        ],
        operator=True,
    )
    reg.add(
        "content_read",
        content_read,
        [
            _cid_param(),
            Param("chunk", "int", minimum=0, maximum=2**31),
            Param("count", "int", minimum=1, maximum=2**31),
        ],
    )
    reg.add(
        "content_fetch",
        content_fetch,
        [
            _cid_param(),
            Param("pin", "str", max_len=MAX_PIN_REASON_BYTES),
            Param("timeout_s", "int", minimum=1, maximum=MAX_FETCH_TIMEOUT_S),
            Param("peers", "list"),
        ],
        operator=True,
    )
    reg.add(
        "pin_add",
        pin_add,
        [_cid_param(), Param("reason", "str", required=True, max_len=MAX_PIN_REASON_BYTES)],
        operator=True,
    )
    reg.add("pin_rm", pin_rm, [_cid_param(), reason], operator=True)
    reg.add("pin_ls", pin_ls, [_cid_param(required=False)])
    reg.add("content_gc", content_gc, operator=True)
    reg.add("content_verify", content_verify, [Param("deep", "bool")], operator=True)


def _peer_ids(peers: list[Any]) -> list[Any]:
    """Base58 libp2p peer ids, checked here so a typo is -32602 rather than a fetch failure."""
    from libp2p.peer.id import ID

    if len(peers) > MAX_FETCH_PEERS:
        raise invalid_params(f"peers: at most {MAX_FETCH_PEERS}")
    out = []
    for i, p in enumerate(peers):
        if not isinstance(p, str) or not p or len(p) > 128:
            raise invalid_params(f"peers[{i}]: expected a base58 peer id string")
        try:
            out.append(ID.from_base58(p))
        except Exception:  # base58 / multihash errors of several types
            raise invalid_params(f"peers[{i}]: {p!r:.60} is not a valid peer id") from None
    return out

"""The LevelDB (plyvel) content store: blocks by multihash, manifests, pins, GC, quota, LRU eviction.

Key layout (one LevelDB per store; every key starts with a one-byte table tag):

=====================================  =========================================
``B`` + multihash                       block bytes (a chunk or a manifest)
``M`` + multihash                       block meta: kind, size, LRU stamp (struct)
``A`` + stamp(u64 BE) + multihash       LRU index, oldest first
``U`` + chunk mh + manifest mh          "chunk is used by manifest" (cascade on delete)
``P`` + binary CID + reason (UTF-8)     a pin; value = pin time in ms (u64 BE)
``Q`` + multihash                       quarantine record of a corrupt block
``V``                                   schema version
=====================================  =========================================

Crash safety (ADR 0301): a write never makes a manifest visible before every
one of its chunks is durable. Chunks are written first (plain batches, no
fsync), then one synced batch writes the manifest, its ``U`` index entries and
its pins. LevelDB applies batches atomically and replays its single log in
order, so after any crash the manifest batch is either absent or preceded by
all chunk batches. Deletions run in the opposite order: a chunk is deleted in
the same batch as every manifest that uses it, and GC deletes manifests before
chunks. The only way a manifest loses a chunk is disk corruption, which
quarantines the chunk and leaves the manifest marked incomplete for refetch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import plyvel
import structlog

from storage.chunker import (
    DEFAULT_CHUNK_SIZE,
    MAX_BLOCK_SIZE,
    check_chunk_size,
    rechunk,
)
from storage.cid import Cid, Codec, chunk_cid, manifest_cid, parse_cid, split_cid
from storage.errors import (
    ContentTooLarge,
    CorruptContent,
    InvalidManifest,
    NotFound,
    NotPinned,
    QuotaExceeded,
    StoreClosed,
)
from storage.failpoints import failpoint
from storage.manifest import (
    OCTET_STREAM,
    Manifest,
    TensorInfo,
    build_manifest,
    decode_manifest,
)

__all__ = [
    "DEFAULT_MAX_CONTENT_BYTES",
    "ContentStat",
    "ContentStore",
    "GcResult",
    "Hold",
    "IntegrityReport",
    "PinInfo",
]

log = structlog.get_logger("fedledger.storage")

DEFAULT_MAX_CONTENT_BYTES = 16 * 1024**3
MAX_PIN_REASON_BYTES = 256
_SCHEMA = b"fedledger-content/1"
_KIND_CHUNK = 0
_KIND_MANIFEST = 1
_META = struct.Struct(">BQQ")  # kind, size, LRU stamp
_U64 = struct.Struct(">Q")
_CHUNK_BATCH_BYTES = 8 * 1024 * 1024
_EVICT_SLACK = 64 * 1024 * 1024


@dataclass(frozen=True)
class PinInfo:
    cid: Cid
    reason: str
    pinned_at_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"cid": str(self.cid), "reason": self.reason, "pinned_at_ms": self.pinned_at_ms}


@dataclass(frozen=True)
class ContentStat:
    cid: Cid
    codec: str
    size: int  # logical size of the object (total of chunks for a manifest)
    block_size: int  # bytes of the block named by the CID itself
    media_type: str | None
    chunks: int
    chunks_present: int
    complete: bool
    pins: tuple[str, ...]
    tensors: int

    def to_json(self) -> dict[str, Any]:
        return {
            "cid": str(self.cid),
            "codec": self.codec,
            "size": self.size,
            "block_size": self.block_size,
            "media_type": self.media_type,
            "chunks": self.chunks,
            "chunks_present": self.chunks_present,
            "complete": self.complete,
            "pins": list(self.pins),
            "tensors": self.tensors,
        }


@dataclass(frozen=True)
class GcResult:
    removed_blocks: int
    freed_bytes: int
    used_bytes: int

    def to_json(self) -> dict[str, int]:
        return {
            "removed_blocks": self.removed_blocks,
            "freed_bytes": self.freed_bytes,
            "used_bytes": self.used_bytes,
        }


@dataclass
class IntegrityReport:
    """What :meth:`ContentStore.verify_integrity` found (empty lists = healthy)."""

    blocks: int = 0
    corrupt: list[str] = field(default_factory=list)  # quarantined during the check
    incomplete_manifests: list[str] = field(default_factory=list)
    dangling_pins: list[str] = field(default_factory=list)
    meta_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.incomplete_manifests or self.dangling_pins)


class Hold:
    """In-memory protection of blocks being written or fetched (released on exit or crash)."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._mhs: Counter[bytes] = Counter()
        self._closed = False

    def add(self, mh: bytes) -> None:
        if self._closed:
            raise RuntimeError("hold already released")
        self._mhs[mh] += 1
        self._store._held[mh] += 1

    def release(self) -> None:
        if self._closed:
            return
        self._closed = True
        held = self._store._held
        for mh, n in self._mhs.items():
            left = held[mh] - n
            if left > 0:
                held[mh] = left
            else:
                del held[mh]
        self._mhs.clear()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _meta_key(mh: bytes) -> bytes:
    return b"M" + mh


def _lru_key(stamp: int, mh: bytes) -> bytes:
    return b"A" + _U64.pack(stamp) + mh


class ContentStore:
    """Content-addressed blocks in one LevelDB, with pins, GC and a byte quota.

    ``quota_bytes`` bounds the block bytes held (LevelDB overhead not counted);
    ``None`` means unbounded. ``chunk_size`` is the default cut for puts; for
    objects whose CID must agree across nodes (global models) every node must
    use the same value. ``max_content_bytes`` bounds one object (local puts and
    fetched manifests alike). Not thread-safe: use it from one trio thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quota_bytes: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
        write_buffer_size: int = 64 * 1024 * 1024,
    ) -> None:
        check_chunk_size(chunk_size)
        if quota_bytes is not None and quota_bytes < 0:
            raise ValueError("quota_bytes must be >= 0")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.chunk_size = chunk_size
        self.quota_bytes = quota_bytes
        self.max_content_bytes = max_content_bytes
        # Weights do not compress: snappy would only burn CPU on every put.
        self._db: plyvel.DB | None = plyvel.DB(
            str(self.path),
            create_if_missing=True,
            compression=None,
            write_buffer_size=write_buffer_size,
        )
        version = self._db.get(b"V")
        if version is None:
            self._db.put(b"V", _SCHEMA, sync=True)
        elif version != _SCHEMA:
            self._db.close()
            raise ValueError(f"content store at {path} has schema {version!r}, need {_SCHEMA!r}")
        self._held: Counter[bytes] = Counter()
        self._protected: Counter[bytes] = Counter()
        self._root_pins: Counter[bytes] = Counter()  # root mh -> number of pin keys
        self._closure: dict[bytes, frozenset[bytes]] = {}  # root mh -> protected mhs
        self._used = 0
        self._stamp = 0
        self.corrupt_blocks_found = 0
        self._load()

    # ------------------------------------------------------------ lifecycle

    def _load(self) -> None:
        db = self._live()
        for _key, value in db.iterator(prefix=b"M"):
            _kind, size, stamp = _META.unpack(value)
            self._used += size
            self._stamp = max(self._stamp, stamp)
        for key in db.iterator(prefix=b"P", include_value=False):
            cid = self._pin_key_cid(key)
            self._add_root(cid.multihash)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ContentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> plyvel.DB:
        if self._db is None:
            raise StoreClosed("content store is closed")
        return self._db

    # ------------------------------------------------------------ accounting

    @property
    def used_bytes(self) -> int:
        return self._used

    def is_protected(self, mh: bytes) -> bool:
        return self._protected[mh] > 0 or self._held[mh] > 0

    def protected_bytes(self) -> int:
        db = self._live()
        total = 0
        for mh in set(self._protected) | set(self._held):
            meta = db.get(_meta_key(mh))
            if meta is not None:
                total += _META.unpack(meta)[1]
        return total

    def hold(self) -> Hold:
        """A handle that protects the blocks added to it from GC and eviction until released."""
        return Hold(self)

    def _next_stamp(self) -> int:
        self._stamp += 1
        return self._stamp

    def _meta(self, mh: bytes) -> tuple[int, int, int] | None:
        raw = self._live().get(_meta_key(mh))
        if raw is None:
            return None
        kind, size, stamp = _META.unpack(raw)
        return kind, size, stamp

    # ------------------------------------------------------------ protection (pins)

    def _closure_of(self, mh: bytes) -> frozenset[bytes]:
        meta = self._meta(mh)
        if meta is None or meta[0] != _KIND_MANIFEST:
            return frozenset((mh,))
        data = self._live().get(b"B" + mh)
        try:
            manifest = decode_manifest(data) if data is not None else None
        except InvalidManifest:
            manifest = None
        if manifest is None:
            return frozenset((mh,))
        return frozenset([mh, *(c.chunk_cid.multihash for c in manifest.chunks)])

    def _add_root(self, mh: bytes) -> None:
        self._root_pins[mh] += 1
        if self._root_pins[mh] == 1:
            closure = self._closure_of(mh)
            self._closure[mh] = closure
            self._protected.update(closure)

    def _remove_root(self, mh: bytes) -> None:
        self._root_pins[mh] -= 1
        if self._root_pins[mh] <= 0:
            del self._root_pins[mh]
            for m in self._closure.pop(mh, frozenset()):
                self._protected[m] -= 1
                if self._protected[m] <= 0:
                    del self._protected[m]

    def _refresh_root(self, mh: bytes) -> None:
        """A pinned root just became (again) a manifest: widen its protection to its chunks."""
        if mh not in self._closure:
            return
        old = self._closure[mh]
        new = self._closure_of(mh)
        self._protected.subtract(old)
        self._protected.update(new)
        for m in old - new:
            if self._protected[m] <= 0:
                del self._protected[m]
        self._closure[mh] = new

    # ------------------------------------------------------------ quota / eviction

    def _make_room(self, need: int) -> None:
        """Evict unprotected blocks, least recently used first, until ``need`` more bytes fit.

        Frees up to 1/16 of the quota (at most 64 MiB) beyond what is needed at once, so a
        large put under pressure scans the LRU index once per batch, not once per chunk.
        """
        if self.quota_bytes is None or self._used + need <= self.quota_bytes:
            return
        db = self._live()
        target = self._used + need - self.quota_bytes  # bytes that must go
        wanted = target + min(self.quota_bytes // 16, _EVICT_SLACK)
        victims: dict[bytes, int] = {}
        freed = 0
        for key in db.iterator(prefix=b"A", include_value=False):
            mh = key[9:]
            if mh in victims or self.is_protected(mh):
                continue
            group = self._deletion_group(mh)
            if group is None:
                continue
            for m, size in group.items():
                if m not in victims:
                    victims[m] = size
                    freed += size
            if freed >= wanted:
                break
        if freed < target:
            protected = self.protected_bytes()
            raise QuotaExceeded(
                f"content quota of {self.quota_bytes} bytes is full: {need} more bytes needed, "
                f"{protected} bytes are pinned or in use and cannot be evicted",
                needed=need,
                quota=self.quota_bytes,
                protected=protected,
            )
        failpoint("content.evict.before_batch")
        with db.write_batch() as wb:
            for m in victims:
                self._delete_block(wb, m)
        log.debug("content.evicted", blocks=len(victims), bytes=freed)

    def _deletion_group(self, mh: bytes) -> dict[bytes, int] | None:
        """``mh`` plus every manifest that uses it (deleted together), or None if one is protected."""
        meta = self._meta(mh)
        if meta is None:
            return None
        group = {mh: meta[1]}
        for key in self._live().iterator(prefix=b"U" + mh, include_value=False):
            user = key[1 + len(mh) :]
            if self.is_protected(user):
                return None
            user_meta = self._meta(user)
            if user_meta is not None:
                group[user] = user_meta[1]
        return group

    def _delete_block(self, wb: Any, mh: bytes) -> None:
        """Queue deletion of one block, its meta, LRU entry and index entries; adjust usage."""
        db = self._live()
        meta = self._meta(mh)
        if meta is None:
            return
        kind, size, stamp = meta
        if kind == _KIND_MANIFEST:
            data = db.get(b"B" + mh)
            try:
                manifest = decode_manifest(data) if data is not None else None
            except InvalidManifest:
                manifest = None
            if manifest is not None:
                for c in manifest.chunks:
                    wb.delete(b"U" + c.chunk_cid.multihash + mh)
        for key in db.iterator(prefix=b"U" + mh, include_value=False):
            wb.delete(key)
        wb.delete(b"B" + mh)
        wb.delete(_meta_key(mh))
        wb.delete(_lru_key(stamp, mh))
        self._used -= size

    # ------------------------------------------------------------ block level

    def has_block(self, cid: Cid | bytes | str) -> bool:
        return self._meta(parse_cid(cid).multihash) is not None

    def get_block(self, cid: Cid | bytes | str, *, touch: bool = True) -> bytes:
        """The verified bytes of one block; a block that fails its hash is quarantined."""
        c = parse_cid(cid)
        mh = c.multihash
        db = self._live()
        data = db.get(b"B" + mh)
        if data is None:
            raise NotFound(f"block {c} is not in the store")
        if hashlib.sha256(data).digest() != c.digest:
            self._quarantine(mh, data)
            raise CorruptContent(f"block {c} is corrupt on disk; it was quarantined")
        if touch:
            self._touch(mh)
        return data

    def _touch(self, mh: bytes) -> None:
        meta = self._meta(mh)
        if meta is None:
            return
        kind, size, stamp = meta
        new = self._next_stamp()
        with self._live().write_batch() as wb:
            wb.delete(_lru_key(stamp, mh))
            wb.put(_lru_key(new, mh), b"")
            wb.put(_meta_key(mh), _META.pack(kind, size, new))

    def _quarantine(self, mh: bytes, data: bytes) -> None:
        """Remove a corrupt block so it is never served; keep a small record for operators."""
        self.corrupt_blocks_found += 1
        meta = self._meta(mh)
        failpoint("content.quarantine.before_batch")
        db = self._live()
        with db.write_batch(sync=True) as wb:
            if meta is not None:
                kind, size, stamp = meta
                wb.delete(_meta_key(mh))
                wb.delete(_lru_key(stamp, mh))
                self._used -= size
            wb.delete(b"B" + mh)
            # U entries stay: the manifests that use this chunk are now incomplete, and
            # a refetch puts the chunk back under the same index entries.
            wb.put(
                b"Q" + mh,
                _U64.pack(int(time.time() * 1000)) + hashlib.sha256(data).digest(),
            )
        log.warning("content.corrupt_block", multihash=mh.hex(), size=len(data))

    def put_block(
        self,
        data: bytes | memoryview,
        *,
        expected: Cid | None = None,
        hold: Hold | None = None,
    ) -> Cid:
        """Store one raw chunk (verifying ``expected`` if given); returns its CID.

        Fetched chunks go through here: a mismatch raises :class:`CorruptContent`
        and nothing is written. ``hold`` keeps the chunk safe from eviction/GC
        until its manifest is committed.
        """
        if len(data) > MAX_BLOCK_SIZE:
            raise ContentTooLarge(f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}")
        cid = chunk_cid(data)
        if expected is not None and cid.digest != expected.digest:
            raise CorruptContent(f"data does not hash to {expected}")
        mh = cid.multihash
        if hold is not None:
            hold.add(mh)
        if self._meta(mh) is not None:
            return cid
        self._make_room(len(data))
        stamp = self._next_stamp()
        with self._live().write_batch() as wb:
            _put_chunk(wb, mh, data, stamp)
        self._used += len(data)
        return cid

    # ------------------------------------------------------------ manifests

    def commit_manifest(
        self, manifest_bytes: bytes, *, pin: str | None = None, expected: Cid | None = None
    ) -> Cid:
        """Write a manifest (and optionally a pin) in one synced batch; every chunk must be present."""
        manifest = decode_manifest(manifest_bytes)
        cid = manifest_cid(manifest_bytes)
        if expected is not None and cid != expected:
            raise CorruptContent(f"manifest bytes do not hash to {expected}")
        if manifest.total_size > self.max_content_bytes:
            raise ContentTooLarge(
                f"object of {manifest.total_size} bytes exceeds the limit of "
                f"{self.max_content_bytes} bytes"
            )
        missing = [c for c in manifest.chunk_cids() if not self.has_block(c)]
        if missing:
            raise NotFound(
                f"cannot commit manifest {cid}: {len(missing)} chunk(s) missing, first {missing[0]}"
            )
        self._commit(cid, manifest, manifest_bytes, pin)
        return cid

    def _commit(self, cid: Cid, manifest: Manifest, data: bytes, pin: str | None) -> None:
        reason = _check_reason(pin) if pin is not None else None
        mh = cid.multihash
        db = self._live()
        meta = self._meta(mh)
        with self.hold() as h:
            for c in manifest.chunks:  # the manifest's chunks must survive making room for it
                h.add(c.chunk_cid.multihash)
            if meta is None:
                self._make_room(len(data))
        stamp = self._next_stamp()
        pin_key = b"P" + bytes(cid) + reason.encode() if reason is not None else None
        new_pin = pin_key is not None and db.get(pin_key) is None
        with db.write_batch(sync=True) as wb:
            if meta is not None:
                wb.delete(_lru_key(meta[2], mh))
            else:
                wb.put(b"B" + mh, data)
                self._used += len(data)
            wb.put(_meta_key(mh), _META.pack(_KIND_MANIFEST, len(data), stamp))
            wb.put(_lru_key(stamp, mh), b"")
            wb.delete(b"Q" + mh)
            for c in manifest.chunks:
                wb.put(b"U" + c.chunk_cid.multihash + mh, b"")
            if pin_key is not None and new_pin:
                wb.put(pin_key, _U64.pack(int(time.time() * 1000)))
        if meta is None or meta[0] != _KIND_MANIFEST:
            self._refresh_root(mh)
        if new_pin:
            self._add_root(mh)
        failpoint("content.put.after_manifest")

    def chunk_in_manifest(self, chunk: Cid, manifest: Cid) -> bool:
        """True when the stored manifest ``manifest`` lists ``chunk`` (index lookup, no decode)."""
        return self._live().get(b"U" + chunk.multihash + manifest.multihash) is not None

    def manifests_using(self, chunk: Cid) -> list[Cid]:
        """Stored manifests that list ``chunk``."""
        mh = chunk.multihash
        out = []
        for key in self._live().iterator(prefix=b"U" + mh, include_value=False):
            user = key[1 + len(mh) :]
            if self._meta(user) is not None:
                out.append(Cid.from_multihash(Codec.MANIFEST, user))
        return out

    def get_manifest(self, cid: Cid | bytes | str) -> Manifest:
        c = parse_cid(cid)
        if not c.is_manifest:
            raise InvalidManifest(f"{c} is a raw chunk, not a manifest")
        return decode_manifest(self.get_block(c))

    # ------------------------------------------------------------ puts

    def put_stream(
        self,
        source: Iterable[bytes] | BinaryIO | bytes,
        *,
        media_type: str = OCTET_STREAM,
        pin: str | None = None,
        cuts: Iterable[int] = (),
        tensors: Iterable[TensorInfo] = (),
        chunk_size: int | None = None,
    ) -> Cid:
        """Chunk ``source`` into the store and commit its manifest; returns the manifest CID.

        Memory stays at about one batch of chunks whatever the source size.
        """
        size = check_chunk_size(chunk_size) if chunk_size is not None else self.chunk_size
        if pin is not None:
            _check_reason(pin)
        refs: list[tuple[Cid, int]] = []
        total = 0
        db = self._live()
        with self.hold() as h:
            batch_bytes = 0
            pending: set[bytes] = set()  # chunks in the unwritten batch (repeats within it)
            wb = db.write_batch()
            try:
                for chunk in rechunk(source, size, list(cuts)):
                    total += len(chunk)
                    if total > self.max_content_bytes:
                        raise ContentTooLarge(
                            f"content exceeds the limit of {self.max_content_bytes} bytes"
                        )
                    cid = chunk_cid(chunk)
                    mh = cid.multihash
                    refs.append((cid, len(chunk)))
                    h.add(mh)
                    if mh in pending or self._meta(mh) is not None:
                        continue
                    self._make_room(len(chunk))
                    pending.add(mh)
                    _put_chunk(wb, mh, chunk, self._next_stamp())
                    self._used += len(chunk)
                    batch_bytes += len(chunk)
                    if batch_bytes >= _CHUNK_BATCH_BYTES:
                        wb.write()
                        wb = db.write_batch()
                        batch_bytes = 0
                        pending.clear()
                        failpoint("content.put.mid_chunks")
                wb.write()
            except BaseException:
                # Nothing of this batch reached LevelDB: undo the usage it claimed.
                wb.clear()
                self._recount()
                raise
            failpoint("content.put.after_chunks")
            manifest, data, mcid = build_manifest(
                refs, media_type=media_type, chunk_size=size, tensors=tuple(tensors)
            )
            self._commit(mcid, manifest, data, pin)
        return mcid

    def _recount(self) -> None:
        self._used = sum(_META.unpack(v)[1] for _, v in self._live().iterator(prefix=b"M"))

    def put_bytes(self, data: bytes, **kwargs: Any) -> Cid:
        """Store ``data`` as one object (see :meth:`put_stream` for the keyword arguments)."""
        return self.put_stream(data, **kwargs)

    # ------------------------------------------------------------ reads

    def iter_chunks(self, cid: Cid | bytes | str) -> Iterator[bytes]:
        """Yield the verified bytes of an object chunk by chunk (a raw CID yields itself)."""
        c = parse_cid(cid)
        if not c.is_manifest:
            yield self.get_block(c)
            return
        manifest = self.get_manifest(c)
        for ref in manifest.chunks:
            yield self.get_block(ref.chunk_cid)

    def get_bytes(self, cid: Cid | bytes | str) -> bytes:
        """The whole object in memory (every chunk verified); see :meth:`iter_chunks` to stream."""
        c = parse_cid(cid)
        if not c.is_manifest:
            return self.get_block(c)
        manifest = self.get_manifest(c)
        if manifest.total_size > self.max_content_bytes:
            raise ContentTooLarge(f"object of {manifest.total_size} bytes is over the limit")
        return b"".join([self.get_block(ref.chunk_cid) for ref in manifest.chunks])

    def read_to_path(self, cid: Cid | bytes | str, path: str | os.PathLike[str]) -> int:
        """Write an object to ``path`` atomically (temp file + rename); returns bytes written."""
        dest = Path(path)
        tmp = dest.with_name(f".{dest.name}.partial")
        written = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in self.iter_chunks(cid):
                    f.write(chunk)
                    written += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return written

    def missing_chunks(self, cid: Cid | bytes | str) -> list[Cid]:
        """Chunks of a stored manifest that are not present (empty for complete content)."""
        manifest = self.get_manifest(cid)
        return [c for c in manifest.chunk_cids() if not self.has_block(c)]

    def has(self, cid: Cid | bytes | str) -> bool:
        """True when the object and, for a manifest, all its chunks are present."""
        c = parse_cid(cid)
        if not self.has_block(c):
            return False
        if not c.is_manifest:
            return True
        try:
            return not self.missing_chunks(c)
        except (CorruptContent, InvalidManifest, NotFound):
            return False

    def stat(self, cid: Cid | bytes | str) -> ContentStat:
        c = parse_cid(cid)
        meta = self._meta(c.multihash)
        if meta is None:
            raise NotFound(f"{c} is not in the store")
        pins = tuple(p.reason for p in self.pins(c))
        if not c.is_manifest:
            return ContentStat(c, "raw", meta[1], meta[1], None, 1, 1, True, pins, 0)
        manifest = self.get_manifest(c)
        present = sum(1 for ch in manifest.chunk_cids() if self.has_block(ch))
        return ContentStat(
            cid=c,
            codec="manifest",
            size=manifest.total_size,
            block_size=meta[1],
            media_type=manifest.media_type,
            chunks=len(manifest.chunks),
            chunks_present=present,
            complete=present == len(manifest.chunks),
            pins=pins,
            tensors=len(manifest.tensors),
        )

    # ------------------------------------------------------------ pins

    def pin(self, cid: Cid | bytes | str, reason: str) -> bool:
        """Pin a present object for ``reason``; returns False if that exact pin existed."""
        c = parse_cid(cid)
        r = _check_reason(reason)
        if not self.has_block(c):
            raise NotFound(f"cannot pin {c}: not in the store (fetch it first)")
        key = b"P" + bytes(c) + r.encode()
        db = self._live()
        if db.get(key) is not None:
            return False
        failpoint("content.pin.before_batch")
        db.put(key, _U64.pack(int(time.time() * 1000)), sync=True)
        self._add_root(c.multihash)
        return True

    def unpin(self, cid: Cid | bytes | str, reason: str | None = None) -> int:
        """Remove the pin for ``reason`` (or every pin of ``cid`` when None); returns pins removed."""
        c = parse_cid(cid)
        db = self._live()
        if reason is None:
            keys = list(db.iterator(prefix=b"P" + bytes(c), include_value=False))
            if not keys:
                raise NotPinned(f"{c} is not pinned")
        else:
            key = b"P" + bytes(c) + _check_reason(reason).encode()
            if db.get(key) is None:
                raise NotPinned(f"{c} is not pinned for reason {reason!r}")
            keys = [key]
        with db.write_batch(sync=True) as wb:
            for key in keys:
                wb.delete(key)
        for _ in keys:
            self._remove_root(c.multihash)
        return len(keys)

    def pins(self, cid: Cid | bytes | str | None = None) -> list[PinInfo]:
        db = self._live()
        prefix = b"P" if cid is None else b"P" + bytes(parse_cid(cid))
        out = []
        for key, value in db.iterator(prefix=prefix):
            c, rest = split_cid(key[1:])
            reason = rest.decode("utf-8", "replace")
            out.append(PinInfo(c, reason, _U64.unpack(value)[0]))
        return out

    def is_pinned(self, cid: Cid | bytes | str) -> bool:
        return self._root_pins[parse_cid(cid).multihash] > 0

    @staticmethod
    def _pin_key_cid(key: bytes) -> Cid:
        # binary CIDs are self-delimiting (known prefix + 32-byte digest), so no separator
        return split_cid(key[1:])[0]

    # ------------------------------------------------------------ GC

    def gc(self) -> GcResult:
        """Delete every block that no pin (or in-flight hold) protects.

        Manifests go first, in their own batch, so no crash point leaves a
        manifest whose chunks were deleted.
        """
        db = self._live()
        manifests: list[bytes] = []
        chunks: list[bytes] = []
        for key, value in db.iterator(prefix=b"M"):
            mh = key[1:]
            if self.is_protected(mh):
                continue
            kind = _META.unpack(value)[0]
            if kind == _KIND_MANIFEST:
                manifests.append(mh)
            elif self._deletion_group(mh) is not None:  # no protected manifest uses it
                chunks.append(mh)
        before = self._used
        with db.write_batch() as wb:
            for mh in manifests:
                self._delete_block(wb, mh)
        failpoint("content.gc.after_manifests")
        with db.write_batch() as wb:
            for mh in chunks:
                self._delete_block(wb, mh)
            # index entries whose manifest vanished through quarantine
            for key in db.iterator(prefix=b"U", include_value=False):
                if self._meta(key[-34:]) is None:
                    wb.delete(key)
        removed = len(manifests) + len(chunks)
        log.info("content.gc", removed_blocks=removed, freed_bytes=before - self._used)
        return GcResult(removed, before - self._used, self._used)

    # ------------------------------------------------------------ integrity

    def verify_integrity(self, *, deep: bool = True) -> IntegrityReport:
        """Check the store's invariants; ``deep`` also re-hashes every block (quarantining bad ones)."""
        db = self._live()
        report = IntegrityReport()
        manifests: list[bytes] = []
        used = 0
        for key, value in db.iterator(prefix=b"M"):
            mh = key[1:]
            kind, size, _ = _META.unpack(value)
            used += size
            report.blocks += 1
            data = db.get(b"B" + mh)
            if data is None:
                report.meta_errors.append(f"meta without block {mh.hex()}")
                continue
            if len(data) != size:
                report.meta_errors.append(f"size mismatch for {mh.hex()}")
            if deep and hashlib.sha256(data).digest() != mh[2:]:
                self._quarantine(mh, data)
                report.corrupt.append(mh.hex())
                continue
            if kind == _KIND_MANIFEST:
                manifests.append(mh)
        for mh in manifests:
            cid = Cid.from_multihash(Codec.MANIFEST, mh)
            try:
                if self.missing_chunks(cid):
                    report.incomplete_manifests.append(str(cid))
            except (InvalidManifest, CorruptContent, NotFound) as e:
                report.meta_errors.append(f"{cid}: {e}")
        for p in self.pins():
            if not self.has_block(p.cid):
                report.dangling_pins.append(f"{p.cid} ({p.reason})")
        if used != self._used and not report.corrupt:
            report.meta_errors.append(f"usage counter {self._used} != {used}")
        return report


def _put_chunk(wb: Any, mh: bytes, data: bytes | memoryview, stamp: int) -> None:
    wb.put(b"B" + mh, data)
    wb.put(_meta_key(mh), _META.pack(_KIND_CHUNK, len(data), stamp))
    wb.put(_lru_key(stamp, mh), b"")
    wb.delete(b"Q" + mh)


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason:
        raise ValueError("a pin needs a non-empty reason string")
    if len(reason.encode("utf-8")) > MAX_PIN_REASON_BYTES:
        raise ValueError(f"pin reason longer than {MAX_PIN_REASON_BYTES} bytes")
    return reason

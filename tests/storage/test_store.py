"""ContentStore against real LevelDB: puts, reads, pins, GC, quota/eviction, corruption, restart."""

from __future__ import annotations

import os
from pathlib import Path

import plyvel
import pytest

from storage import api
from storage.cid import chunk_cid, manifest_cid, parse_cid
from storage.errors import (
    ContentTooLarge,
    CorruptContent,
    InvalidCID,
    InvalidManifest,
    NotFound,
    NotPinned,
    QuotaExceeded,
    StoreClosed,
)
from storage.store import ContentStore

CS = 4096


def data_of(n: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def corrupt_block(path: Path, mh: bytes) -> None:
    """Flip one byte of a stored block directly in LevelDB (the store must be closed)."""
    db = plyvel.DB(str(path))
    value = bytearray(db.get(b"B" + mh))
    value[len(value) // 2] ^= 0xFF
    db.put(b"B" + mh, bytes(value))
    db.close()


def test_put_get_stat_round_trip(store: ContentStore) -> None:
    data = data_of(3 * CS + 17)
    cid = store.put_bytes(data, media_type="text/plain")
    assert cid.is_manifest and store.has(cid)
    assert store.get_bytes(cid) == data
    assert b"".join(store.iter_chunks(cid)) == data
    st = store.stat(cid)
    assert (st.size, st.chunks, st.chunks_present, st.complete) == (len(data), 4, 4, True)
    assert st.media_type == "text/plain" and st.pins == ()
    chunk = store.get_manifest(cid).chunk_cids()[0]
    assert store.get_block(chunk) == data[:CS]
    assert store.stat(chunk).codec == "raw"


def test_empty_object(store: ContentStore) -> None:
    cid = store.put_bytes(b"")
    assert store.get_bytes(cid) == b"" and store.stat(cid).chunks == 0


def test_identical_content_is_stored_once(store: ContentStore) -> None:
    block = data_of(CS, 1)
    cid = store.put_bytes(block * 5)  # five identical chunks
    used = store.used_bytes
    assert used < 2 * CS  # one chunk + a small manifest
    assert store.put_bytes(block * 5) == cid and store.used_bytes == used
    assert store.get_bytes(cid) == block * 5


def test_unknown_and_malformed_cids(store: ContentStore) -> None:
    with pytest.raises(NotFound, match="not in the store"):
        store.get_bytes(manifest_cid(b"nothing"))
    with pytest.raises(NotFound):
        store.stat(str(chunk_cid(b"nothing")))
    with pytest.raises(InvalidCID):
        store.get_bytes("bafy-not-a-cid")
    with pytest.raises(InvalidManifest, match="raw chunk"):
        store.get_manifest(chunk_cid(b"x"))


def test_pins_with_several_reasons(store: ContentStore) -> None:
    cid = store.put_bytes(data_of(2 * CS), pin="global model of task 1 round 3")
    assert store.pin(cid, "own submission") is True
    assert store.pin(cid, "own submission") is False  # idempotent
    assert sorted(p.reason for p in store.pins(cid)) == [
        "global model of task 1 round 3",
        "own submission",
    ]
    store.unpin(cid, "own submission")
    assert store.gc().removed_blocks == 0  # still pinned by the other reason
    with pytest.raises(NotPinned):
        store.unpin(cid, "own submission")
    store.unpin(cid, "global model of task 1 round 3")
    assert not store.is_pinned(cid)
    assert store.gc().removed_blocks == 3 and not store.has(cid)


def test_unpin_all_reasons_at_once(store: ContentStore) -> None:
    cid = store.put_bytes(b"x", pin="a")
    store.pin(cid, "b")
    assert store.unpin(cid) == 2
    with pytest.raises(NotPinned):
        store.unpin(cid)


@pytest.mark.parametrize("reason", ["", "x" * 257])
def test_bad_pin_reason(store: ContentStore, reason: str) -> None:
    cid = store.put_bytes(b"x")
    with pytest.raises(ValueError, match="reason"):
        store.pin(cid, reason)


def test_pin_requires_presence(store: ContentStore) -> None:
    with pytest.raises(NotFound, match="fetch it first"):
        store.pin(manifest_cid(b"elsewhere"), "r")


def test_pinned_manifest_protects_shared_chunks(store: ContentStore) -> None:
    base = data_of(4 * CS, 2)
    kept = store.put_bytes(base, pin="keep")
    other = store.put_bytes(base[: 2 * CS] + data_of(CS, 3))  # shares two chunks
    result = store.gc()
    assert result.removed_blocks == 2  # other's manifest + its one private chunk
    assert store.get_bytes(kept) == base and not store.has_block(other)


def test_gc_keeps_held_blocks_and_frees_the_rest(store: ContentStore) -> None:
    a = store.put_bytes(data_of(CS, 4))
    with store.hold() as h:
        h.add(a.multihash)
        for c in store.get_manifest(a).chunk_cids():
            h.add(c.multihash)
        store.put_bytes(data_of(CS, 5))
        assert store.gc().removed_blocks == 2
        assert store.has(a)
    assert store.gc().removed_blocks == 2 and store.used_bytes == 0


def test_quota_evicts_least_recently_used_unpinned(tmp_path: Path) -> None:
    with ContentStore(tmp_path / "s", chunk_size=CS, quota_bytes=5 * CS) as s:
        old = s.put_bytes(data_of(CS, 1))
        mid = s.put_bytes(data_of(CS, 2))
        s.get_bytes(old)  # touch: old is now more recent than mid
        s.put_bytes(data_of(3 * CS, 3))
        assert s.has(old) and not s.has(mid)
        assert s.used_bytes <= 5 * CS


def test_quota_full_of_pins_is_a_clear_error_and_store_keeps_working(tmp_path: Path) -> None:
    with ContentStore(tmp_path / "s", chunk_size=CS, quota_bytes=4 * CS) as s:
        pinned = s.put_bytes(data_of(3 * CS, 1), pin="keep")
        with pytest.raises(QuotaExceeded, match="quota") as err:
            s.put_bytes(data_of(2 * CS, 2))
        assert err.value.quota == 4 * CS and err.value.protected >= 3 * CS
        assert s.get_bytes(pinned) == data_of(3 * CS, 1)
        assert s.verify_integrity().ok
        small = s.put_bytes(data_of(100, 3))  # what fits still goes in
        assert s.has(small)
        s.unpin(pinned, "keep")
        assert s.has(s.put_bytes(data_of(3 * CS, 4)))  # eviction now frees room


def test_content_over_size_limit(tmp_path: Path) -> None:
    with ContentStore(tmp_path / "s", chunk_size=CS, max_content_bytes=3 * CS) as s:
        with pytest.raises(ContentTooLarge, match="limit"):
            s.put_bytes(data_of(3 * CS + 1))
        assert s.put_bytes(data_of(3 * CS))
        assert s.verify_integrity().ok


def test_corrupt_chunk_is_quarantined_never_served(tmp_path: Path) -> None:
    path = tmp_path / "s"
    data = data_of(3 * CS)
    with ContentStore(path, chunk_size=CS) as s:
        cid = s.put_bytes(data, pin="keep")
        bad = s.get_manifest(cid).chunk_cids()[1]
    corrupt_block(path, bad.multihash)
    with ContentStore(path, chunk_size=CS) as s:
        with pytest.raises(CorruptContent, match="quarantined"):
            s.get_bytes(cid)
        assert s.corrupt_blocks_found == 1
        with pytest.raises(NotFound):
            s.get_block(bad)
        st = s.stat(cid)
        assert not st.complete and st.chunks_present == 2
        assert s.missing_chunks(cid) == [bad]
        report = s.verify_integrity()
        assert report.incomplete_manifests == [str(cid)] and not report.corrupt
        # the exchange (or anyone) putting the right bytes back repairs the object
        s.put_block(data[CS : 2 * CS], expected=bad)
        assert s.get_bytes(cid) == data and s.verify_integrity().ok


def test_deep_verify_finds_corruption_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with ContentStore(path, chunk_size=CS) as s:
        cid = s.put_bytes(data_of(2 * CS))
        first = s.get_manifest(cid).chunk_cids()[0]
    corrupt_block(path, first.multihash)
    with ContentStore(path, chunk_size=CS) as s:
        report = s.verify_integrity()
        assert report.corrupt == [first.multihash.hex()] and not report.ok


def test_put_block_checks_expected_hash(store: ContentStore) -> None:
    with pytest.raises(CorruptContent):
        store.put_block(b"evil", expected=chunk_cid(b"good"))
    assert not store.has_block(chunk_cid(b"evil"))


def test_commit_manifest_requires_all_chunks(store: ContentStore) -> None:
    from storage.manifest import build_manifest

    _, data, cid = build_manifest([(chunk_cid(b"gone"), 4)], media_type="x/y", chunk_size=CS)
    with pytest.raises(NotFound, match="missing"):
        store.commit_manifest(data)
    store.put_block(b"gone")
    assert store.commit_manifest(data, pin="p", expected=cid) == cid
    assert store.is_pinned(cid) and store.has(cid)


def test_state_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with ContentStore(path, chunk_size=CS) as s:
        keep = s.put_bytes(data_of(2 * CS, 1), pin="keep")
        s.put_bytes(data_of(2 * CS, 2))
        used = s.used_bytes
    with ContentStore(path, chunk_size=CS) as s:
        assert s.used_bytes == used and s.is_pinned(keep)
        s.gc()
        assert s.has(keep) and s.verify_integrity().ok


def test_closed_store_raises(tmp_path: Path) -> None:
    s = ContentStore(tmp_path / "s")
    s.close()
    with pytest.raises(StoreClosed):
        s.put_bytes(b"x")


def test_wrong_schema_refused(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "s"), create_if_missing=True)
    db.put(b"V", b"something-else")
    db.close()
    with pytest.raises(ValueError, match="schema"):
        ContentStore(tmp_path / "s")


# ---------------------------------------------------------------- api functions (RPC/CLI)


def test_api_put_get_pin_gc(store: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "weights.bin"
    src.write_bytes(data_of(10_000))
    st = api.content_put(store, src, pin="operator")
    assert st["size"] == 10_000 and st["pins"] == ["operator"] and st["complete"]
    cid = st["cid"]
    assert api.content_stat(store, cid)["chunks"] == 3
    out = api.content_get(store, cid, tmp_path)
    assert Path(out["path"]).read_bytes() == src.read_bytes()
    assert b"".join(api.content_iter(store, cid)) == src.read_bytes()
    assert api.pin_add(store, cid, "second")["added"] is True
    assert {p["reason"] for p in api.pin_ls(store)} == {"operator", "second"}
    assert api.pin_rm(store, cid)["removed"] == 2
    assert api.content_gc(store)["removed_blocks"] == 4
    assert api.content_verify(store)["ok"]


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda s, d: api.content_put(s, d / "missing.bin"), "bad_path"),
        (lambda s, d: api.content_put(s, d), "bad_path"),
        (lambda s, d: api.content_stat(s, "Qmnope"), "invalid_cid"),
        (lambda s, d: api.content_stat(s, str(manifest_cid(b"?"))), "not_found"),
        (lambda s, d: api.content_get(s, str(manifest_cid(b"?")), d / "x"), "not_found"),
        (lambda s, d: api.content_get(s, str(chunk_cid(b"?")), d / "no" / "x"), "bad_path"),
        (lambda s, d: api.content_iter(s, str(manifest_cid(b"?"))), "not_found"),
        (lambda s, d: api.pin_rm(s, str(manifest_cid(b"?"))), "not_pinned"),
        (lambda s, d: api.pin_add(s, str(manifest_cid(b"?")), "r"), "not_found"),
    ],
)
def test_api_errors_are_clear(store: ContentStore, tmp_path: Path, call: object, kind: str) -> None:
    with pytest.raises(Exception) as err:
        call(store, tmp_path)  # type: ignore[operator]
    assert api.error_kind(err.value) == kind
    assert str(err.value)


def test_read_to_path_leaves_no_partial_file_on_error(store: ContentStore, tmp_path: Path) -> None:
    cid = store.put_bytes(data_of(2 * CS))
    store.close()
    dest = tmp_path / "out.bin"
    with pytest.raises(StoreClosed):
        ContentStore.read_to_path(store, cid, dest)
    assert not dest.exists() and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_put_file_large_streams_with_bounded_batches(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for i in range(20):
            f.write(data_of(1 << 20, i))
    with ContentStore(tmp_path / "s") as s:
        cid = parse_cid(api.content_put(s, src)["cid"])
        assert s.stat(cid).chunks == 20
        dest = tmp_path / "copy.bin"
        s.read_to_path(cid, dest)
        assert os.path.getsize(dest) == 20 << 20
        assert dest.read_bytes() == src.read_bytes()

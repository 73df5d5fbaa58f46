"""The chain store on real LevelDB: persistence, reads, staging and recovery, corruption."""

from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from ledger.app import make_application
from ledger.errors import StoreCorruptError, StoreError
from ledger.failpoint import ENV, FailpointError, failpoint, reset
from ledger.genesis import genesis_state
from ledger.recovery import recover
from ledger.store import ChainStore
from ledger.testing import ChainBuilder, Wallet, make_testnet
from tests.ledger.model import ChainModel


def fill(path: Path, model: ChainModel, upto: int) -> ChainStore:
    store = ChainStore.open(path)
    store.init_genesis(model.state(0))
    for h in range(store.height + 1, upto + 1):
        new_state = model.state(h)
        block, commit, results = model.blocks[h]
        store.save_block(block, commit, new_state, results)
    return store


def test_save_reopen_and_read_back(tmp_path: Path) -> None:
    model = ChainModel(seed=3)
    store = fill(tmp_path / "chain.db", model, 6)
    model.assert_store_at(store, 6)
    store.close()
    with ChainStore.open(tmp_path / "chain.db") as again:
        model.assert_store_at(again, 6)
        assert again.validators_at(1) == model.state(0).validators
        assert again.validators_at(9) is None
        assert again.tx(b"\x00" * 32) is None
        assert again.block_by_hash(b"\x00" * 32) is None


def test_genesis_is_written_once_and_guards_the_chain_id(tmp_path: Path) -> None:
    model = ChainModel(seed=1)
    with ChainStore.open(tmp_path / "c.db") as store:
        assert not store.is_initialized
        with pytest.raises(StoreError, match="no genesis"):
            _ = store.height
        store.init_genesis(model.state(0))
        store.init_genesis(model.state(0))  # no-op
        assert store.height == 0
        other = make_testnet(chain_id="another-chain")
        with pytest.raises(StoreError, match="belongs to chain"):
            store.init_genesis(genesis_state(other.genesis))
        same_id = make_testnet(chain_id=model.state(0).chain_id, balance=1)
        with pytest.raises(StoreError, match="different genesis"):
            store.init_genesis(genesis_state(same_id.genesis))


def test_save_block_refuses_the_wrong_height_or_state(tmp_path: Path) -> None:
    model = ChainModel(seed=2)
    store = fill(tmp_path / "c.db", model, 1)
    b2, c2, r2 = model.block(2), *model.blocks[2][1:]
    b3, c3, r3 = model.block(3), *model.blocks[3][1:]
    with pytest.raises(StoreError, match="expected block 2"):
        store.save_block(b3, c3, model.state(3), r3)
    with pytest.raises(StoreError, match="commit is not for this block"):
        store.save_block(b2, c3, model.state(2), r2)
    with pytest.raises(StoreError, match="new_state"):
        store.save_block(b2, c2, model.state(3), r2)
    with pytest.raises(StoreError, match="results"):
        store.save_block(b2, c2, model.state(2), r3)
    model.assert_store_at(store, 1)
    store.close()


def test_staged_block_is_recovered_by_re_execution(tmp_path: Path) -> None:
    model = ChainModel(seed=4)
    store = fill(tmp_path / "c.db", model, 2)
    store.stage_block(model.block(3), model.blocks[3][1])
    store.close()
    store = ChainStore.open(tmp_path / "c.db")
    model.assert_store_at(store, 2)  # the half-finished height is not visible...
    assert store.pending_block() is not None
    assert recover(store, make_application()) == 3  # ...until recovery completes it
    model.assert_store_at(store, 3)
    assert store.pending_block() is None
    assert recover(store, make_application()) is None
    # a stale staged block (already saved) is dropped
    store.stage_block(model.block(4), model.blocks[4][1])
    store.save_block(model.block(4), model.blocks[4][1], model.state(4), model.blocks[4][2])
    assert store.pending_block() is None
    store.close()


def test_stray_records_above_the_last_height_are_removed(tmp_path: Path) -> None:
    model = ChainModel(seed=5)
    fill(tmp_path / "c.db", model, 3).close()
    db = plyvel.DB(str(tmp_path / "c.db"))
    db.put(b"b:" + (4).to_bytes(8, "big"), b"junk")
    db.put(b"r:" + (9).to_bytes(8, "big"), b"junk")
    db.close()
    with ChainStore.open(tmp_path / "c.db") as store:
        model.assert_store_at(store, 3)
        assert store.block_results(9) is None


@pytest.mark.parametrize(
    "key, value, error",
    [
        (b"m:chain", b"\xc1", "m:chain"),
        (b"a:acc/" + b"\x01" * 20, b"\x92\x00\x00", "app hash"),
        (b"b:" + (3).to_bytes(8, "big"), None, "block 3 is missing"),
        (b"v:" + (5).to_bytes(8, "big"), None, "missing record"),
    ],
)
def test_corruption_is_detected_on_open(
    tmp_path: Path, key: bytes, value: bytes | None, error: str
) -> None:
    model = ChainModel(seed=6)
    fill(tmp_path / "c.db", model, 3).close()
    db = plyvel.DB(str(tmp_path / "c.db"))
    if value is None:
        db.delete(key)
    else:
        db.put(key, value)
    db.close()
    with pytest.raises(StoreCorruptError, match=error):
        ChainStore.open(tmp_path / "c.db")


def test_records_without_meta_are_corruption(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "c.db"), create_if_missing=True)
    db.put(b"a:acc/x", b"1")
    db.close()
    with pytest.raises(StoreCorruptError, match="m:chain is missing"):
        ChainStore.open(tmp_path / "c.db")


def test_open_errors_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        ChainStore.open(tmp_path / "missing.db", create_if_missing=False)
    with ChainStore.open(tmp_path / "held.db"):
        with pytest.raises(StoreError, match="cannot open"):
            ChainStore.open(tmp_path / "held.db")  # LevelDB's lock: one opener at a time


def test_tx_index_keeps_the_successful_inclusion(tmp_path: Path) -> None:
    net = make_testnet(4, 2)
    cb = ChainBuilder(net)
    a, b = (Wallet(k, net.chain_id) for k in net.account_keys)
    with ChainStore.open(tmp_path / "c.db") as store:
        store.init_genesis(cb.state)
        tx = a.transfer(b.address, 5)
        for txs in ([tx], [tx]):  # the second inclusion is a replay that fails
            r = cb.advance(txs)
            store.save_block(r.block, r.commit, r.state, r.results)
        rec = store.tx(tx.hash)
        assert rec is not None and rec.height == 1 and rec.result.ok and rec.tx == tx


def test_failpoints_are_inert_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    reset()
    monkeypatch.delenv(ENV, raising=False)
    failpoint("x")
    monkeypatch.setenv(ENV, "y:raise,x@2:raise")
    failpoint("x")  # first hit: not yet
    with pytest.raises(FailpointError, match="x hit 2"):
        failpoint("x")
    with pytest.raises(FailpointError):
        failpoint("y")
    monkeypatch.setenv(ENV, "z:explode")
    with pytest.raises(ValueError, match="unknown action"):
        failpoint("z")
    reset()


def test_a_raising_failpoint_inside_the_batch_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ChainModel(seed=8)
    store = fill(tmp_path / "c.db", model, 2)
    reset()
    monkeypatch.setenv(ENV, "store.save.in_batch:raise")
    with pytest.raises(FailpointError):
        store.save_block(model.block(3), model.blocks[3][1], model.state(3), model.blocks[3][2])
    monkeypatch.delenv(ENV)
    reset()
    store.close()
    with ChainStore.open(tmp_path / "c.db") as again:
        model.assert_store_at(again, 2)

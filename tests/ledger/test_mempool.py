"""Acceptance 4: every rejection has its own code; recheck after commit; reaping; gossip batches."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.codec import CodecError, encode
from ledger.mempool import Mempool, MempoolConfig
from ledger.results import Code
from ledger.testing import ChainBuilder, Wallet, make_testnet, validator_key
from ledger.tx import Transfer, sign_tx
from ledger.txbatch import (
    MAX_BATCH_BYTES,
    TxBatch,
    decode_tx_batch,
    encode_tx_batch,
    split_into_batches,
)

BAL = 1000


def setup(config: MempoolConfig | None = None) -> tuple[ChainBuilder, Mempool, list[Wallet]]:
    net = make_testnet(4, 3, balance=BAL)
    cb = ChainBuilder(net)
    return (
        cb,
        Mempool(cb.app, cb.state, config),
        [Wallet(k, net.chain_id) for k in net.account_keys],
    )


def test_each_rejection_has_a_distinct_code() -> None:
    cb, pool, (a, b, c) = setup(MempoolConfig(max_txs=3, max_bytes=10_000, max_tx_bytes=400))
    ok = a.transfer(b.address, 1)
    cases = {}
    assert pool.check_tx(ok.encoded).ok
    cases["duplicate"] = pool.check_tx(ok.encoded)
    forged = dataclasses.replace(a.transfer(b.address, 1), signature=bytes(64))
    cases["bad_signature"] = pool.check_tx(forged.encoded)
    a.nonce -= 1
    cases["nonce_low"] = pool.check_tx(
        sign_tx(a.key, a.chain_id, Transfer(b.address, 2), 0).encoded
    )
    cases["nonce_high"] = pool.check_tx(
        sign_tx(a.key, a.chain_id, Transfer(b.address, 1), 5).encoded
    )
    cases["overspend"] = pool.check_tx(b.transfer(a.address, BAL + 10).encoded)
    b.nonce -= 1
    cases["malformed"] = pool.check_tx(b"\x93\x01\x02")
    cases["oversize"] = pool.check_tx(b"\x00" * 401)
    assert pool.check_tx(b.transfer(a.address, 1).encoded).ok
    assert pool.check_tx(c.transfer(a.address, 1).encoded).ok
    cases["full"] = pool.check_tx(c.transfer(a.address, 1).encoded)
    expected = {
        "duplicate": Code.DUPLICATE_TX,
        "bad_signature": Code.BAD_SIGNATURE,
        "nonce_low": Code.NONCE_TOO_LOW,
        "nonce_high": Code.NONCE_TOO_HIGH,
        "overspend": Code.INSUFFICIENT_FUNDS,
        "malformed": Code.DECODE_ERROR,
        "oversize": Code.TX_TOO_LARGE,
        "full": Code.MEMPOOL_FULL,
    }
    assert {k: r.code for k, r in cases.items()} == expected
    assert len(set(expected.values())) == len(expected)
    assert all(r.log for r in cases.values())
    assert len(pool) == 3


def test_byte_cap_has_its_own_code() -> None:
    cb, pool, (a, b, _) = setup(MempoolConfig(max_bytes=300))
    assert pool.check_tx(a.transfer(b.address, 1).encoded).ok
    assert pool.check_tx(a.transfer(b.address, 1).encoded).ok
    r = pool.check_tx(a.transfer(b.address, 1).encoded)
    assert r.code == Code.MEMPOOL_FULL_BYTES
    assert pool.size_bytes <= 300


def test_pending_txs_are_chained_by_nonce_and_balance() -> None:
    cb, pool, (a, b, _) = setup()
    assert pool.check_tx(a.transfer(b.address, 600).encoded).ok
    assert pool.check_tx(a.transfer(b.address, 300).encoded).ok
    r = pool.check_tx(a.transfer(b.address, 200).encoded)  # only 100 left after the pooled two
    assert r.code == Code.INSUFFICIENT_FUNDS


def test_recheck_drops_txs_invalidated_by_a_commit() -> None:
    cb, pool, (a, b, c) = setup()
    pooled = [a.transfer(c.address, 700), b.transfer(c.address, 10), b.transfer(c.address, 20)]
    for tx in pooled:
        assert pool.check_tx(tx.encoded).ok
    # a block from elsewhere spends a's funds with the same nonce, and includes b's first tx
    rival = sign_tx(a.key, a.chain_id, Transfer(b.address, 900), 0)
    r = cb.advance([rival, pooled[1]])
    assert [x.code for x in r.results.tx_results] == [0, 0]
    dropped = pool.update(cb.state, r.block.txs)
    assert dropped == [pooled[0].hash]
    assert [tx.hash for tx in pool.txs()] == [pooled[2].hash]
    # committed txs are refused as duplicates afterwards
    assert pool.check_tx(pooled[1].encoded).code == Code.DUPLICATE_TX
    # and the rechecked check state continues from the committed nonces
    assert pool.check_tx(b.transfer(c.address, 1).encoded).ok


def test_recheck_drops_the_followers_of_a_dropped_tx() -> None:
    cb, pool, (a, b, _) = setup()
    t0, t1 = a.transfer(b.address, 1), a.transfer(b.address, 1)
    assert pool.check_tx(t0.encoded).ok and pool.check_tx(t1.encoded).ok
    r = cb.advance(
        [sign_tx(a.key, a.chain_id, Transfer(b.address, BAL), 0)]
    )  # rival nonce 0, drains a
    assert pool.update(cb.state, r.block.txs) == [t0.hash, t1.hash]
    assert len(pool) == 0 and pool.size_bytes == 0


def test_reap_respects_limits_and_sender_order() -> None:
    cb, pool, (a, b, c) = setup()
    txs = [
        a.transfer(b.address, 1),
        b.transfer(a.address, 1),
        a.transfer(c.address, 1),
        c.transfer(a.address, 1),
    ]
    for tx in txs:
        assert pool.check_tx(tx.encoded).ok
    assert pool.reap() == txs
    assert pool.reap(max_txs=2) == txs[:2]
    size = len(txs[0].encoded)
    assert pool.reap(max_bytes=size * 2) == txs[:2]
    # the reaped txs form a valid block
    r = cb.advance(pool.reap())
    assert all(x.ok for x in r.results.tx_results)
    pool.update(cb.state, r.block.txs)
    assert len(pool) == 0


def test_reap_skips_a_sender_after_its_first_misfit() -> None:
    cb, pool, (a, b, _) = setup()
    big = a.bond(validator_key(0).public_key, 1)  # Bond txs are larger than transfers
    small = a.transfer(b.address, 1)
    other = b.transfer(a.address, 1)
    for tx in (big, small, other):
        assert pool.check_tx(tx.encoded).ok
    limit = len(other.encoded)  # room for one transfer, not for the bond
    assert len(big.encoded) > len(small.encoded)
    assert pool.reap(max_bytes=limit) == [other]  # small must not jump ahead of big


def test_bad_input_never_raises() -> None:
    cb, pool, _ = setup()
    for junk in (b"", b"\xc1", encode([10, 1, 2]), encode(TxBatch((b"x",))), b"\x00" * 100):
        r = pool.check_tx(junk)
        assert r.code == Code.DECODE_ERROR
    assert pool.check_tx("text").code == Code.DECODE_ERROR  # type: ignore[arg-type]


def test_flush_empties_the_pool() -> None:
    cb, pool, (a, b, _) = setup()
    assert pool.check_tx(a.transfer(b.address, 1).encoded).ok
    pool.flush()
    assert len(pool) == 0 and pool.size_bytes == 0
    a.nonce = 0
    assert pool.check_tx(a.transfer(b.address, 1).encoded).ok


# ---------------------------------------------------------------- gossip batches


@settings(max_examples=40, deadline=None)
@given(
    txs=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=50),
    limit=st.integers(400, 5000),
)
def test_batches_round_trip_within_the_size_limit(txs: list[bytes], limit: int) -> None:
    batches = split_into_batches(txs, limit)
    assert all(len(b) <= limit for b in batches)
    out = [tx for b in batches for tx in decode_tx_batch(b, max_bytes=limit)]
    assert out == txs


@settings(max_examples=100, deadline=None)
@given(junk=st.binary(max_size=300))
def test_batch_decoder_raises_only_codec_errors(junk: bytes) -> None:
    try:
        decode_tx_batch(junk)
    except CodecError:
        pass


@pytest.mark.parametrize(
    "data, kwargs, error",
    [
        (encode_tx_batch([b"a"] * 5), {"max_txs": 4}, "exceeds 4"),
        (encode_tx_batch([b"a" * 100]), {"max_bytes": 50}, "exceeds limit"),
        (encode([11, []]), {}, "at least one"),
        (encode([11, [b""]]), {}, "empty tx"),
        (encode([11, ["text"]]), {}, "expected bytes"),
        (encode_tx_batch([b"a"]) + b"\x00", {}, "trailing"),
    ],
)
def test_batch_decoder_is_strict(data: bytes, kwargs: dict[str, int], error: str) -> None:
    with pytest.raises(CodecError, match=error):
        decode_tx_batch(data, **kwargs)


def test_a_real_mempool_fits_in_few_messages() -> None:
    cb, pool, wallets = setup()
    for i in range(200):
        w = wallets[i % 3]
        assert pool.check_tx(w.transfer(wallets[(i + 1) % 3].address, 1).encoded).ok
    batches = split_into_batches(pool.raw_txs())
    assert len(batches) == 1 and len(batches[0]) < MAX_BATCH_BYTES
    fresh = Mempool(cb.app, cb.state)
    assert all(fresh.check_tx(tx).ok for tx in decode_tx_batch(batches[0]))
    assert len(fresh) == 200

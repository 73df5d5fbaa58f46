"""Ledger throughput: CheckTx/s, apply_block tx/s and chain-store write MB/s, with baselines.

Each figure is printed next to a baseline measured in the same run:

* CheckTx (mempool admission of encoded transfers) vs. the raw Ed25519
  verification of the same signatures: the floor no CheckTx can beat.
* apply_block (validate + execute blocks of transfers, app hash included)
  vs. the same signature checks alone.
* ChainStore.save_block (one synced batch per height) vs. raw plyvel
  batches of exactly the same keys and values, also synced, in a fresh DB.

Usage: ``python -m benchmarks.ledger [--accounts 2000] [--txs 4000] [--block-txs 1000]``
(run as a module: a script named ledger.py would shadow the ``ledger`` package)
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plyvel

from ledger.app import make_application
from ledger.crypto import PrivateKey, verify
from ledger.genesis import GenesisAccount, GenesisValidator, genesis_state, make_genesis
from ledger.mempool import Mempool, MempoolConfig
from ledger.state import AppState
from ledger.store import ChainStore
from ledger.testing import TEST_GENESIS_TIME, make_block, sign_commit, validator_key
from ledger.tx import TX_DOMAIN, Transfer, sign_tx

CHAIN = "fedledger-bench"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


class _RecordingBatch:
    def __init__(self, inner: Any, ops: list[tuple[bytes, bytes | None]]) -> None:
        self._inner, self._ops = inner, ops

    def put(self, k: bytes, v: bytes) -> None:
        self._ops.append((k, v))
        self._inner.put(k, v)

    def delete(self, k: bytes) -> None:
        self._ops.append((k, None))
        self._inner.delete(k)

    def __enter__(self) -> _RecordingBatch:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)


class _RecordingDB:
    """Forwards to plyvel and records every batch, so the baseline writes the same bytes."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.batches: list[list[tuple[bytes, bytes | None]]] = []

    def write_batch(self, **kw: Any) -> _RecordingBatch:
        self.batches.append([])
        return _RecordingBatch(self._db.write_batch(**kw), self.batches[-1])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--txs", type=int, default=4000, help="txs for the CheckTx run")
    ap.add_argument("--block-txs", type=int, default=1000)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--validators", type=int, default=4)
    args = ap.parse_args()

    keys = [PrivateKey.from_seed_int(i) for i in range(args.accounts)]
    vkeys = [validator_key(i) for i in range(args.validators)]
    genesis = make_genesis(
        CHAIN,
        [
            GenesisValidator(k.public_key, 100, f"v{i}", keys[0].address)
            for i, k in enumerate(vkeys)
        ],
        [GenesisAccount(k.address, 10**12) for k in keys],
        TEST_GENESIS_TIME,
    )
    app = make_application()
    state = genesis_state(genesis)
    n_blocks, per_block = args.blocks, args.block_txs
    total = max(args.txs, n_blocks * per_block)
    t_sign, txs = timed(
        lambda: [
            sign_tx(
                keys[i % len(keys)],
                CHAIN,
                Transfer(keys[(i + 7) % len(keys)].address, 1),
                i // len(keys),
            )
            for i in range(total)
        ]
    )
    raws = [tx.encoded for tx in txs]
    rows: list[tuple[str, str, str]] = []

    # ---- CheckTx
    check_n = args.txs
    pool = Mempool(app, state, MempoolConfig(max_txs=total + 1, max_bytes=1 << 34))
    t_check, results = timed(lambda: [pool.check_tx(r) for r in raws[:check_n]])
    assert all(r.ok for r in results), results[0]
    t_verify, _ = timed(
        lambda: [
            verify(t.signer_pubkey, t.signature, TX_DOMAIN, CHAIN, t.sign_payload())
            for t in txs[:check_n]
        ]
    )
    rows.append(
        (
            "CheckTx (mempool, transfers)",
            f"{check_n / t_check:,.0f} tx/s",
            f"Ed25519 verify alone: {check_n / t_verify:,.0f} /s",
        )
    )

    # ---- apply_block
    blocks = []
    st = state
    last_commit = None
    apply_time = 0.0
    commits = []
    results_list = []
    states = []
    for b in range(n_blocks):
        chunk = txs[b * per_block : (b + 1) * per_block]
        block = make_block(
            st, chunk, last_commit=last_commit, time=TEST_GENESIS_TIME + 1000 * (b + 1)
        )
        t0 = time.perf_counter()
        new_st, res = app.apply_block(st, block)
        apply_time += time.perf_counter() - t0
        assert all(r.ok for r in res.tx_results)
        commit = sign_commit(
            CHAIN, st.validators, vkeys, block.height, block.id, timestamp=block.header.time + 1
        )
        blocks.append(block)
        commits.append(commit)
        results_list.append(res)
        states.append(new_st)
        st, last_commit = new_st, commit
    applied = n_blocks * per_block
    t_vblocks, _ = timed(
        lambda: [
            verify(t.signer_pubkey, t.signature, TX_DOMAIN, CHAIN, t.sign_payload())
            for t in txs[:applied]
        ]
    )
    rows.append(
        (
            f"apply_block ({per_block} transfers/block, {len(state.app)} state keys)",
            f"{applied / apply_time:,.0f} tx/s",
            f"signature checks alone: {applied / t_vblocks:,.0f} /s",
        )
    )

    # ---- app hash
    big = AppState({b"acc/" + i.to_bytes(20, "big"): b"\x92\x01\x00" for i in range(100_000)})
    _ = big.root
    changes = {b"acc/" + (i * 37).to_bytes(20, "big"): b"\x92\x02\x01" for i in range(2000)}
    t_root, _ = timed(lambda: big.apply(changes).root)
    t_full, _ = timed(lambda: AppState(big.apply(changes).as_dict()).root)
    rows.append(
        (
            "app hash after 2,000 changes, 100k keys",
            f"{t_root * 1000:,.0f} ms",
            f"from scratch: {t_full * 1000:,.0f} ms",
        )
    )

    # ---- store writes
    tmp = Path(tempfile.mkdtemp(prefix="fedledger-bench-"))
    try:
        store = ChainStore.open(tmp / "chain.db")
        store.init_genesis(state)
        rec = _RecordingDB(store._db)
        store._db = rec  # type: ignore[assignment]
        t_save = 0.0
        for block, commit, new_st, res in zip(blocks, commits, states, results_list, strict=True):
            t0 = time.perf_counter()
            store.save_block(block, commit, new_st, res)
            t_save += time.perf_counter() - t0
        store._db = rec._db
        store.close()
        written = sum(len(k) + len(v or b"") for batch in rec.batches for k, v in batch)
        raw_db = plyvel.DB(str(tmp / "raw.db"), create_if_missing=True)

        def raw_write() -> None:
            for batch in rec.batches:
                with raw_db.write_batch(transaction=True, sync=True) as wb:
                    for k, v in batch:
                        if v is None:
                            wb.delete(k)
                        else:
                            wb.put(k, v)

        t_raw, _ = timed(raw_write)
        raw_db.close()
        mb = written / 1e6
        rows.append(
            (
                f"ChainStore.save_block ({len(rec.batches)} heights, {mb:.1f} MB, sync)",
                f"{mb / t_save:,.1f} MB/s ({t_save / len(rec.batches) * 1000:,.0f} ms/height)",
                f"raw plyvel synced batches, same bytes: {mb / t_raw:,.1f} MB/s",
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"# ledger benchmark — {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"# signing {total} txs took {t_sign:.1f} s (not measured below)")
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}} | {'fedledger':<28} | baseline (same run)")
    print(f"{'-' * w}-|-{'-' * 28}-|-{'-' * 40}")
    for name, val, base in rows:
        print(f"{name:<{w}} | {val:<28} | {base}")


if __name__ == "__main__":
    main()

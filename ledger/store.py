"""The chain store: blocks, commits, results, tx index, validator sets and app state in LevelDB.

One LevelDB per node home (``data/chain.db``), opened with plyvel. Keys
(``u64`` = 8-byte big-endian, so heights iterate in order):

| key                     | value                                        |
| ----------------------- | -------------------------------------------- |
| ``m:chain``             | ChainMeta: the last saved height and its state hashes |
| ``m:genesis``           | [chain id, initial height, app hash, validators hash] at genesis |
| ``m:pending``           | StagedBlock: a decided block not yet executed |
| ``b:`` u64(h)           | Block                                        |
| ``i:`` block id         | u64(h)                                       |
| ``c:`` u64(h)           | Commit for h from block h+1 (canonical)      |
| ``s:`` u64(h)           | Commit for h this node saw (seen commit)     |
| ``r:`` u64(h)           | BlockResults                                 |
| ``t:`` tx hash          | TxLocation (height, index, result code)      |
| ``v:`` u64(h)           | ValidatorSet that signs height h             |
| ``a:`` app key          | app state value (the latest state only)      |

Write order and crash safety: :meth:`ChainStore.save_block` puts everything a
height produces (block, commits, results, tx index, the validator set for
H+2, the app-state diff and ``m:chain``) into ONE LevelDB write batch written
with ``sync=True``. LevelDB appends a batch to its log as a single
checksummed record and replays only whole records on recovery, and sync
makes the call return only after fsync; so after any crash either all of
height H is there or none of it, and ``m:chain`` never points at a height
whose records are missing. A decided block can first be staged with
:meth:`stage_block` (its own synced write): a crash between staging and
saving leaves a *half-finished height* that :func:`ledger.recovery.recover`
detects on start and completes by re-executing the staged block, which is
deterministic. :meth:`open` also deletes records above the last complete
height (none can exist unless something outside this class wrote them) and
refuses a store whose state does not hash to the recorded app hash.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import plyvel

from ledger.block import Block, Header
from ledger.chainstate import ChainState
from ledger.codec import CodecError, decode_record, encode, record
from ledger.errors import StoreCorruptError, StoreError
from ledger.failpoint import failpoint
from ledger.results import BlockResults, TxResult
from ledger.state import AppState
from ledger.tx import Tx
from ledger.validators import ValidatorSet
from ledger.votes import Commit

_META = b"m:chain"
_GENESIS = b"m:genesis"
_PENDING = b"m:pending"
_BLOCK = b"b:"
_BY_ID = b"i:"
_COMMIT = b"c:"
_SEEN = b"s:"
_RESULTS = b"r:"
_TX = b"t:"
_VALS = b"v:"
_APP = b"a:"
_LOC = struct.Struct(">QIH")
R = TypeVar("R")
_MAX_RECORD = 128 * 1024 * 1024  # stored blocks are bounded by params; this only guards the decoder


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


@record(74)
@dataclass(frozen=True)
class ChainMeta:
    chain_id: str
    initial_height: int
    last_block_height: int
    last_block_id: bytes
    last_block_time: int
    last_results_hash: bytes
    app_hash: bytes


@record(75)
@dataclass(frozen=True)
class StagedBlock:
    block: Block
    commit: Commit


@dataclass(frozen=True)
class TxLocation:
    """The tx index entry; the full result lives once, in the height's BlockResults.

    Stored as 14 fixed bytes (u64 height, u32 index, u16 code): an index private
    to the store, written once per tx, where the generic codec's cost would show.
    """

    height: int
    index: int
    code: int

    def to_bytes(self) -> bytes:
        return _LOC.pack(self.height, self.index, self.code)

    @classmethod
    def from_bytes(cls, raw: bytes) -> TxLocation:
        if len(raw) != _LOC.size:
            raise StoreCorruptError(f"tx index entry of {len(raw)} bytes")
        return cls(*_LOC.unpack(raw))


@dataclass(frozen=True)
class TxRecord:
    """A committed transaction with its result (RPC ``tx``)."""

    height: int
    index: int
    tx: Tx
    result: TxResult


class ChainStore:
    """Block store and state store of one node; every height is written atomically."""

    def __init__(self, db: plyvel.DB, path: str) -> None:
        self._db = db
        self.path = path
        self._state: ChainState | None = None

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, path: str | Path, *, create_if_missing: bool = True) -> ChainStore:
        """Open (or create) the store and check it; see the module docstring for repairs."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            db = plyvel.DB(str(path), create_if_missing=create_if_missing)
        except plyvel.Error as e:
            raise StoreError(f"cannot open chain store {path}: {e}") from e
        store = cls(db, str(path))
        try:
            store._check_and_repair()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- low-level

    def _get(self, key: bytes, cls: type[R], *, required: bool = False) -> R | None:
        raw = self._db.get(key)
        if raw is None:
            if required:
                raise StoreCorruptError(f"missing record {key!r}")
            return None
        try:
            return decode_record(raw, cls, max_size=_MAX_RECORD)
        except CodecError as e:
            raise StoreCorruptError(f"record {key!r} does not decode: {e}") from e

    def _meta(self) -> ChainMeta | None:
        return self._get(_META, ChainMeta)

    def _iter_prefix(
        self, prefix: bytes, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        it = (
            self._db.iterator(prefix=prefix)
            if start is None
            else self._db.iterator(start=start, stop=_prefix_stop(prefix))
        )
        with it:
            yield from it

    def _check_and_repair(self) -> None:
        meta = self._meta()
        if meta is None:
            for prefix in (_BLOCK, _APP, _VALS):
                if any(True for _ in self._iter_prefix(prefix)):
                    raise StoreCorruptError(f"{prefix!r} records present but m:chain is missing")
            return
        h = meta.last_block_height
        # Records above the last complete height cannot come from save_block (one batch);
        # drop them so a re-execution starts from a clean slate.
        stray: list[bytes] = []
        for prefix, above in (
            (_BLOCK, h),
            (_SEEN, h),
            (_RESULTS, h),
            (_COMMIT, h - 1),
            (_VALS, h + 2),
        ):
            stray.extend(k for k, _ in self._iter_prefix(prefix, prefix + _u64(above + 1)))
        if stray:
            with self._db.write_batch(transaction=True, sync=True) as wb:
                for k in stray:
                    wb.delete(k)
        self._state = self._load_state(meta)

    def _load_state(self, meta: ChainMeta) -> ChainState:
        h = meta.last_block_height
        if h >= meta.initial_height:
            blk = self.block(h)
            if blk is None:
                raise StoreCorruptError(f"m:chain says height {h} but block {h} is missing")
            if blk.id != meta.last_block_id:
                raise StoreCorruptError(f"block {h} does not match m:chain's last block id")
            last_vals = self._required_vals(h)
        else:
            last_vals = ValidatorSet(())
        app = AppState({k[len(_APP) :]: v for k, v in self._iter_prefix(_APP)})
        if app.root != meta.app_hash:
            raise StoreCorruptError("app state does not hash to the app hash in m:chain")
        return ChainState(
            chain_id=meta.chain_id,
            initial_height=meta.initial_height,
            last_block_height=h,
            last_block_id=meta.last_block_id,
            last_block_time=meta.last_block_time,
            last_validators=last_vals,
            validators=self._required_vals(h + 1),
            next_validators=self._required_vals(h + 2),
            last_results_hash=meta.last_results_hash,
            app=app,
        )

    def _required_vals(self, height: int) -> ValidatorSet:
        v = self._get(_VALS + _u64(height), ValidatorSet, required=True)
        assert v is not None  # required=True raises instead
        return v

    # ---------------------------------------------------------------- state

    @property
    def is_initialized(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> ChainState:
        """The state after the last saved height (kept in memory)."""
        if self._state is None:
            raise StoreError("chain store has no genesis state yet")
        return self._state

    @property
    def height(self) -> int:
        """The last saved height (``initial_height - 1`` right after genesis)."""
        return self.state.last_block_height

    def init_genesis(self, state: ChainState) -> None:
        """Write the genesis state once; later calls check it is the same genesis."""
        fingerprint = encode(_genesis_fingerprint(state))
        if self._state is not None:
            if self._state.chain_id != state.chain_id:
                raise StoreError(
                    f"store belongs to chain {self._state.chain_id!r}, not {state.chain_id!r}"
                )
            if self._db.get(_GENESIS) != fingerprint:
                raise StoreError("store was initialised from a different genesis of this chain")
            return
        h = state.last_block_height
        with self._db.write_batch(transaction=True, sync=True) as wb:
            wb.put(_GENESIS, fingerprint)
            for k, v in state.app.items():
                wb.put(_APP + k, v)
            wb.put(_VALS + _u64(h + 1), encode(state.validators))
            wb.put(_VALS + _u64(h + 2), encode(state.next_validators))
            wb.put(_META, encode(_meta_of(state)))
        self._state = state

    # ---------------------------------------------------------------- writes

    def stage_block(self, block: Block, commit: Commit) -> None:
        """Durably remember a decided block before executing it (see :mod:`ledger.recovery`)."""
        self._expect_next(block, commit)
        failpoint("store.stage.before")
        self._db.put(_PENDING, encode(StagedBlock(block, commit)), sync=True)
        failpoint("store.stage.after")

    def pending_block(self) -> StagedBlock | None:
        return self._get(_PENDING, StagedBlock)

    def drop_pending(self) -> None:
        self._db.delete(_PENDING, sync=True)

    def _expect_next(self, block: Block, commit: Commit) -> None:
        if block.height != self.height + 1:
            raise StoreError(f"expected block {self.height + 1}, got {block.height}")
        if commit.block_id != block.id or commit.height != block.height:
            raise StoreError("commit is not for this block")

    def save_block(
        self, block: Block, commit: Commit, new_state: ChainState, results: BlockResults
    ) -> None:
        """Persist height H = ``block.height`` and the state it produced, atomically and synced.

        ``commit`` is the +2/3 precommits this node saw for the block (the
        canonical commit arrives later, in block H+1's ``last_commit``).
        """
        self._expect_next(block, commit)
        old = self.state
        h = block.height
        if new_state.last_block_height != h or new_state.last_block_id != block.id:
            raise StoreError("new_state is not the state after this block")
        if results.height != h or len(results.tx_results) != len(block.txs):
            raise StoreError("results are not this block's")
        failpoint("store.save.before_batch")
        with self._db.write_batch(transaction=True, sync=True) as wb:
            wb.put(_BLOCK + _u64(h), block.encoded)
            wb.put(_BY_ID + block.id, _u64(h))
            wb.put(_SEEN + _u64(h), encode(commit))
            if block.last_commit is not None:
                wb.put(_COMMIT + _u64(h - 1), encode(block.last_commit))
            wb.put(_RESULTS + _u64(h), encode(results))
            for i, (tx, res) in enumerate(zip(block.txs, results.tx_results, strict=True)):
                self._index_tx(wb, tx.hash, TxLocation(h, i, res.code))
            wb.put(_VALS + _u64(h + 2), encode(new_state.next_validators))
            for k, v in new_state.app.diff(old.app).items():
                if v is None:
                    wb.delete(_APP + k)
                else:
                    wb.put(_APP + k, v)
            pending = self.pending_block()
            if pending is not None and pending.block.height <= h:
                wb.delete(_PENDING)
            wb.put(_META, encode(_meta_of(new_state)))
            failpoint("store.save.in_batch")  # a crash here must lose the whole batch
        failpoint("store.save.after_batch")
        self._state = new_state

    def _index_tx(self, wb: Any, tx_hash: bytes, loc: TxLocation) -> None:
        # A byzantine proposer may include an already committed tx again (it then fails
        # on its nonce); keep pointing at the successful inclusion.
        # A tx succeeds at most once (nonces), so a success always wins; a failure is
        # indexed only where nothing is indexed yet.
        if loc.code != 0 and self._db.get(_TX + tx_hash) is not None:
            return
        wb.put(_TX + tx_hash, loc.to_bytes())

    # ---------------------------------------------------------------- reads

    def block(self, height: int) -> Block | None:
        return self._get(_BLOCK + _u64(height), Block)

    def block_by_hash(self, block_id: bytes) -> Block | None:
        raw = self._db.get(_BY_ID + block_id)
        return None if raw is None else self.block(int.from_bytes(raw, "big"))

    def header(self, height: int) -> Header | None:
        b = self.block(height)
        return None if b is None else b.header

    def commit(self, height: int) -> Commit | None:
        """The canonical commit for ``height`` if block height+1 is saved, else the seen one."""
        return self._get(_COMMIT + _u64(height), Commit) or self._get(_SEEN + _u64(height), Commit)

    def seen_commit(self, height: int) -> Commit | None:
        return self._get(_SEEN + _u64(height), Commit)

    def block_results(self, height: int) -> BlockResults | None:
        return self._get(_RESULTS + _u64(height), BlockResults)

    def tx_location(self, tx_hash: bytes) -> TxLocation | None:
        raw = self._db.get(_TX + tx_hash)
        if raw is None:
            return None
        loc = TxLocation.from_bytes(raw)
        if self._state is not None and loc.height > self.height:
            return None  # only a writer outside this class could leave such an entry
        return loc

    def tx(self, tx_hash: bytes) -> TxRecord | None:
        """The committed tx with this hash, its height, index and result."""
        loc = self.tx_location(tx_hash)
        if loc is None:
            return None
        block, results = self.block(loc.height), self.block_results(loc.height)
        if block is None or results is None or loc.index >= len(block.txs):
            raise StoreCorruptError(f"tx index points at missing height {loc.height}")
        return TxRecord(loc.height, loc.index, block.txs[loc.index], results.tx_results[loc.index])

    def validators_at(self, height: int) -> ValidatorSet | None:
        """The set that signs ``height`` (known up to the last saved height + 2)."""
        return self._get(_VALS + _u64(height), ValidatorSet)

    @property
    def base(self) -> int:
        """The lowest stored block height (no pruning yet: the initial height)."""
        return self.state.initial_height


def _genesis_fingerprint(state: ChainState) -> list[object]:
    return [state.chain_id, state.initial_height, state.app_hash, state.validators.hash]


def _meta_of(state: ChainState) -> ChainMeta:
    return ChainMeta(
        chain_id=state.chain_id,
        initial_height=state.initial_height,
        last_block_height=state.last_block_height,
        last_block_id=state.last_block_id,
        last_block_time=state.last_block_time,
        last_results_hash=state.last_results_hash,
        app_hash=state.app_hash,
    )


def _prefix_stop(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])

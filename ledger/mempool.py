"""The mempool: CheckTx admission, de-duplication, caps, recheck after commit, reaping.

Admission of raw tx bytes, in order (each failure has its own code):

1. size above ``max_tx_bytes``               -> ``TX_TOO_LARGE``
2. hash already pooled or recently committed -> ``DUPLICATE_TX``
3. pool at ``max_txs``                       -> ``MEMPOOL_FULL``
4. pool bytes would pass ``max_bytes``       -> ``MEMPOOL_FULL_BYTES``
5. not a canonical ``Tx``                    -> ``DECODE_ERROR``
6. the application's CheckTx against the *check state* (the committed
   state plus every pooled tx): signature, exact next nonce, balance and
   the handler's own rules.

Because pooled txs are applied to the check state, a sender's next tx needs
the next nonce and can only spend what the earlier pooled ones left. After
each commit :meth:`Mempool.update` removes the block's txs, rebuilds the
check state from the new state and rechecks the rest in arrival order
(signatures are not verified again), dropping what the block invalidated.
Arrival order is per-sender nonce order, so :meth:`reap` returns txs in that
order. The pool is plain Python: no I/O, no trio, no plyvel.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ledger.app import Application
from ledger.chainstate import ChainState
from ledger.codec import CodecError, decode_record, sha256
from ledger.results import Code
from ledger.state import Overlay
from ledger.tx import Tx


@dataclass(frozen=True)
class MempoolConfig:
    max_txs: int = 5000
    max_bytes: int = 64 * 1024 * 1024
    max_tx_bytes: int = 64 * 1024  # txs carry CIDs, never weights; must fit a gossip batch
    cache_size: int = 20_000  # hashes of recently committed txs, refused as duplicates


@dataclass(frozen=True)
class CheckTxResult:
    """What ``broadcast_tx_sync`` reports: the CheckTx code and log, and the tx hash."""

    code: int
    log: str
    hash: bytes

    @property
    def ok(self) -> bool:
        return self.code == Code.OK


@dataclass(frozen=True)
class _Entry:
    tx: Tx
    raw: bytes


class Mempool:
    def __init__(
        self, app: Application, state: ChainState, config: MempoolConfig | None = None
    ) -> None:
        self.app = app
        self.config = config or MempoolConfig()
        self._state = state
        self._check_view = Overlay(state.app)
        self._txs: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._committed: OrderedDict[bytes, None] = OrderedDict()

    # ---------------------------------------------------------------- reads

    def __len__(self) -> int:
        return len(self._txs)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._txs

    def get(self, tx_hash: bytes) -> Tx | None:
        e = self._txs.get(tx_hash)
        return None if e is None else e.tx

    def txs(self, limit: int | None = None) -> list[Tx]:
        """Pooled txs in arrival order (RPC ``unconfirmed_txs``)."""
        out: list[Tx] = []
        for e in self._txs.values():
            if limit is not None and len(out) >= limit:
                break
            out.append(e.tx)
        return out

    def raw_txs(self) -> list[bytes]:
        return [e.raw for e in self._txs.values()]

    # ---------------------------------------------------------------- admission

    def check_tx(self, raw: bytes) -> CheckTxResult:
        """Admit ``raw`` (canonical tx bytes) or say why not; never raises on bad input."""
        cfg = self.config
        if not isinstance(raw, bytes):
            return CheckTxResult(Code.DECODE_ERROR, "tx must be bytes", b"")
        h = sha256(raw)
        if len(raw) > cfg.max_tx_bytes:
            return CheckTxResult(
                Code.TX_TOO_LARGE, f"tx of {len(raw)} bytes exceeds {cfg.max_tx_bytes}", h
            )
        if h in self._txs:
            return CheckTxResult(Code.DUPLICATE_TX, "tx already in mempool", h)
        if h in self._committed:
            return CheckTxResult(Code.DUPLICATE_TX, "tx already committed", h)
        if len(self._txs) >= cfg.max_txs:
            return CheckTxResult(Code.MEMPOOL_FULL, f"mempool holds {cfg.max_txs} txs", h)
        if self._bytes + len(raw) > cfg.max_bytes:
            return CheckTxResult(
                Code.MEMPOOL_FULL_BYTES, f"mempool would exceed {cfg.max_bytes} bytes", h
            )
        try:
            tx = decode_record(raw, Tx, max_size=cfg.max_tx_bytes)
        except CodecError as e:
            return CheckTxResult(Code.DECODE_ERROR, f"malformed tx: {e}", h)
        res = self.app.check_tx(self._state, tx, view=self._check_view)
        if not res.ok:
            return CheckTxResult(res.code, res.log, h)
        self._txs[h] = _Entry(tx, raw)
        self._bytes += len(raw)
        return CheckTxResult(Code.OK, "", h)

    # ---------------------------------------------------------------- commit

    def update(self, state: ChainState, committed: list[Tx] | tuple[Tx, ...]) -> list[bytes]:
        """After a commit: drop the block's txs, recheck the rest on ``state``.

        Returns the hashes of txs dropped because the new state made them
        invalid (not those included in the block).
        """
        for tx in committed:
            h = tx.hash
            e = self._txs.pop(h, None)
            if e is not None:
                self._bytes -= len(e.raw)
            self._committed[h] = None
            self._committed.move_to_end(h)
        while len(self._committed) > self.config.cache_size:
            self._committed.popitem(last=False)
        self._state = state
        self._check_view = Overlay(state.app)
        dropped = []
        for h, e in list(self._txs.items()):
            res = self.app.check_tx(state, e.tx, view=self._check_view, verify_signature=False)
            if not res.ok:
                del self._txs[h]
                self._bytes -= len(e.raw)
                dropped.append(h)
        return dropped

    def reap(self, max_bytes: int = -1, max_txs: int = -1) -> list[Tx]:
        """Txs for a proposal, at most ``max_txs`` and ``max_bytes`` of encoded txs (-1: no cap).

        Order is arrival order; once one tx of a sender does not fit, that
        sender's later txs are skipped too (they would fail on their nonce).
        """
        out: list[Tx] = []
        used = 0
        blocked: set[bytes] = set()
        for e in self._txs.values():
            if max_txs >= 0 and len(out) >= max_txs:
                break
            sender = e.tx.signer_pubkey
            if sender in blocked:
                continue
            if max_bytes >= 0 and used + len(e.raw) > max_bytes:
                blocked.add(sender)
                continue
            out.append(e.tx)
            used += len(e.raw)
        return out

    def flush(self) -> None:
        """Empty the pool (operator RPC ``unsafe_flush_mempool``)."""
        self._txs.clear()
        self._bytes = 0
        self._check_view = Overlay(self._state.app)

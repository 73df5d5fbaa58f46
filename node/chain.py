"""The node's ledger service: chain store, application, mempool, tx gossip and the commit path.

Consensus (or block sync) hands every decided block to :meth:`ChainService.commit_block`,
the one place where a block becomes part of this node's chain: validate and apply it,
persist block + commit + state in one synced LevelDB batch (off the trio thread), update
the mempool, publish events, wake `broadcast_tx_commit` waiters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ledger.app import Application, make_application
from ledger.block import Block
from ledger.chainstate import ChainState
from ledger.codec import CodecError
from ledger.fl.codes import result_code_name
from ledger.genesis import Genesis, format_time, genesis_state
from ledger.mempool import CheckTxResult, Mempool
from ledger.mempool import MempoolConfig as LedgerMempoolConfig
from ledger.recovery import recover
from ledger.results import BlockResults, Code
from ledger.store import ChainStore, TxRecord
from ledger.txbatch import decode_tx_batch, split_into_batches
from ledger.votes import Commit
from node.config import NodeConfig
from node.events import EventBus
from node.metrics import NodeMetrics
from node.p2p import Validation

# CheckTx codes that prove the sender of a gossiped tx is broken or malicious; every other
# rejection (stale nonce, full pool, duplicate) can happen to an honest peer.
_PENALISED = {Code.DECODE_ERROR, Code.BAD_SIGNATURE, Code.UNKNOWN_TX_TYPE, Code.TX_TOO_LARGE}


class ChainService:
    """Owns the chain store, the application state machine and the mempool of one node."""

    def __init__(self, data_dir: Any, cfg: NodeConfig, genesis: Genesis, log: Any,
                 events: EventBus, metrics: NodeMetrics,
                 app: Application | None = None) -> None:
        self.cfg = cfg
        self.genesis = genesis
        self.log = log
        self.events = events
        self.metrics = metrics
        self.app = app or make_application()
        self.store = ChainStore.open(data_dir / "chain.db")
        if not self.store.is_initialized:
            self.store.init_genesis(genesis_state(genesis))
        repaired = recover(self.store, self.app)
        if repaired is not None:
            log.warning("repaired a half-finished height at start", height=repaired)
        self.state: ChainState = self.store.state
        self.mempool = Mempool(self.app, self.state, LedgerMempoolConfig(
            max_txs=cfg.mempool.max_txs, max_bytes=cfg.mempool.max_bytes,
            max_tx_bytes=min(cfg.mempool.max_tx_bytes, LedgerMempoolConfig.max_tx_bytes)))
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()
        self._local: dict[bytes, tuple[bytes, float]] = {}  # our pending txs: hash -> raw, sent
        self._height_changed = trio.Event()
        self.penalize: Callable[[str, int, str], None] = lambda peer, pts, why: None
        self.publish: Callable[[str, bytes], Any] | None = None
        self.gossip_backlog: Callable[[], int] = lambda: 0  # RPCs queued for the slowest peer
        self.last_block_wall: float | None = None
        self.commit_lock = trio.Lock()

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------ queries

    @property
    def height(self) -> int:
        """Latest committed height (0 before the first block)."""
        return self.state.last_block_height

    def chain_info(self) -> dict[str, Any]:
        st = self.state
        return {
            "height": st.last_block_height,
            "hash": st.last_block_id.hex().upper(),
            "app_hash": st.app_hash.hex().upper(),
            "time": format_time(st.last_block_time),
            "earliest_height": self.store.base if st.last_block_height else 0,
        }

    async def wait_for_height(self, height: int) -> None:
        while self.height < height:
            await self._height_changed.wait()

    async def wait_tx_committed(self, tx_hash: bytes) -> TxRecord:
        while True:
            rec = self.store.tx(tx_hash)
            if rec is not None:
                return rec
            await self._height_changed.wait()

    # ------------------------------------------------------------ transactions

    async def submit_tx(self, raw: bytes) -> CheckTxResult:
        """CheckTx a locally submitted tx; if admitted, gossip it to the network."""
        res = self.mempool.check_tx(raw)
        if res.ok:
            self._local[res.hash] = (raw, trio.current_time())
            self._outbox.append(raw)
            self._outbox_ready.set()
        else:
            # any code: a contract's (e.g. FL DUPLICATE_SUBMISSION) too; an unknown one crashed
            # the trainer service that submitted the tx
            self.metrics.mempool_rejected.labels(reason=result_code_name(res.code)).inc()
        self.metrics.mempool_size.set(len(self.mempool))
        return res

    def validate_tx_batch(self, origin: str, data: bytes) -> Validation:
        """Gossip validator of `/txs`: CheckTx every tx of the batch (admitting the good ones).

        A batch is forwarded if it brought anything new; it is rejected (peer penalty) if a
        tx in it is malformed or forged, and ignored if all its txs were merely stale.
        """
        try:
            raws = decode_tx_batch(data)
        except CodecError as e:
            return Validation.reject(f"malformed tx batch: {e}")
        fresh = 0
        bad: list[str] = []
        for raw in raws:
            res = self.mempool.check_tx(raw)
            if res.ok:
                fresh += 1
            elif res.code in _PENALISED:
                bad.append(f"{result_code_name(res.code)}: {res.log}"[:120])
        self.metrics.mempool_size.set(len(self.mempool))
        if bad:
            return Validation.reject(f"{len(bad)} bad tx(s) in batch, first: {bad[0]}")
        return Validation.accept(fresh) if fresh else Validation.ignore("nothing new")

    async def on_tx_batch(self, origin: str, value: Any) -> None:
        return None  # the validator already admitted the txs

    async def gossip_loop(self) -> None:
        """Publish locally submitted txs in batches (many txs per gossip message)."""
        mp = self.cfg.mempool
        interval = mp.gossip_batch_interval_ms / 1000
        while True:
            await self._outbox_ready.wait()
            await trio.sleep(interval)  # gather a batch
            waited = interval
            while self.gossip_backlog() > mp.gossip_backlog_rpcs \
                    and waited < mp.gossip_batch_max_wait_ms / 1000:
                await trio.sleep(interval)  # peers are behind: fewer, larger messages
                waited += interval
            raws, self._outbox = self._outbox, []
            self._outbox_ready = trio.Event()
            if self.publish is None:
                continue
            for msg in split_into_batches(raws):
                try:
                    await self.publish("txs", msg)
                except Exception as e:
                    self.log.warning("tx gossip failed", error=repr(e), txs=len(raws))

    async def regossip_loop(self) -> None:
        """Gossip our own txs again while they stay pending.

        Gossip is fire-and-forget (LIBP2P_NOTES trap 3): a tx published while this node had no
        mesh peer for the topic, or dropped from a congested peer's queue, would sit in our
        mempool for good. Seen: 2 of 10 trainers' Join txs in the 14-process FL testnet.
        """
        after = self.cfg.mempool.regossip_after_ms / 1000
        if after <= 0:
            return
        while True:
            await trio.sleep(after / 2)
            now = trio.current_time()
            for h, (raw, sent) in list(self._local.items()):
                if h not in self.mempool:  # committed or evicted: nothing left to spread
                    del self._local[h]
                elif now - sent >= after:
                    self.log.info("tx still pending, gossiping it again", tx=h.hex()[:16])
                    self._local[h] = (raw, now)
                    self._outbox.append(raw)
                    self._outbox_ready.set()

    # ------------------------------------------------------------ commit path

    async def commit_block(self, block: Block, commit: Commit) -> tuple[ChainState, BlockResults]:
        """Make a decided block part of this node's chain (raises InvalidBlockError)."""
        async with self.commit_lock:
            if block.header.height != self.state.height:
                raise ValueError(f"expected block {self.state.height}, got {block.header.height}")
            new_state, results = self.app.apply_block(self.state, block, self.store)
            # Staged first: a crash between here and save_block is completed by `recover`.
            self.store.stage_block(block, commit)
            await trio.to_thread.run_sync(self.store.save_block, block, commit, new_state,
                                          results)
            self.state = new_state
            dropped = self.mempool.update(new_state, list(block.txs))
            self._after_commit(block, results, len(dropped))
            return new_state, results

    def _after_commit(self, block: Block, results: BlockResults, dropped: int) -> None:
        h = block.header
        now = trio.current_time()
        if self.last_block_wall is not None:
            self.metrics.block_interval.observe(now - self.last_block_wall)
        self.last_block_wall = now
        self.metrics.height.set(h.height)
        self.metrics.mempool_size.set(len(self.mempool))
        block_id = h.id.hex().upper()
        self.events.publish("NewBlock", {"height": str(h.height), "hash": block_id,
                                         "num_txs": str(len(block.txs)),
                                         "time": format_time(h.time)},
                            {"block.height": str(h.height)})
        for i, (tx, res) in enumerate(zip(block.txs, results.tx_results, strict=False)):
            self.events.publish("Tx", {"height": str(h.height), "index": i,
                                       "hash": tx.hash.hex().upper(), "code": int(res.code)},
                                {"tx.hash": tx.hash.hex().upper(), "tx.height": str(h.height)})
        try:
            for data, attrs in fl_round_events(block, results, self.state):
                self.events.publish("FLRound", data, attrs)
        except Exception as e:  # events are for watchers: never let them break the commit path
            self.log.error("FLRound event failed", height=h.height, error=repr(e))
        self.log.info("committed block", height=h.height, hash=block_id[:16], txs=len(block.txs),
                      app_hash=self.state.app_hash.hex()[:16], mempool=len(self.mempool),
                      rechecked_out=dropped)
        self._height_changed.set()
        self._height_changed = trio.Event()


def fl_round_events(block: Block, results: BlockResults,
                    state: ChainState) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(data, attributes) of the ``FLRound`` events of a committed block, in task order.

    One per round the block closed (its FL section: ``phase`` ``closed``) and one per HE
    round whose ``DecryptedAggregate`` it committed (``phase`` ``decrypted``, the round's
    model now known). ``data`` is the round's ``RoundResult`` as ``fl_round`` shows it plus
    ``height``, ``phase``, the task's ``status`` after the block and the close's ``paid`` and
    ``burned``; the attributes (``fl.task``, ``fl.round``, ``fl.phase``, ``fl.status``,
    ``fl.new_model_cid``, ``fl.accepted``, ``fl.rejected``: counts) are what queries match.
    """
    from ledger.fl import FLSection, get_result, get_task
    from ledger.fl.query import cid_text, to_json

    closed = {(int(e.attributes["task"]), int(e.attributes["round"])): e.attributes
              for e in results.begin_block_events if e.type == "fl.round_closed"}
    # (phase, result, the round's model, the close event's attributes)
    rounds: list[tuple[str, Any, bytes, dict[str, str]]] = []
    if isinstance(block.pol, FLSection):
        rounds += [("closed", r, r.new_model_cid, closed.get((r.task_id, r.round), {}))
                   for r in block.pol.results]
    for tr in results.tx_results:
        for e in tr.events:
            if e.type == "fl.decrypted":
                res = get_result(state, int(e.attributes["task"]), int(e.attributes["round"]))
                if res is not None:
                    rounds.append(("decrypted", res,
                                   bytes.fromhex(e.attributes["new_model_cid"]), {}))
    out = []
    for phase, res, model, close in rounds:
        task = get_task(state, res.task_id)
        status = task.status if task is not None else ""
        data: dict[str, Any] = {"height": str(block.header.height), "phase": phase,
                                "status": status, **to_json(res),
                                "new_model_cid": cid_text(model) if model else "",
                                "paid": int(close.get("paid", 0)),
                                "burned": int(close.get("burned", 0))}
        attrs = {"fl.task": str(res.task_id), "fl.round": str(res.round), "fl.phase": phase,
                 "fl.status": status, "fl.new_model_cid": data["new_model_cid"],
                 "fl.accepted": str(len(res.accepted)), "fl.rejected": str(len(res.rejected))}
        out.append((data, attrs))
    return out

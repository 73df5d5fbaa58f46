"""The trainer service: joins tasks, trains each open round on local data, submits and reveals.

Per round of a task it trains for: fetch the round's global model through the content
exchange, train in a worker thread while recording the PoL transcript, apply the task's
privacy mode to the update, write every object into the content store (pinned: the
validators fetch them from here), and submit ``SubmitUpdate``. Under the ``replay`` policy,
once the submission is committed (which fixes the verification seed), it stores the reveal
of the selected segments and submits ``Reveal``. Transactions are signed with the node's
account key (``keyring/<trainer.account or moniker>.json``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ledger.fl import (
    Join,
    Reveal,
    SubmitUpdate,
    TaskState,
    get_submission,
    get_trainer,
    list_tasks,
    round_id,
)
from ledger.tx import TxBody, sign_tx
from node.keys import load_account_key
from node.logs import get_logger
from storage.errors import FetchError

if TYPE_CHECKING:
    from node.daemon import Node


MAX_ATTEMPTS = 3  # per round; a persistent failure (bad data, bad model) must not spin
# Content that no connected peer serves *yet* (the global model's only holder restarting,
# connections still coming up) is not a persistent failure: the round is tried again after
# a backoff of 0.5, 1, 2, 4, 8, 8, ... s while it is open. Counting these as attempts made
# a trainer give up a round within one second of a validator's restart (seen in CI).
RETRY_BACKOFF_S = (0.5, 8.0)
# A sent SubmitUpdate that has not shown up in the state this many blocks later (it failed
# at delivery, e.g. it landed after the deadline that was then extended, or was dropped)
# is sent again while the round is still open.
RESUBMIT_AFTER_BLOCKS = 8


@dataclass
class RoundLog:
    task_id: int
    round: int
    samples: int
    loss: float
    seconds: float
    device: str
    submitted_at: float


class TrainerService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.cfg = node.cfg.trainer
        self.log = get_logger("fedledger.trainer", moniker=node.cfg.moniker)
        self.key = load_account_key(node.home.root, self.cfg.account or node.cfg.moniker)
        self.address = self.key.address
        self.dataset: Any = None
        self.busy: set[tuple[int, int]] = set()
        self.failures: dict[tuple[int, int], int] = {}
        # (task, round) -> fetch failures so far, and the trio time of the next try
        self.unreachable: dict[tuple[int, int], int] = {}
        self.retry_at: dict[tuple[int, int], float] = {}
        self.done: set[tuple[str, int, int]] = set()
        # (task, round) -> (the SubmitUpdate, height when sent, its tx hash)
        self._sent: dict[tuple[int, int], tuple[SubmitUpdate, int, bytes]] = {}
        self.history: list[RoundLog] = []
        self._next_nonce = 0
        self._last_transcript: dict[tuple[int, int], Any] = {}
        self.cpu = trio.CapacityLimiter(1)
        self._he: Any = None  # node.fl.he_trainer.HeTrainer, made for the first HE task

    def he(self) -> Any:
        if self._he is None:
            from node.fl.he_trainer import HeTrainer

            self._he = HeTrainer(self.node, self.address)
        return self._he

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        from node.fl.data import local_dataset

        self.dataset = await trio.to_thread.run_sync(local_dataset, self.cfg)
        self.log.info("trainer ready", account=self.address.hex(), samples=len(self.dataset),
                      dataset=self.cfg.dataset, tasks=self.cfg.tasks or ["*"])
        async with trio.open_nursery() as nursery:
            seen = -1
            while True:
                h = self.node.chain.height
                if h != seen:
                    seen = h
                    self._step(nursery)
                with trio.move_on_after(1.0):
                    await self.node.chain.wait_for_height(h + 1)

    def wants(self, task_id: int, task: TaskState) -> bool:
        if task.spec.data_schema != self.cfg.dataset:
            return False
        if self.cfg.attack == "absent":
            return False
        return not self.cfg.tasks or "*" in self.cfg.tasks or str(task_id) in self.cfg.tasks

    def _step(self, nursery: trio.Nursery) -> None:
        state = self.node.chain.state
        for task_id, task in list_tasks(state, "open"):
            if not self.wants(task_id, task):
                continue
            me = get_trainer(state, task_id, self.address)
            if me is None or not me.joined:
                if ("join", task_id, 0) not in self.done:
                    self.done.add(("join", task_id, 0))
                    x25519 = self.he().public_key if task.spec.uses_he else b""
                    nursery.start_soon(self._submit, Join(task_id, task.spec.join_bond, x25519),
                                       f"join task {task_id}")
                continue
            if me.jailed:
                continue
            if task.spec.uses_he and not self.he().has_share(task_id):
                continue  # HE: train once a key holder has sent this trainer its key share
            r = task.round
            sub = get_submission(state, task_id, r, self.address)
            sent = self._sent.get((task_id, r))
            if sub is None and sent is not None and (task_id, r) not in self.busy \
                    and sent[1] + RESUBMIT_AFTER_BLOCKS <= state.height < task.deadline:
                self._sent[(task_id, r)] = (sent[0], state.height, sent[2])
                # still in our mempool: on its way (blocks can outpace gossip), not lost
                if sent[2] not in self.node.chain.mempool:
                    nursery.start_soon(self._resubmit, task_id, r, sent[0])
            elif sub is None:
                if (task_id, r) not in self.busy and state.height < task.deadline \
                        and ("submit", task_id, r) not in self.done \
                        and self.failures.get((task_id, r), 0) < MAX_ATTEMPTS \
                        and trio.current_time() >= self.retry_at.get((task_id, r), 0.0):
                    self.busy.add((task_id, r))
                    nursery.start_soon(self._train_and_submit, task_id, task)
            elif task.spec.pol_policy == "replay" and not sub.reveal_cid \
                    and ("reveal", task_id, r) not in self.done:
                self.done.add(("reveal", task_id, r))
                nursery.start_soon(self._reveal, task_id, task, sub.seed)

    # ------------------------------------------------------------ transactions

    async def _resubmit(self, task_id: int, r: int, body: SubmitUpdate) -> None:
        tx_hash = await self._submit(body, f"update task {task_id} round {r} "
                                           "(again: not in the state)")
        if tx_hash is not None:
            self._sent[(task_id, r)] = (body, self.node.chain.height, tx_hash)

    async def _submit(self, body: TxBody, what: str) -> bytes | None:
        """Sign and submit; the tx hash once CheckTx admitted it, else None."""
        state = self.node.chain.state
        from ledger.schema import get_account

        acct = get_account(state.app, self.address)
        nonce = max(acct.nonce if acct is not None else 0, self._next_nonce)
        tx = sign_tx(self.key, self.node.chain_id, body, nonce)
        res = await self.node.chain.submit_tx(tx.encoded)
        if not res.ok:
            self.log.warning("transaction refused", what=what, code=res.code, log=res.log)
            if "nonce" in res.log.lower():
                self._next_nonce = acct.nonce if acct is not None else 0
            return None
        self._next_nonce = nonce + 1
        self.log.info("transaction sent", what=what, tx=tx.hash.hex()[:16])
        return tx.hash

    # ------------------------------------------------------------ rounds

    async def _train_and_submit(self, task_id: int, task: TaskState) -> None:
        r = task.round
        key = (task_id, r)
        try:
            await self._round(task_id, task)
        except FetchError as e:
            k = self.unreachable[key] = self.unreachable.get(key, 0) + 1
            first, cap = RETRY_BACKOFF_S
            wait = min(cap, first * 2 ** (k - 1))
            self.retry_at[key] = trio.current_time() + wait
            self.log.warning("round content not reachable yet, retrying", task=task_id,
                             round=r, error=repr(e)[:200], attempt=k, retry_in_s=wait)
        except Exception as e:
            n = self.failures[key] = self.failures.get(key, 0) + 1
            self.log.error("training round failed", task=task_id, round=r, error=repr(e),
                           attempt=n, exc_info=e)
        finally:
            self.busy.discard((task_id, r))

    async def _round(self, task_id: int, task: TaskState) -> None:
        from node.fl.work import TaskModel, train_round

        spec, r = task.spec, task.round
        content = self.node.content
        gcid = bytes(task.global_model_cid)
        if not content.store.has(gcid):
            # bounded: a fetch that never ends would hold this round busy forever (seen in the
            # demo); a failure is retried on the next block, up to MAX_ATTEMPTS
            await content.fetch(gcid, pin=f"global model task {task_id}", timeout_s=60.0)
        gbytes = content.store.get_bytes(gcid)
        # HE tasks have no PoL: one checkpoint interval covers the whole training
        tm = TaskModel(spec.model_id, dict(spec.model_config), dict(spec.train),
                       (1 << 20) if spec.uses_he else max(1, spec.pol_k))
        transform = await self._transform(task_id, task)
        rid = round_id(self.node.chain_id, task_id, r)
        self.log.info("training", task=task_id, round=r, samples=len(self.dataset),
                      device=self.cfg.device)
        async with self.cpu:
            out = await trio.to_thread.run_sync(lambda: train_round(
                tm, gbytes, gcid, self.dataset, rid, self.node.cfg.storage.chunk_size,
                self.cfg.device, transform_update=transform))
        pin = f"own submission task {task_id} round {r}"
        if spec.uses_he:  # only the ciphertext leaves: no plaintext model into the store
            out.sink.objects = {out.update_cid: out.sink.objects[out.update_cid]}
        out.sink.flush(content.store, pin=pin)
        self._last_transcript[(task_id, r)] = out.transcript
        body = SubmitUpdate(task_id, r, out.update_cid,
                            out.transcript_cid if spec.pol_policy != "off" else b"",
                            out.samples, out.data_root)
        tx_hash = await self._submit(body, f"update task {task_id} round {r}")
        if tx_hash is not None:
            self.done.add(("submit", task_id, r))
            self._sent[(task_id, r)] = (body, self.node.chain.height, tx_hash)
            self.history.append(RoundLog(task_id, r, out.samples, out.mean_loss, out.seconds,
                                         out.device, time.time()))
            self.log.info("update submitted", task=task_id, round=r, loss=round(out.mean_loss, 4),
                          seconds=round(out.seconds, 2), device=out.device)
        if spec.uses_he:
            async with self.cpu:
                await self.he().top_up(task_id)

    async def _reveal(self, task_id: int, task: TaskState, seed: bytes) -> None:
        from node.fl.work import reveal_for

        r = task.round
        transcript = self._last_transcript.get((task_id, r))
        if transcript is None:
            self.log.warning("no transcript to reveal (restarted mid-round?)", task=task_id,
                             round=r)
            return
        cid, sink = await trio.to_thread.run_sync(
            reveal_for, transcript, self.dataset, seed, self.node.cfg.storage.chunk_size)
        sink.flush(self.node.content.store, pin=f"own reveal task {task_id} round {r}")
        await self._submit(Reveal(task_id, r, cid), f"reveal task {task_id} round {r}")

    async def _transform(self, task_id: int, task: TaskState) -> Any:
        """DP noise and (evaluation only) the configured attack, or None for a plain update."""
        spec, attack = task.spec, self.cfg.attack
        if attack == "label_flip":
            attack = ""  # the poison is in the data (node.fl.data.local_dataset), not the update
        if spec.uses_he:
            return await self.he().transform(task_id, task, len(self.dataset))
        if spec.privacy not in ("dp", "dp+he") and not attack:
            return None
        from ledger.fl import list_submissions, list_trainers
        from node.fl.transforms import make_transform

        honest = []
        if attack in ("alie", "ipm", "free_rider_copy"):
            honest = await self._committed_deltas(task_id, task)
        state = self.node.chain.state
        population = sum(1 for _, t in list_trainers(state, task_id) if t.joined)
        del list_submissions
        return make_transform(spec, task_id, task.round, self.address, attack,
                              len(self.dataset), honest, population)

    async def _committed_deltas(self, task_id: int, task: TaskState) -> list[Any]:
        """Float deltas of the round's already-committed updates (public in plaintext tasks)."""
        from fl.models import flatten, from_safetensors
        from ledger.fl import list_submissions

        content = self.node.content
        g = flatten(from_safetensors(content.store.get_bytes(task.global_model_cid)))
        out = []
        for trainer, sub in list_submissions(self.node.chain.state, task_id, task.round):
            if trainer == self.address:
                continue
            try:
                if not content.store.has(sub.update_cid):
                    await content.fetch(sub.update_cid, timeout_s=10)
                out.append(flatten(from_safetensors(content.store.get_bytes(sub.update_cid))) - g)
            except Exception:
                continue
        return out

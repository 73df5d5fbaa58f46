"""A trainer's side of HE tasks: its X25519 key, the key share, and encrypting its update.

The trainer joins with the public half of ``HOME/config/fl_x25519.key`` (32 raw bytes, mode
0600, made on first use) and trains a round only once a key holder's ``KeyShare`` for it is
on chain. It opens the share (:func:`node.fl.keywrap.unwrap`, bound to chain, task, itself
and the sending key holder), checks that the bundle names the task's public context, and
encrypts its (DP-noised, under ``dp+he``) update with that public context: online, with an
encryption of zero made after its previous submission while it waited for the next round
(:class:`fl.privacy.ZeroPool`; the first round encrypts from scratch). Only the
ciphertext leaves the trainer: the plaintext trained model and PoL objects are never
written to its content store for an HE task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ledger.fl import TaskState, get_key_share
from node.fl.keywrap import X25519KeyPair, load_or_create_keypair, share_context, unwrap

if TYPE_CHECKING:
    from fl.privacy.he import PublicContext, ZeroPool
    from fl.privacy.packing import Layout
    from node.daemon import Node

X25519_KEY_FILE = "config/fl_x25519.key"
FETCH_TIMEOUT_S = 30.0


@dataclass
class HeTask:
    share_cid: bytes
    public: PublicContext
    layout: Layout
    key_id: bytes
    zeros: ZeroPool  # encryptions of zero for this task's updates, each used once


class HeTrainer:
    def __init__(self, node: Node, address: bytes) -> None:
        self.node = node
        self.address = address
        self.keys: X25519KeyPair = load_or_create_keypair(node.home.root / X25519_KEY_FILE)
        self.tasks: dict[int, HeTask] = {}
        self.last: dict[str, Any] = {}  # figures of the last encrypted update

    @property
    def public_key(self) -> bytes:
        return self.keys.public

    def has_share(self, task_id: int) -> bool:
        return get_key_share(self.node.chain.state, task_id, self.address) is not None

    async def _fetch(self, cid: bytes, pin: str) -> bytes:
        content = self.node.content
        if not content.store.has(cid):
            await content.fetch(cid, pin=pin, timeout_s=FETCH_TIMEOUT_S)
        return content.store.get_bytes(cid)  # type: ignore[no-any-return]

    async def prepare(self, task_id: int, task: TaskState) -> HeTask:
        """Open this trainer's key share and load the task's public context (cached)."""
        from node.fl.he_work import HeTaskContext, KeyBundle

        spec = task.spec
        share = get_key_share(self.node.chain.state, task_id, self.address)
        if share is None:
            raise LookupError(f"no key share for task {task_id} yet")
        cached = self.tasks.get(task_id)
        if cached is not None and cached.share_cid == bytes(share.encrypted_key_cid):
            return cached
        if share.holder not in spec.key_holders:  # the contract checks it; be safe
            raise ValueError("key share from an account that is not a key holder")
        wrapped = await self._fetch(bytes(share.encrypted_key_cid), f"key share task {task_id}")
        ctx = share_context(self.node.chain_id, task_id, self.address, bytes(share.holder))
        bundle = KeyBundle.from_bytes(unwrap(wrapped, self.keys, ctx))
        if bundle.task_id != task_id or bundle.he_context_cid != bytes(spec.he_context_cid) \
                or bundle.holder != bytes(share.holder):
            raise ValueError("the key share is for another task, context or key holder")
        obj = await self._fetch(bytes(spec.he_context_cid), f"he context task {task_id}")
        tctx = await trio.to_thread.run_sync(HeTaskContext.from_bytes, obj)
        if tctx.key_id != bundle.key_id:
            raise ValueError("the task's public context is not the key the key holder shared")
        public = await trio.to_thread.run_sync(tctx.public_context)
        from fl.privacy.he import ZeroPool
        from node.fl.he_work import model_size

        zeros = ZeroPool(public, model_size(spec.model_id, dict(spec.model_config)), tctx.layout)
        he = HeTask(bytes(share.encrypted_key_cid), public, tctx.layout, tctx.key_id, zeros)
        self.tasks[task_id] = he
        return he

    async def transform(self, task_id: int, task: TaskState, samples: int) -> Any:
        """``transform(global_state, trained_state) -> ciphertext bytes`` for train_round."""
        from node.fl.he_work import encrypt_update, expected_weight, spec_dp

        he = await self.prepare(task_id, task)
        dp = spec_dp(task.spec)
        weight = expected_weight(task.spec, samples)

        def fn(gstate: dict[str, Any], trained: dict[str, Any]) -> bytes:
            # noise_seed None: fresh OS randomness (a seed anyone can derive voids DP)
            out = encrypt_update(gstate, trained, he.public, he.layout, weight, dp,
                                 zeros=he.zeros)
            self.last = {"task": task_id, "round": task.round, "bytes": len(out.blob),
                         "clamped": out.clamped, "clipped": out.clipped, "weight": out.weight}
            return out.blob

        return fn

    async def top_up(self, task_id: int) -> None:
        """Make the encryptions of zero for this task's next update (off the round's
        critical path: called after a submission, while the round closes)."""
        he = self.tasks.get(task_id)
        if he is not None and len(he.zeros) == 0:
            await trio.to_thread.run_sync(he.zeros.fill, 1)

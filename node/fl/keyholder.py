"""The HE key holder service (``[keyholder] enabled``; docs/fl-chain.md section 6).

A node whose account is in an HE task's ``key_holders`` and that holds the task's CKKS
secret context:

* **key shares**: for each trainer that joined with an X25519 key and has no share yet, it
  wraps a :class:`~node.fl.he_work.KeyBundle` to the trainer's key (:mod:`node.fl.keywrap`),
  stores the wrapped object in its content store and sends ``KeyShare``; trainers wait for
  it before they train (it tells them a key holder for the task's public key is alive);
* **decryption**: when a round is ``awaiting_decryption``, it fetches the round's encrypted
  aggregate (``RoundResult.encrypted_aggregate_cid``), checks that it sums exactly the
  accepted submissions, decrypts it, applies FedAvg to the global model
  (:func:`node.fl.he_work.decrypt_round`), stores the new model and sends
  ``DecryptedAggregate``. Only the sum is ever decrypted here.

Secret contexts are files ``HOME/<secrets_dir>/<key id hex>.ctx`` (mode 0600, the directory
0700), made by :func:`create_context` (RPC ``fl_he_context_new``, operator-only) before the
task is created: the public task context object goes into the content store and its CID
into ``TaskSpec.he_context_cid``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ledger.fl import (
    AWAITING_DECRYPTION,
    FINISHED,
    DecryptedAggregate,
    KeyShare,
    TaskState,
    get_key_share,
    get_result,
    list_tasks,
    list_trainers,
)
from ledger.tx import TxBody, sign_tx
from node.fl.keywrap import share_context, wrap, write_private_file
from node.keys import load_account_key
from node.logs import get_logger

if TYPE_CHECKING:
    from fl.privacy.he import SecretContext
    from node.daemon import Node
    from node.fl.he_work import HeTaskContext
    from node.rpc.jsonrpc import Registry

RETRY_BLOCKS = 8  # resend a key share or a decryption not committed after this many blocks
FETCH_TIMEOUT_S = 30.0


class SecretStore:
    """The key holder's secret CKKS contexts, one 0600 file per public key id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[bytes, SecretContext] = {}

    def path(self, key_id: bytes) -> Path:
        return self.root / f"{key_id.hex()}.ctx"

    def save(self, secret: SecretContext) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        path = self.path(secret.key_id)
        write_private_file(path, secret.secret_bytes())
        self._cache[secret.key_id] = secret
        return path

    def has(self, key_id: bytes) -> bool:
        return key_id in self._cache or self.path(key_id).is_file()

    def load(self, key_id: bytes, params: Any = None) -> SecretContext | None:
        """The secret context of ``key_id`` (None if this node does not hold it)."""
        if key_id in self._cache:
            return self._cache[key_id]
        path = self.path(key_id)
        if not path.is_file():
            return None
        from fl.privacy.he import SecretContext

        secret = SecretContext.from_secret_bytes(path.read_bytes(), params)
        if secret.key_id != key_id:
            raise ValueError(f"{path} holds the secret of another public key")
        self._cache[key_id] = secret
        return secret


def create_context(store: SecretStore, params_name: str, layout: Any) -> tuple[
        HeTaskContext, Path]:
    """New CKKS keys: the secret goes to ``store``; returns the public task context object."""
    from node.fl.he_work import make_task_context

    secret, ctx = make_task_context(params_name, layout)
    return ctx, store.save(secret)


class KeyHolderService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.cfg = node.cfg.keyholder
        self.log = get_logger("fedledger.keyholder", moniker=node.cfg.moniker)
        self.key = load_account_key(node.home.root, self.cfg.account or node.cfg.moniker)
        self.address = self.key.address
        self.secrets = SecretStore(node.home.root / self.cfg.secrets_dir)
        self._contexts: dict[bytes, HeTaskContext] = {}
        self._pending: dict[tuple[str, int, Any], int] = {}  # what -> height started
        self._tx_lock = trio.Lock()
        self.cpu = trio.CapacityLimiter(1)
        self.stats: dict[str, Any] = {"key_shares": 0, "decrypted": 0, "errors": 0,
                                      "decrypt_seconds": []}

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        self.log.info("key holder ready", account=self.address.hex(),
                      secrets=str(self.secrets.root))
        async with trio.open_nursery() as nursery:
            seen = -1
            while True:
                h = self.node.chain.height
                if h != seen:
                    seen = h
                    self._step(nursery)
                with trio.move_on_after(1.0):
                    await self.node.chain.wait_for_height(h + 1)

    def _due(self, key: tuple[str, int, Any], height: int) -> bool:
        started = self._pending.get(key)
        if started is not None and height - started < RETRY_BLOCKS:
            return False
        self._pending[key] = height
        return True

    def _step(self, nursery: trio.Nursery) -> None:
        state = self.node.chain.state
        h = state.height
        for task_id, task in list_tasks(state):
            spec = task.spec
            if not spec.uses_he or self.address not in spec.key_holders or \
                    task.status == FINISHED:
                continue
            for trainer, tr in list_trainers(state, task_id):
                if not tr.joined or tr.jailed or len(tr.x25519_pubkey) != 32:
                    continue
                if get_key_share(state, task_id, trainer) is not None:
                    continue
                if self._due(("share", task_id, trainer), h):
                    nursery.start_soon(self._share, task_id, task, trainer,
                                       bytes(tr.x25519_pubkey))
            if task.status == AWAITING_DECRYPTION and self._due(("decrypt", task_id, task.round),
                                                                h):
                nursery.start_soon(self._decrypt, task_id, task)

    # ------------------------------------------------------------ content and transactions

    async def _fetch(self, cid: bytes, pin: str) -> bytes:
        content = self.node.content
        if not content.store.has(cid):
            await content.fetch(cid, pin=pin, timeout_s=FETCH_TIMEOUT_S)
        return content.store.get_bytes(cid)  # type: ignore[no-any-return]

    async def context(self, task_id: int, task: TaskState) -> HeTaskContext:
        from node.fl.he_work import HeTaskContext

        cid = bytes(task.spec.he_context_cid)
        if cid not in self._contexts:
            data = await self._fetch(cid, f"he context task {task_id}")
            self._contexts[cid] = await trio.to_thread.run_sync(HeTaskContext.from_bytes, data)
        return self._contexts[cid]

    async def _secret(self, task_id: int, task: TaskState) -> tuple[HeTaskContext,
                                                                     SecretContext]:
        ctx = await self.context(task_id, task)
        secret = await trio.to_thread.run_sync(self.secrets.load, ctx.key_id, ctx.params)
        if secret is None:
            raise LookupError(f"no secret context for key {ctx.key_id.hex()[:16]} in "
                              f"{self.secrets.root}")
        return ctx, secret

    async def _send(self, body: TxBody, what: str) -> bool:
        """Sign with the key holder's account and submit; the nonce counts our pooled txs."""
        from ledger.schema import get_account

        async with self._tx_lock:
            chain = self.node.chain
            acct = get_account(chain.state.app, self.address)
            nonce = acct.nonce if acct is not None else 0
            for tx in chain.mempool.txs():
                if tx.signer == self.address:
                    nonce = max(nonce, tx.nonce + 1)
            tx = sign_tx(self.key, self.node.chain_id, body, nonce)
            res = await chain.submit_tx(tx.encoded)
        if not res.ok:
            self.log.warning("transaction refused", what=what, code=res.code, log=res.log)
            return False
        self.log.info("transaction sent", what=what, tx=tx.hash.hex()[:16])
        return True

    # ------------------------------------------------------------ work

    async def _share(self, task_id: int, task: TaskState, trainer: bytes, pub: bytes) -> None:
        from node.fl.he_work import KeyBundle

        try:
            ctx, _ = await self._secret(task_id, task)  # share only keys this node holds
            bundle = KeyBundle(task_id, bytes(task.spec.he_context_cid), ctx.key_id,
                               self.address)
            blob = wrap(bundle.to_bytes(), pub,
                        share_context(self.node.chain_id, task_id, trainer, self.address))
            cid = bytes(self.node.content.store.put_bytes(
                blob, chunk_size=self.node.cfg.storage.chunk_size,
                pin=f"key share task {task_id}"))
            if await self._send(KeyShare(task_id, trainer, cid),
                                f"key share task {task_id} trainer {trainer.hex()[:12]}"):
                self.stats["key_shares"] += 1
        except Exception as e:
            self.stats["errors"] += 1
            self.log.error("key share failed", task=task_id, trainer=trainer.hex()[:12],
                           error=repr(e)[:300])

    async def _decrypt(self, task_id: int, task: TaskState) -> None:
        from node.fl.he_work import decrypt_round, expected_weight, model_size

        r = task.round
        try:
            result = get_result(self.node.chain.state, task_id, r)
            if result is None or not result.encrypted_aggregate_cid:
                raise LookupError(f"round {r} has no encrypted aggregate on chain")
            ctx, secret = await self._secret(task_id, task)
            pin = f"decrypt task {task_id} round {r}"
            total = await self._fetch(bytes(result.encrypted_aggregate_cid), pin)
            gbytes = await self._fetch(bytes(task.global_model_cid),
                                       f"global model task {task_id}")
            # The sum must hold exactly the accepted submissions (validators agreed on it;
            # a key holder decrypts nothing else, in particular never a single update).
            from fl.privacy.he import inspect

            h = inspect(total)
            want_w = sum(expected_weight(task.spec, c.samples) for c in result.accepted)
            if h.summands != len(result.accepted) or h.weight != want_w:
                raise ValueError(f"encrypted aggregate sums {h.summands} updates of weight "
                                 f"{h.weight}; the round accepted {len(result.accepted)} of "
                                 f"weight {want_w}")
            count = model_size(task.spec.model_id, dict(task.spec.model_config))
            t0 = time.perf_counter()
            async with self.cpu:
                out = await trio.to_thread.run_sync(
                    decrypt_round, total, secret, ctx.layout, count, gbytes)
            seconds = time.perf_counter() - t0
            cid = bytes(self.node.content.store.put_bytes(
                out.new_model, chunk_size=self.node.cfg.storage.chunk_size,
                pin=f"global model task {task_id} round {r}"))
            self.log.info("round decrypted", task=task_id, round=r, summands=out.summands,
                          weight=out.weight, residual=round(out.max_residual, 4),
                          seconds=round(seconds, 3), model=cid.hex()[:16])
            if await self._send(DecryptedAggregate(task_id, r, cid),
                                f"decrypted aggregate task {task_id} round {r}"):
                self.stats["decrypted"] += 1
                self.stats["decrypt_seconds"] = [*self.stats["decrypt_seconds"][-49:],
                                                 round(seconds, 4)]
        except Exception as e:
            self.stats["errors"] += 1
            self.log.error("decryption failed", task=task_id, round=r, error=repr(e)[:300])


# ------------------------------------------------------------ RPC


def register_keyholder_rpc(reg: Registry, node: Node) -> None:
    from node.rpc.jsonrpc import SERVER_ERROR, Param, RPCError, invalid_params

    async def fl_he_context_new(layout: dict[str, Any], params: str = "n8192") -> dict[str, Any]:
        """Make CKKS keys for a new HE task on this key holder: the secret context stays in
        the home (0600), the public task context object goes into the content store; its
        CID is the TaskSpec's he_context_cid and ``holder`` a key_holders entry."""
        from fl.privacy import PrivacyError
        from fl.privacy.packing import Layout
        from storage.cid import parse_cid

        kh = node.fl.keyholder
        if kh is None:
            raise RPCError(SERVER_ERROR, "Not a key holder",
                           "this node does not run the key holder ([keyholder] enabled)")
        try:
            lay = Layout(**{k: int(layout[k]) for k in ("frac_bits", "lanes", "lane_bits",
                                                         "max_weight")})
        except (KeyError, TypeError, ValueError) as e:
            raise invalid_params(f"layout: {e}") from None
        try:
            ctx, _ = await trio.to_thread.run_sync(create_context, kh.secrets, params, lay)
        except PrivacyError as e:
            raise invalid_params(str(e)) from None
        cid = node.content.store.put_bytes(ctx.to_bytes(),
                                           chunk_size=node.cfg.storage.chunk_size,
                                           pin=f"he context {ctx.key_id.hex()[:16]}")
        return {"cid": str(parse_cid(bytes(cid))), "key_id": ctx.key_id.hex(),
                "holder": kh.address.hex(), "params": params, "layout": lay.describe(),
                "bytes": len(ctx.to_bytes())}

    async def fl_keyholder_status() -> dict[str, Any]:
        """This node's key holder: account and counters (if enabled)."""
        kh = node.fl.keyholder
        if kh is None:
            return {"enabled": False}
        return {"enabled": True, "account": kh.address.hex(), "stats": dict(kh.stats)}

    reg.add("fl_he_context_new", fl_he_context_new,
            [Param("layout", "dict", required=True), Param("params", "str", max_len=16)],
            operator=True)
    reg.add("fl_keyholder_status", fl_keyholder_status)

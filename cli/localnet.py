"""A local FL consortium of `fedledger node run` processes on loopback: validators + trainers.

Used by `fedledger demo`, the end-to-end tests and the round-overhead benchmark, so all
three run the product exactly as an operator would: separate OS processes, real libp2p,
real LevelDB, one home per node, the task created through RPC with a signed TaskCreate.
"""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cli.taskspec import TaskOptions, build_spec, initial_model_bytes
from node.config import save_config
from node.home import TestnetNode, make_testnet
from node.ports import free_port_block


def fedledger_cmd() -> list[str]:
    script = Path(sys.executable).parent / "fedledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


class RPCFailure(RuntimeError):
    pass


@dataclass
class LocalnetConfig:
    validators: int = 4
    trainers: int = 6
    dataset: str = "digits"
    data_dir: str = ""
    alpha_milli: int = 500  # Dirichlet label skew of the trainers' parts (0: IID)
    malicious: int = 0  # the first N trainers attack (evaluation only)
    attack: str = ""
    timeout_commit_ms: int = 300
    threads: int = 1  # torch threads per node (many processes share the cores)
    device: str = "auto"
    chain_id: str = "fedledger-demo"
    consensus: dict[str, Any] = field(default_factory=dict)  # e.g. byzantine_mode per node
    per_node: dict[int, dict[str, Any]] = field(default_factory=dict)
    keyholder: int = 0  # the node that runs the HE key holder service (-1: none)
    # gossipsub D, D_low, D_high: every copy of a message costs each process about a
    # millisecond, and with all nodes on one machine the mesh's redundancy only buys load
    # (4 validators + 10 trainers, idle: 1.08 CPU-s per block at 3/2/4, 2.0 at 6/4/12)
    mesh_degree: tuple[int, int, int] = (3, 2, 4)


class Localnet:
    """Homes, processes and RPC helpers of one local consortium."""

    def __init__(self, root: Path, cfg: LocalnetConfig) -> None:
        self.root = root
        self.cfg = cfg
        n = cfg.validators + cfg.trainers
        self.nodes: list[TestnetNode] = make_testnet(
            root / "homes", cfg.validators, cfg.trainers, base_port=free_port_block(2 * n),
            chain_id=cfg.chain_id, force=True)
        for i, node in enumerate(self.nodes):
            c = node.home.load_config()
            c.consensus.timeout_commit_ms = cfg.timeout_commit_ms
            c.p2p.redial_initial_ms, c.p2p.redial_max_ms = 200, 2000
            c.p2p.mesh_degree, c.p2p.mesh_degree_low, c.p2p.mesh_degree_high = cfg.mesh_degree
            for k, v in cfg.consensus.items():
                setattr(c.consensus, k, v)
            for k, v in cfg.per_node.get(i, {}).items():
                setattr(c.consensus, k, v)
            c.keyholder.enabled = i == cfg.keyholder
            c.verifier.threads = cfg.threads
            if i >= cfg.validators:
                t = i - cfg.validators
                c.trainer.enabled = True
                c.trainer.dataset = cfg.dataset
                c.trainer.data_dir = cfg.data_dir
                c.trainer.partition_index, c.trainer.partition_count = t, cfg.trainers
                c.trainer.partition_alpha_milli = cfg.alpha_milli
                c.trainer.threads = cfg.threads
                c.trainer.device = cfg.device
                if t < cfg.malicious:
                    c.trainer.attack = cfg.attack
            save_config(c, node.home.config_file)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self._logs: list[Any] = [None] * n

    # ------------------------------------------------------------ processes

    @property
    def validators(self) -> list[TestnetNode]:
        return self.nodes[: self.cfg.validators]

    @property
    def trainers(self) -> list[TestnetNode]:
        return self.nodes[self.cfg.validators :]

    def start(self, i: int | None = None) -> None:
        for k in range(len(self.nodes)) if i is None else [i]:
            node = self.nodes[k]
            self._logs[k] = open(node.home.root / "node.log", "ab")  # noqa: SIM115
            self.procs[k] = subprocess.Popen(
                [*fedledger_cmd(), "node", "run", "--home", str(node.home.root),
                 "--log-format", "json"], stdout=self._logs[k], stderr=subprocess.STDOUT,
                start_new_session=True)

    def stop(self, i: int | None = None, sig: int = signal.SIGTERM) -> None:
        ks = range(len(self.nodes)) if i is None else [i]
        for k in ks:
            p = self.procs[k]
            if p is not None and p.poll() is None:
                p.send_signal(sig)
        for k in ks:
            p = self.procs[k]
            if p is None:
                continue
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            self.procs[k] = None
            if self._logs[k] is not None:
                self._logs[k].close()
                self._logs[k] = None

    def kill(self, i: int) -> None:
        self.stop(i, signal.SIGKILL)

    def close(self, remove: bool = False) -> None:
        self.stop()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self, i: int) -> str:
        p = self.nodes[i].home.root / "node.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # ------------------------------------------------------------ RPC

    def rpc(self, i: int, method: str, params: dict[str, Any] | None = None,
            operator: bool = False, timeout: float = 30) -> Any:
        node = self.nodes[i]
        headers = {"Authorization": f"Bearer {node.home.operator_token()}"} if operator else {}
        try:
            r = httpx.post(f"http://{node.rpc_addr}/", headers=headers, timeout=timeout,
                           json={"jsonrpc": "2.0", "id": 1, "method": method,
                                 "params": params or {}}).json()
        except (httpx.HTTPError, ValueError) as e:
            raise RPCFailure(f"node{i} {method}: {e}") from None
        if "error" in r:
            raise RPCFailure(f"node{i} {method}: {r['error']}")
        return r["result"]

    def try_rpc(self, i: int, method: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return self.rpc(i, method, params, timeout=5)
        except RPCFailure:
            return None

    def height(self, i: int = 0) -> int:
        st = self.try_rpc(i, "status")
        return -1 if st is None else int(st["sync_info"]["latest_block_height"])

    def check_alive(self) -> None:
        """Raise if a node process exited on its own (``stop``/``kill`` forget theirs): a
        trainer that never started would otherwise hold every round open until a timeout."""
        for k, p in enumerate(self.procs):
            if p is not None and p.poll() is not None:
                lines = self.log(k).strip().splitlines()
                raise RPCFailure(f"{self.nodes[k].name} exited with code {p.returncode}: "
                                 f"{lines[-1][-300:] if lines else '(empty log)'} "
                                 f"(log: {self.nodes[k].home.root / 'node.log'})")

    def wait(self, pred: Any, timeout: float, what: str, poll: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(poll)

    def wait_chain(self, height: int = 2, timeout: float = 120) -> None:
        self.wait(lambda: all(self.height(i) >= height for i in range(self.cfg.validators)),
                  timeout, f"validators to reach height {height}")

    # ------------------------------------------------------------ tasks

    def create_task(self, opts: TaskOptions, creator: int = 0,
                    validation: bytes | None = None) -> int:
        """Store the initial model (and the public ``validation`` set, fl.data.validation
        bytes) on ``creator``, sign TaskCreate with its account; task id."""
        from ledger.fl import TaskCreate
        from ledger.tx import sign_tx
        from node.keys import load_account_key
        from storage.cid import parse_cid

        node = self.nodes[creator]
        model = initial_model_bytes(opts)
        path = self.root / f"initial-{opts.name}.safetensors"
        path.write_bytes(model)
        put = self.rpc(creator, "content_put", {"path": str(path.resolve()),
                                                "pin": f"initial model {opts.name}"},
                       operator=True)
        vcid = b""
        if validation is not None:
            vpath = self.root / f"validation-{opts.name}.safetensors"
            vpath.write_bytes(validation)
            vput = self.rpc(creator, "content_put", {"path": str(vpath.resolve()),
                                                     "pin": f"validation set {opts.name}"},
                            operator=True)
            vcid = bytes(parse_cid(vput["cid"]))
        he = self.he_context(opts) if opts.privacy in ("he", "dp+he") else None
        spec = build_spec(opts, dataset=self.cfg.dataset,
                          trainers=opts.clients_per_round or self.cfg.trainers,
                          initial_model_cid=bytes(parse_cid(put["cid"])),
                          key_holders=(bytes.fromhex(he["holder"]),) if he else (),
                          he_context_cid=bytes(parse_cid(he["cid"])) if he else b"",
                          validation_cid=vcid)
        key = load_account_key(node.home.root, node.name)
        before = self.rpc(creator, "fl_tasks")["tasks"]
        nonce = int(self.account(key.address.hex(), creator).get("nonce", 0))
        tx = sign_tx(key, self.cfg.chain_id, TaskCreate(spec), nonce)
        self.submit_and_wait(creator, tx.encoded, "TaskCreate")
        return len(before) + 1

    def he_context(self, opts: TaskOptions) -> dict[str, Any]:
        """CKKS keys for an HE task, made on the key holder node (``cfg.keyholder``): its
        secret context stays in that node's home; returns the public task context object's
        ``cid`` and the key holder's account (``holder``) for the TaskSpec."""
        from cli.taskspec import he_layout
        from node.fl.data import train_test

        if self.cfg.keyholder < 0:
            raise RPCFailure("HE tasks need a key holder node (LocalnetConfig.keyholder)")
        train, _ = train_test(self.cfg.dataset, self.cfg.data_dir or None)
        # the trainers hold disjoint parts of the training split: a round has at most all
        layout = he_layout(opts, trainers=self.cfg.trainers, max_round_samples=len(train))
        plain = {"frac_bits": layout.frac_bits, "lanes": layout.lanes,
                 "lane_bits": layout.lane_bits, "max_weight": layout.max_weight}
        return dict(self.rpc(self.cfg.keyholder, "fl_he_context_new",
                             {"layout": plain, "params": opts.he_params}, operator=True,
                             timeout=60))

    def submit_and_wait(self, i: int, raw: bytes, what: str, timeout: float = 120) -> Any:
        """broadcast_tx_sync, then wait for the tx to commit (a loaded machine may need longer
        than broadcast_tx_commit's 10 s); raises unless both CheckTx and delivery succeed."""
        import hashlib

        res = self.rpc(i, "broadcast_tx_sync", {"tx": base64.b64encode(raw).decode()})
        if int(res["code"]) != 0:
            raise RPCFailure(f"{what} refused by CheckTx: {res.get('log')}")
        h = hashlib.sha256(raw).hexdigest()
        rec = self.wait(lambda: self.try_rpc(i, "tx", {"hash": h}), timeout, f"{what} to commit")
        if int(rec["tx_result"]["code"]) != 0:
            raise RPCFailure(f"{what} failed: {rec['tx_result'].get('log')}")
        return rec

    def account(self, address_hex: str, i: int = 0) -> dict[str, Any]:
        """The account's decoded state (balance, nonce) on node ``i``; {} if it has none."""
        q = self.rpc(i, "abci_query", {"path": f"/account/{address_hex}"})
        return dict(q["response"].get("decoded") or {})

    def task(self, task_id: int, i: int = 0) -> dict[str, Any] | None:
        t = self.try_rpc(i, "fl_task", {"task_id": task_id})
        return None if t is None else t["task"]

    def round_result(self, task_id: int, round_: int, i: int = 0) -> dict[str, Any] | None:
        r = self.try_rpc(i, "fl_round", {"task_id": task_id, "round": round_})
        return None if r is None else r["result"]

    def modelled_round(self, task_id: int, round_: int,
                       i: int = 0) -> dict[str, Any] | None:
        """``fl_round`` of a round whose new global model is committed, else None. Under HE
        a round closes (``rounds_done`` counts it) a block or more before the key holder's
        ``DecryptedAggregate`` commits its model."""
        r = self.try_rpc(i, "fl_round", {"task_id": task_id, "round": round_})
        return r if r is not None and r.get("model") else None

    def model_bytes(self, task_id: int, round_: int | None = None, i: int = 0) -> bytes:
        params: dict[str, Any] = {"task_id": task_id}
        if round_ is not None:
            params["round"] = round_
        return base64.b64decode(self.rpc(i, "fl_model", params, timeout=60)["data"])


def evaluate_model(model_id: str, model_config: dict[str, Any], data: bytes, dataset: str,
                   data_dir: str | None) -> float:
    """Accuracy of a committed model on the held-out test split every node agrees on."""
    from fl.models import build_model, from_safetensors
    from fl.train import evaluate
    from node.fl.data import train_test

    model = build_model(model_id, model_config)
    model.load_state_dict(from_safetensors(data))
    _, test = train_test(dataset, data_dir)
    return float(evaluate(model, test, "cpu").accuracy)

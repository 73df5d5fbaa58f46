"""A local testnet of `fedledger node run` OS processes, for consensus integration tests."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from node.config import ConsensusConfig
from node.home import make_testnet
from node.ports import free_port_block
from tests.node.node_helpers import NodeProcess, try_rpc, wait_for

# Quick blocks (timeout_commit) but CometBFT-like round timeouts: the test machines are
# small and shared, and rounds that time out faster than gossip moves never finish.
FAST = {
    "timeout_propose_ms": 3000,
    "timeout_propose_delta_ms": 500,
    "timeout_prevote_ms": 1000,
    "timeout_prevote_delta_ms": 500,
    "timeout_precommit_ms": 1000,
    "timeout_precommit_delta_ms": 500,
    "timeout_commit_ms": 200,
    "rebroadcast_interval_ms": 1000,
}


class Testnet:
    """N validator homes (fast timeouts) and their processes."""

    def __init__(self, root: Path, n: int, consensus: dict[str, Any] | None = None,
                 per_node: dict[int, dict[str, Any]] | None = None) -> None:
        base = free_port_block(2 * n)
        self.nodes = make_testnet(root, n, base_port=base, chain_id="consensus-test")
        for i, node in enumerate(self.nodes):
            cfg = node.home.load_config()
            for k, v in {**FAST, **(consensus or {}), **(per_node or {}).get(i, {})}.items():
                assert hasattr(ConsensusConfig, k) or k in ConsensusConfig.__dataclass_fields__
                setattr(cfg.consensus, k, v)
            cfg.p2p.redial_initial_ms = 200
            cfg.p2p.redial_max_ms = 2000
            from node.config import save_config

            save_config(cfg, node.home.config_file)
        self.procs: list[NodeProcess | None] = [None] * n
        self.runs = [0] * n

    def start(self, i: int, env: dict[str, str] | None = None) -> NodeProcess:
        self.runs[i] += 1
        p = NodeProcess(self.nodes[i].home.root, log_name=f"node-run{self.runs[i]}.log",
                        env=env)
        self.procs[i] = p.start()
        return p

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)

    def stop(self, i: int, sig: int = signal.SIGTERM) -> int:
        p = self.procs[i]
        assert p is not None
        rc = p.stop(sig, timeout=10)
        self.procs[i] = None
        return rc

    def kill(self, i: int) -> None:
        self.stop(i, signal.SIGKILL)

    def wait_exit(self, i: int, timeout: float) -> int:
        p = self.procs[i]
        assert p is not None and p.proc is not None
        rc = p.proc.wait(timeout=timeout)
        p.stop()
        self.procs[i] = None
        return rc

    def close(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.running:
                p.stop(signal.SIGKILL)
            self.procs[i] = None

    def rpc(self, i: int, method: str, params: dict[str, Any] | None = None) -> Any:
        return try_rpc(self.nodes[i].rpc_addr, method, params)

    def height(self, i: int) -> int:
        st = self.rpc(i, "status")
        return -1 if st is None else int(st["sync_info"]["latest_block_height"])

    def wait_height(self, i: int, h: int, timeout: float) -> int:
        try:
            return wait_for(lambda: self.height(i) >= h and self.height(i), timeout,
                            f"node{i} to reach height {h}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        """Every running node's consensus and gossip state, for a failure message."""
        import httpx

        lines = []
        for i, n in enumerate(self.nodes):
            if self.procs[i] is None:
                lines.append(f"node{i}: stopped")
                continue
            try:
                r = httpx.post(f"http://{n.rpc_addr}/", timeout=5, json={
                    "jsonrpc": "2.0", "id": 1, "method": "dump_consensus_state"},
                    headers={"Authorization": f"Bearer {n.home.operator_token()}"}).json()
                rs, g = r["result"]["round_state"], r["result"]["gossip"]
                lines.append(f"node{i} ({n.peer_id[-6:]}): chain={self.height(i)} "
                             f"decided={rs['decided']} h={rs['height']} r={rs['round']} "
                             f"stats={rs['stats']} bs={r['result']['block_sync']} "
                             f"{rs['step']} props={list(rs['proposals'])} "
                             f"votes={ {k: len(v) for k, v in rs['votes'].items()} } "
                             f"conn={[p[-6:] for p in g['connected']]} "
                             f"subs={[p[-6:] for p in g['topic_peers']['consensus']]} "
                             f"ps={[p[-6:] for p in g['topic_peers']['pubsub_peers']]} "
                             f"q={g['topic_peers']['queued']} "
                             f"mesh={[p[-6:] for p in g['topic_peers']['consensus:mesh']]} "
                             f"stats={g['topic_stats']['consensus']}")
            except Exception as e:  # a diagnostic must not hide the failure
                p = self.procs[i]
                state = ("running" if p is not None and p.running else
                         f"exited with {p.proc.returncode}" if p is not None and p.proc
                         else "no process")
                # CI keeps no other trace of a node that died or never served RPC
                lines.append(f"node{i}: {e!r} ({state}); its last log lines:\n"
                             + "\n".join(self.log(i).splitlines()[-15:]))
        return "\n".join(lines)

    def block_hash(self, i: int, h: int) -> str | None:
        b = self.rpc(i, "block", {"height": h})
        return None if b is None else b["block_id"]["hash"]

    def app_hash_after(self, i: int, h: int) -> str | None:
        """The app hash after block h (carried in the header of h+1)."""
        b = self.rpc(i, "block", {"height": h + 1})
        return None if b is None else b["block"]["header"]["app_hash"]

    def evidence_in(self, i: int, lo: int, hi: int) -> list[Any]:
        out = []
        for h in range(lo, hi + 1):
            b = self.rpc(i, "block", {"height": h})
            if b is not None:
                out += b["block"]["evidence"]["evidence"]
        return out

    def log(self, i: int) -> str:
        return "".join((self.nodes[i].home.root / f"node-run{r}.log").read_text(errors="replace")
                       for r in range(1, self.runs[i] + 1)
                       if (self.nodes[i].home.root / f"node-run{r}.log").exists())


def assert_height_stays(tn: Testnet, nodes: list[int], seconds: float) -> int:
    """No node in ``nodes`` commits for ``seconds`` (a halted chain); returns the height."""
    start = {i: tn.height(i) for i in nodes}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i in nodes:
            assert tn.height(i) == start[i], f"node{i} committed while the chain should halt"
        time.sleep(0.5)
    return max(start.values())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    from tests.node.node_helpers import FEDLEDGER

    return subprocess.run([*FEDLEDGER, *args], capture_output=True, text=True, timeout=60)

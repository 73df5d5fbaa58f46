"""Consensus speed on loopback: block interval and tx throughput of real node processes.

For 4 and 7 validators (each a `fedledger node run` process, timeout_commit 0):

* block interval p50/p99 with empty blocks, and with a load of transfers;
* sustained committed tx/s through `broadcast_tx_sync` (several client threads);
* the floor measured in the same run: three one-way gossip latencies (proposal,
  prevote, precommit) of py-libp2p between 4 nodes, from benchmarks/gossip.py.

    python -m benchmarks.consensus                 # 4 and 7 validators, ~5 minutes
    python -m benchmarks.consensus --validators 4 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ledger.crypto import PrivateKey
from ledger.tx import Transfer, sign_tx
from node.config import save_config
from node.home import make_testnet
from node.keys import load_account_key
from node.ports import free_port_block

FEDLEDGER = [str(Path(sys.executable).parent / "fedledger")]


def rpc(addr: str, method: str, params: dict[str, Any] | None = None) -> Any:
    r = httpx.post(
        f"http://{addr}/",
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
        timeout=10,
    )
    doc = r.json()
    if "error" in doc:
        raise RuntimeError(doc["error"])
    return doc["result"]


def height(addr: str) -> int:
    try:
        return int(rpc(addr, "status")["sync_info"]["latest_block_height"])
    except Exception:
        return -1


class Net:
    def __init__(self, root: Path, n: int, base_port: int, log_level: str = "warning",
                 tx_batch_ms: int | None = None) -> None:
        self.nodes = make_testnet(root, n, base_port=base_port, chain_id="bench")
        for node in self.nodes:
            cfg = node.home.load_config()
            c = cfg.consensus
            c.timeout_commit_ms = 0
            c.timeout_propose_ms, c.timeout_prevote_ms, c.timeout_precommit_ms = 3000, 1000, 1000
            cfg.log_level = log_level
            if tx_batch_ms is not None:
                cfg.mempool.gossip_batch_interval_ms = tx_batch_ms
            save_config(cfg, node.home.config_file)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for n in self.nodes:
            log = open(n.home.root / "node.log", "wb")  # noqa: SIM115 - closed at exit
            self.procs.append(
                subprocess.Popen(
                    [*FEDLEDGER, "node", "run", "--home", str(n.home.root)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    @staticmethod
    def _consensus_dump(n: Any, method: str = "dump_consensus_state") -> dict[str, Any]:
        token = (n.home.root / "config" / "operator_token").read_text().strip()
        r = httpx.post(
            f"http://{n.rpc_addr}/",
            headers={"Authorization": f"Bearer {token}"},
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": {}},
            timeout=10,
        )
        return r.json()  # type: ignore[no-any-return]

    def fetched(self) -> int:
        """Messages the nodes took from round fetches (stalled rounds rescued off gossip)."""
        total = 0
        for n in self.nodes:
            try:
                total += int(
                    self._consensus_dump(n)["result"]["round_state"]["stats"].get("fetched", 0)
                )
            except (httpx.HTTPError, KeyError):
                pass
        return total

    def dump(self) -> None:
        """Each node's consensus state and trio task stacks into its home, for a stall's post-mortem."""
        for n in self.nodes:
            try:
                state = self._consensus_dump(n)
                (n.home.root / "consensus_state.json").write_text(json.dumps(state, indent=1))
                tasks = self._consensus_dump(n, "debug_tasks")  # where each trio task waits
                (n.home.root / "tasks.json").write_text(json.dumps(tasks, indent=1))
            except httpx.HTTPError as e:
                print(f"{n.name}: no consensus state ({e})", file=sys.stderr)

    def wait_height(self, h: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while min(hs := [height(n.rpc_addr) for n in self.nodes]) < h:
            if time.monotonic() > deadline:  # -1: the node's RPC did not answer within 10 s
                self.dump()
                raise TimeoutError(f"testnet did not reach height {h}: node heights {hs}")
            time.sleep(0.2)


def block_stats(addr: str, lo: int, hi: int) -> tuple[list[float], int]:
    """Intervals (s) between consecutive block times in [lo, hi] and total txs."""
    times, txs = [], 0
    for h in range(lo, hi + 1):
        b = rpc(addr, "block", {"height": h})["block"]
        t = b["header"]["time"]
        from ledger.genesis import parse_time

        times.append(parse_time(t) / 1000)
        txs += len(b["data"]["txs"])
    return [b - a for a, b in zip(times, times[1:])], txs


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def load(net: Net, seconds: float, clients: int) -> tuple[int, int]:
    """Send transfers via broadcast_tx_sync from each node's funded account; return (sent, ok)."""
    chain_id = "bench"
    sent = ok = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        nonlocal sent, ok
        node = net.nodes[k % len(net.nodes)]
        key = load_account_key(node.home.root, node.name)
        acct = rpc(node.rpc_addr, "abci_query", {"path": f"/account/{key.address.hex()}"})
        nonce = int(acct["decoded"]["nonce"]) if acct.get("decoded") else 0
        to = PrivateKey.from_seed_int(10_000 + k).address
        with httpx.Client(timeout=10) as c:
            while time.monotonic() < stop:
                tx = sign_tx(key, chain_id, Transfer(to, 1), nonce)
                import base64

                r = c.post(
                    f"http://{node.rpc_addr}/",
                    json={
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "broadcast_tx_sync",
                        "params": {"tx": base64.b64encode(tx.encoded).decode()},
                    },
                ).json()
                with lock:
                    sent += 1
                    if r.get("result", {}).get("code") == 0:
                        ok += 1
                        nonce += 1
                    else:
                        time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent, ok


def run(n: int, seconds: float, log_level: str = "warning",
        tx_batch_ms: int | None = None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"fedledger-bench-{n}-"))
    net = Net(root, n, free_port_block(2 * n), log_level, tx_batch_ms)
    ok_run = False
    try:
        net.start()
        net.wait_height(3)
        addr = net.nodes[0].rpc_addr
        h0 = height(addr)
        time.sleep(seconds)
        h1 = height(addr)
        empty, _ = block_stats(addr, h0, h1)
        h2 = height(addr)
        sent, ok = load(net, seconds, clients=n)
        net.wait_height(height(addr) + 2)
        h3 = height(addr)
        loaded, txs = block_stats(addr, h2, h3)
        dur = sum(loaded) or 1.0
        ok_run = True
        return {
            "validators": n,
            "empty_p50": pct(empty, 0.5),
            "empty_p99": pct(empty, 0.99),
            "empty_blocks": len(empty),
            "load_p50": pct(loaded, 0.5),
            "load_p99": pct(loaded, 0.99),
            "tx_per_s": txs / dur,
            "sent": sent,
            "ok": ok,
            "fetched": net.fetched(),
        }
    finally:
        net.stop()
        if ok_run:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"node homes and logs kept in {root}", file=sys.stderr)


def gossip_floor() -> float:
    """Three one-way gossip latencies (p50, 200 B, 4 nodes in one process) in seconds."""
    import trio

    from benchmarks.gossip import bench_libp2p

    r = trio.run(bench_libp2p, "floor", 200, 60, 10)
    return 3 * r.p50_ms / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--validators", type=int, nargs="*", default=[4, 7])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument(
        "--log-level", default="warning", help="the nodes' log level (node.log in each home)"
    )
    ap.add_argument(
        "--tx-batch-ms", type=int, default=None,
        help="mempool.gossip_batch_interval_ms of the nodes (default: the node's default)",
    )
    args = ap.parse_args()
    from node.logs import setup_logging

    setup_logging("warning", "console")
    floor = gossip_floor()
    print(f"floor (3 x one-way gossip p50, same run): {floor * 1000:.1f} ms")
    print(
        "| validators | empty p50 ms | empty p99 ms | loaded p50 ms | loaded p99 ms "
        "| tx/s committed | floor ms | msgs fetched off gossip |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.validators:
        r = run(n, args.seconds, args.log_level, args.tx_batch_ms)
        print(
            f"| {n} | {r['empty_p50'] * 1000:.0f} | {r['empty_p99'] * 1000:.0f} | "
            f"{r['load_p50'] * 1000:.0f} | {r['load_p99'] * 1000:.0f} | "
            f"{r['tx_per_s']:.0f} | {floor * 1000:.0f} | {r['fetched']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""`fedledger` as an operator runs it: separate OS processes on loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from node.ports import free_port_block
from tests.node.node_helpers import (
    FEDLEDGER,
    NodeProcess,
    try_rpc,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("testnet")]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDLEDGER, *args], capture_output=True, text=True, timeout=timeout)


def make_testnet(tmp_path: Path, n: int) -> tuple[Path, list[dict[str, object]]]:
    out = tmp_path / "tn"
    base = free_port_block(2 * n)
    r = run_cli("testnet", "--validators", str(n), "--output", str(out), "--base-port",
                str(base), "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def peer_ids(rpc_addr: str) -> set[str] | None:
    net = try_rpc(rpc_addr, "net_info")
    return None if net is None else {p["node_info"]["id"] for p in net["peers"]}


def test_four_process_testnet_joins_stops_and_rejoins(tmp_path: Path) -> None:
    out, nodes = make_testnet(tmp_path, 4)
    procs = [NodeProcess(Path(str(n["home"]))).start() for n in nodes]
    try:
        ids = [str(n["peer_id"]) for n in nodes]
        t0 = time.monotonic()
        for i, n in enumerate(nodes):
            others = set(ids) - {ids[i]}
            wait_for(lambda n=n, others=others: (peer_ids(str(n["rpc"])) or set()) >= others,
                     timeout=30 - (time.monotonic() - t0), what=f"{n['name']} to see 3 peers")
        # SIGTERM stops every node cleanly: exit code 0, no traceback, within 5 s.
        for p in procs:
            t = time.monotonic()
            assert p.stop(signal.SIGTERM, timeout=5) == 0, p.log_text()[-2000:]
            assert time.monotonic() - t < 5
            assert "Traceback" not in p.log_text()
            assert '"event": "stopped"' in p.log_text()
        # Restart two: node0 keeps its peer id and node1 sees it rejoin.
        procs[1] = NodeProcess(Path(str(nodes[1]["home"])), log_name="node2.log").start()
        procs[0] = NodeProcess(Path(str(nodes[0]["home"])), log_name="node2.log").start()
        st = wait_for(lambda: try_rpc(str(nodes[0]["rpc"]), "status"), 20, "node0 RPC")
        assert st["node_info"]["id"] == ids[0]
        wait_for(lambda: ids[0] in (peer_ids(str(nodes[1]["rpc"])) or set()), 20,
                 "node1 to see node0 again")
    finally:
        for p in procs:
            if p.running:
                p.stop(signal.SIGKILL)


def test_bad_bootstrap_multiaddr_exits_2_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert run_cli("init", "--home", str(home)).returncode == 0
    r = run_cli("node", "run", "--home", str(home), "--bootstrap", "/ip4/1.2.3/tcp/x")
    assert r.returncode == 2
    assert "/ip4/1.2.3/tcp/x" in r.stderr and "Traceback" not in r.stderr


def test_rpc_port_held_by_a_connection_exits_1_naming_it(tmp_path: Path) -> None:
    # a peer's outgoing connection can hold a restarting node's port (ephemeral range)
    home = tmp_path / "h"
    assert run_cli("init", "--home", str(home)).returncode == 0
    with socket.socket() as srv, socket.socket() as holder:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        holder.bind(("127.0.0.1", 0))
        holder.connect(srv.getsockname())
        rpc = f"127.0.0.1:{holder.getsockname()[1]}"
        r = run_cli("node", "run", "--home", str(home), "--rpc", rpc,
                    "--listen", "/ip4/127.0.0.1/tcp/0")
    assert r.returncode == 1
    assert "Address already in use" in r.stderr and rpc in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_or_corrupt_home_names_the_file(tmp_path: Path) -> None:
    r = run_cli("node", "run", "--home", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "home directory not found" in r.stderr
    home = tmp_path / "h"
    assert run_cli("init", "--home", str(home)).returncode == 0
    (home / "config" / "node_key.json").write_text("{garbage")
    r = run_cli("node", "run", "--home", str(home))
    assert r.returncode == 1 and "node_key.json" in r.stderr and "corrupt" in r.stderr
    (home / "config" / "genesis.json").unlink()
    r = run_cli("node", "run", "--home", str(home))
    assert r.returncode == 1 and "genesis.json" in r.stderr and "not found" in r.stderr
    (home / "config" / "config.toml").write_text("[p2p]\nlisten = 5\n")
    r = run_cli("node", "run", "--home", str(home))
    assert r.returncode == 1 and "config.toml" in r.stderr and "p2p.listen" in r.stderr
    assert "Traceback" not in r.stderr


def test_init_refuses_to_overwrite_and_writes_0600_keys(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert run_cli("init", "--home", str(home), "--moniker", "alice").returncode == 0
    for f in ("config/node_key.json", "config/priv_validator_key.json", "keyring/alice.json"):
        assert (home / f).stat().st_mode & 0o777 == 0o600, f
    r = run_cli("init", "--home", str(home))
    assert r.returncode == 1 and "--force" in r.stderr
    assert run_cli("init", "--home", str(home), "--force").returncode == 0


def test_unreachable_bootstrap_keeps_running_and_retrying(tmp_path: Path) -> None:
    out, nodes = make_testnet(tmp_path, 2)
    # node1 is never started: node0's bootstrap peer is unreachable.
    p = NodeProcess(Path(str(nodes[0]["home"]))).start()
    try:
        wait_for(lambda: p.log_text().count("peer unreachable, will retry") >= 3, 30,
                 "three logged redial attempts")
        assert try_rpc(str(nodes[0]["rpc"]), "health") == {}
        assert p.running
        retries = [json.loads(line) for line in p.log_text().splitlines()
                   if "peer unreachable" in line]
        assert all(r["peer"] == nodes[1]["peer_id"] for r in retries)
        delays = [r["retry_in_s"] for r in retries]
        assert delays[2] > delays[0]  # backoff grows
    finally:
        assert p.stop() == 0

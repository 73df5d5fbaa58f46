"""`fedledger keys|tx|query` run as separate OS processes (the installed script), against an
in-process node over real HTTP whose blocks the test commits (no consensus yet)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import trio

from ledger.testing import validator_key
from node.keys import save_account_key
from tests.node.node_helpers import FEDLEDGER
from tests.node.test_rpc_ledger import Chain, running_chain

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*FEDLEDGER, *args], capture_stdout=True, capture_stderr=True, check=False, env=ENV
    )


def out(p: subprocess.CompletedProcess[bytes]) -> str:
    return p.stdout.decode()


def err(p: subprocess.CompletedProcess[bytes]) -> str:
    return " ".join(p.stderr.decode().split())  # rich may wrap long messages


async def test_keys_add_list_show(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    p = await cli("keys", "add", "alice", "--home", home, "--json")
    assert p.returncode == 0, err(p)
    alice = json.loads(out(p))
    assert len(bytes.fromhex(alice["address"])) == 20
    assert len(base64.b64decode(alice["pub_key"])) == 32 and "priv_key" not in alice
    assert stat.S_IMODE(Path(alice["file"]).stat().st_mode) == 0o600

    p = await cli("keys", "add", "alice", "--home", home)
    assert p.returncode == 1 and "already exists" in err(p)
    p = await cli("keys", "add", "bob", "--home", home)
    assert p.returncode == 0 and "address" in out(p)
    p = await cli("keys", "add", "../evil", "--home", home)
    assert p.returncode == 1 and "invalid key name" in err(p)

    p = await cli("keys", "list", "--home", home, "--json")
    listed = json.loads(out(p))
    assert [k["name"] for k in listed] == ["alice", "bob"]
    assert listed[0]["address"] == alice["address"]
    p = await cli("keys", "list", "--home", home)
    assert "alice" in out(p) and alice["address"] in out(p)

    p = await cli("keys", "show", "alice", "--home", home, "--address")
    assert p.returncode == 0 and out(p).strip() == alice["address"]
    p = await cli("keys", "show", "alice", "--home", home, "--json")
    assert json.loads(out(p))["pub_key"] == alice["pub_key"]
    p = await cli("keys", "show", "nobody", "--home", home)
    assert p.returncode == 1 and "no key named 'nobody'" in err(p)


async def test_tx_and_query_against_a_node(tmp_path: Path, nursery: trio.Nursery) -> None:
    async with running_chain(tmp_path, nursery) as chain:
        await _tx_and_query(chain)


async def _tx_and_query(chain: Chain) -> None:
    home = str(chain.node.home.root)
    rpc = chain.node.rpc_laddr
    alice_key = chain.net.account_keys[0]
    save_account_key(chain.node.home.root, "alice", alice_key)
    bob = chain.net.account_keys[1].address.hex()
    common = ["--home", home, "--rpc", rpc]

    p = await cli("query", "account", "alice", *common, "--json")
    assert p.returncode == 0, err(p)
    assert json.loads(out(p))["balance"] == "1000000000" and json.loads(out(p))["nonce"] == "0"

    # Insufficient funds: CheckTx refuses, the CLI shows its log and exits 1.
    p = await cli(
        "tx", "send", "--from", "alice", "--to", bob, "--amount", str(10**15), "--sync", *common
    )
    assert p.returncode == 1
    assert "INSUFFICIENT_FUNDS" in err(p) and "balance" in err(p)

    # --sync proves signing with the keyring key (chain id and nonce fetched) and CheckTx.
    p = await cli(
        "tx", "send", "--from", "alice", "--to", bob, "--amount", "5", "--sync", "--json", *common
    )
    assert p.returncode == 0, err(p)
    res = json.loads(out(p))
    assert res["code"] == 0
    pooled = chain.node.chain.mempool.txs()
    assert [t.hash.hex().upper() for t in pooled] == [res["hash"]]
    assert pooled[0].signer == alice_key.address and pooled[0].nonce == 0
    await chain.produce()

    # Default mode waits for the commit; the test commits the block meanwhile.
    done: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def send_and_wait() -> None:
        done["p"] = await cli(
            "tx", "send", "--from", "alice", "--to", bob, "--amount", "6", *common
        )

    async with trio.open_nursery() as n:
        n.start_soon(send_and_wait)
        await chain.wait_mempool(1)
        await chain.produce()
    p = done["p"]
    assert p.returncode == 0, err(p)
    assert "height" in out(p) and "OK" in out(p)

    p = await cli("query", "account", alice_key.address.hex(), *common, "--prove")
    assert p.returncode == 0, err(p)
    assert str(1_000_000_000 - 11) in out(p) and "verified against app hash" in out(p)

    # Bond to a new key (base64 pubkey), unbond from validator 0 by address with --nonce.
    new_val = base64.b64encode(validator_key(10).public_key).decode()
    p = await cli(
        "tx", "bond", "--from", "alice", "--validator", new_val, "--amount", "50", "--sync", *common
    )
    assert p.returncode == 0, err(p)
    v0 = chain.net.validator_keys[0].address.hex()
    p = await cli(
        "tx",
        "unbond",
        "--from",
        "alice",
        "--validator",
        v0,
        "--amount",
        "1",
        "--nonce",
        "3",
        "--sync",
        "--json",
        *common,
    )
    assert p.returncode == 0, err(p)
    assert len(chain.node.chain.mempool) == 2

    p = await cli("query", "validators", "--rpc", rpc, "--json")
    assert json.loads(out(p))["total"] == "4"
    p = await cli("query", "block", "1", "--rpc", rpc, "--json")
    assert json.loads(out(p))["block"]["header"]["height"] == "1"
    p = await cli("query", "block", "--rpc", rpc)
    assert (
        p.returncode == 0 and "block 2" in out(p) and "4 of 4 validators signed height 1" in out(p)
    )

    # Clear errors.
    p = await cli("tx", "send", "--from", "nobody", "--to", bob, "--amount", "1", *common)
    assert p.returncode == 1 and "no key named 'nobody'" in err(p)
    p = await cli("tx", "send", "--from", "alice", "--to", "xyz", "--amount", "1", *common)
    assert p.returncode == 1 and "bad address 'xyz'" in err(p)
    p = await cli("tx", "bond", "--from", "alice", "--validator", "abc", "--amount", "1", *common)
    assert p.returncode == 1 and "bad validator key" in err(p)
    p = await cli("query", "block", "99", "--rpc", rpc)
    assert p.returncode == 1 and "the latest height is 2" in err(p)
    p = await cli("query", "account", bob, "--rpc", "127.0.0.1:1")
    assert p.returncode == 1 and "cannot reach the node's RPC" in err(p)

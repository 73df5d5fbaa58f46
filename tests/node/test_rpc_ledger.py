"""Ledger RPC over real HTTP against an in-process node whose blocks come from a test helper.

Until consensus exists, blocks are built by :class:`ledger.testing.ChainBuilder` (real
commits of the genesis validators, whose keys the test holds), with txs reaped from the
node's mempool, and handed to ``node.chain.commit_block`` exactly as consensus will.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ledger.codec import encode, sha256
from ledger.genesis import format_time
from ledger.merkle import MerkleProof, verify_proof
from ledger.schema import Account
from ledger.testing import (
    ChainBuilder,
    CommittedBlock,
    TestNet,
    Wallet,
    duplicate_vote_evidence,
    make_testnet,
    validator_key,
)
from ledger.tx import Tx
from node.daemon import Node
from node.home import write_genesis
from node.rpc.ledger import query_result_from_response, verify_query_response
from tests.node.node_helpers import make_home, running_inprocess_node

N_VALIDATORS = 4


@dataclass
class Chain:
    """A running node plus the test's block producer for it."""

    node: Node
    net: TestNet
    builder: ChainBuilder
    client: httpx.AsyncClient

    def wallet(self, i: int) -> Wallet:
        return Wallet(self.net.account_keys[i], self.net.chain_id)

    async def post(self, method: str, params: Any = None) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        r = await self.client.post("/", json=body)
        assert r.status_code == 200, r.text
        assert "Traceback" not in r.text
        return r.json()  # type: ignore[no-any-return]

    async def call(self, method: str, params: Any = None) -> Any:
        doc = await self.post(method, params)
        assert "error" not in doc, doc
        return doc["result"]

    async def error(self, method: str, params: Any = None) -> dict[str, Any]:
        doc = await self.post(method, params)
        assert "result" not in doc, doc
        return doc["error"]  # type: ignore[no-any-return]

    async def produce(self, txs: Sequence[Tx] | None = None, **kw: Any) -> CommittedBlock:
        """Commit the next block on the node (txs default to the node's mempool)."""
        if txs is None:
            txs = self.node.chain.mempool.reap()
        block = self.builder.propose(txs, **kw)
        commit = self.builder.commit_for(block)
        await self.node.chain.commit_block(block, commit)
        return self.builder.add(block, commit)

    async def wait_mempool(self, n: int) -> None:
        with trio.fail_after(10):
            while len(self.node.chain.mempool) < n:
                await trio.sleep(0.005)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@asynccontextmanager
async def running_chain(
    tmp_path: Path, nursery: trio.Nursery, *, commit_timeout_ms: int = 10_000
) -> AsyncIterator[Chain]:
    net = make_testnet(N_VALIDATORS, 3)
    home = make_home(tmp_path / "home")
    write_genesis(home, net.genesis)
    cfg = home.load_config()
    cfg.rpc.timeout_broadcast_tx_commit_ms = commit_timeout_ms
    async with running_inprocess_node(nursery, home, cfg) as node:
        async with httpx.AsyncClient(base_url=f"http://{node.rpc_laddr}", timeout=20) as client:
            yield Chain(node, net, ChainBuilder(net), client)


@pytest.fixture
async def chain(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path, nursery) as c:
        yield c


# ---------------------------------------------------------------- broadcast


async def test_broadcast_tx_sync_reports_checktx(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    tx = alice.transfer(bob.address, 10)
    res = await chain.call("broadcast_tx_sync", {"tx": b64(tx.encoded)})
    assert res == {"code": 0, "data": "", "log": "", "codespace": "", "hash": tx.hash.hex().upper()}
    # Same tx again: a duplicate; hex form of the param is accepted too (CometBFT URI style).
    res = await chain.call("broadcast_tx_sync", {"tx": "0x" + tx.encoded.hex()})
    assert res["code"] == 51 and "already in mempool" in res["log"]
    overspend = alice.transfer(bob.address, 10**15)
    res = await chain.call("broadcast_tx_sync", [b64(overspend.encoded)])
    assert res["code"] == 5 and "balance" in res["log"]
    res = await chain.call("broadcast_tx_sync", {"tx": b64(b"\x93garbage")})
    assert res["code"] == 1 and "malformed tx" in res["log"]
    n = await chain.call("num_unconfirmed_txs")
    assert n == {"n_txs": "1", "total": "1", "total_bytes": str(len(tx.encoded)), "txs": None}


async def test_a_contract_code_rejection_is_reported_not_raised(chain: Chain) -> None:
    """CheckTx codes of the FL contract (100-199) are not in the core's Code enum; naming one
    for the rejection metric crashed the caller (the trainer service, on a re-sent update)."""
    from ledger.fl.codes import FlCode, result_code_name
    from ledger.fl.txs import Join

    tx = chain.wallet(2).sign(Join(task_id=99, bond=10, x25519_pubkey=b""))
    res = await chain.node.chain.submit_tx(tx.encoded)
    assert res.code == FlCode.TASK_NOT_FOUND
    rpc = await chain.call("broadcast_tx_sync", {"tx": b64(tx.encoded)})
    assert rpc["code"] == FlCode.TASK_NOT_FOUND
    assert [result_code_name(c) for c in (0, 51, 109, 250)] == [
        "OK", "DUPLICATE_TX", "DUPLICATE_SUBMISSION", "CODE_250"]  # fmt: skip


async def test_broadcast_tx_async_returns_at_once_and_checks_in_order(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    garbage = b"\x01\x02\x03"
    res = await chain.call("broadcast_tx_async", {"tx": b64(garbage)})
    assert res["code"] == 0 and res["hash"] == sha256(garbage).hex().upper()
    txs = [alice.transfer(bob.address, i + 1) for i in range(5)]
    for tx in txs:
        res = await chain.call("broadcast_tx_async", {"tx": b64(tx.encoded)})
        assert res["hash"] == tx.hash.hex().upper()
    await chain.wait_mempool(5)
    # Consecutive nonces were all admitted: the worker checked them in arrival order.
    un = await chain.call("unconfirmed_txs", {"limit": 3})
    assert un["n_txs"] == "3" and un["total"] == "5"
    assert un["total_bytes"] == str(sum(len(t.encoded) for t in txs))
    assert [base64.b64decode(t) for t in un["txs"]] == [t.encoded for t in txs[:3]]
    assert sha256(garbage) not in chain.node.chain.mempool


async def test_broadcast_tx_commit_completes_when_the_block_commits(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    tx = alice.transfer(bob.address, 7)
    out: dict[str, Any] = {}

    async def broadcast() -> None:
        out.update(await chain.call("broadcast_tx_commit", {"tx": b64(tx.encoded)}))

    async with trio.open_nursery() as n:
        n.start_soon(broadcast)
        await chain.wait_mempool(1)
        await chain.produce()  # an empty one would not do: it is reaped from the mempool
    assert out["hash"] == tx.hash.hex().upper() and out["height"] == "1"
    assert out["check_tx"]["code"] == 0 and out["tx_result"]["code"] == 0
    assert out["tx_result"]["info"] == "OK" and out["tx_result"]["gas_used"] == "0"
    # CheckTx failure: answered at once with height 0.
    res = await chain.call(
        "broadcast_tx_commit", {"tx": b64(alice.transfer(bob.address, 10**15).encoded)}
    )
    assert res["check_tx"]["code"] == 5 and res["check_tx"]["info"] == "INSUFFICIENT_FUNDS"
    assert res["height"] == "0"


async def test_broadcast_tx_commit_reports_a_dropped_tx(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    pending = alice.transfer(bob.address, 1)
    rival = Wallet(alice.key, chain.net.chain_id).transfer(chain.wallet(2).address, 2)  # nonce 0
    err: dict[str, Any] = {}

    async def broadcast() -> None:
        err.update(await chain.error("broadcast_tx_commit", {"tx": b64(pending.encoded)}))

    async with trio.open_nursery() as n:
        n.start_soon(broadcast)
        await chain.wait_mempool(1)
        await chain.produce([rival])  # spends nonce 0: the pooled tx is rechecked out
    assert err["code"] == -32000 and err["message"] == "Tx dropped"
    assert pending.hash.hex().upper() in err["data"]


async def test_broadcast_tx_commit_times_out_cleanly(tmp_path: Path, nursery: trio.Nursery) -> None:
    async with running_chain(tmp_path, nursery, commit_timeout_ms=300) as chain:
        tx = chain.wallet(0).transfer(chain.wallet(1).address, 3)
        err = await chain.error("broadcast_tx_commit", {"tx": b64(tx.encoded)})
        assert err["code"] == -32003 and err["message"] == "Timed out"
        assert "within 300 ms" in err["data"] and tx.hash.hex().upper() in err["data"]
        # The tx stays pooled and commits later; `tx` finds it then.
        assert (await chain.call("num_unconfirmed_txs"))["n_txs"] == "1"
        await chain.produce()
        res = await chain.call("tx", {"hash": tx.hash.hex()})
        assert res["height"] == "1"


# ---------------------------------------------------------------- txs and blocks


async def test_tx_by_hash_with_proof(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    ok = [alice.transfer(bob.address, 5), alice.transfer(bob.address, 6)]
    failing = alice.transfer(bob.address, 10**15)  # only CheckTx would refuse it
    cb = await chain.produce([*ok, failing])
    for i, tx in enumerate([*ok, failing]):
        res = await chain.call("tx", {"hash": tx.hash.hex(), "prove": True})
        assert res["hash"] == tx.hash.hex().upper()
        assert res["height"] == "1" and res["index"] == i
        assert base64.b64decode(res["tx"]) == tx.encoded
        pr = res["proof"]
        assert pr["root_hash"] == cb.block.header.data_hash.hex().upper()
        data = base64.b64decode(pr["data"])
        proof = MerkleProof(
            int(pr["proof"]["index"]),
            int(pr["proof"]["total"]),
            base64.b64decode(pr["proof"]["leaf_hash"]),
            tuple(base64.b64decode(a) for a in pr["proof"]["aunts"]),
        )
        assert verify_proof(bytes.fromhex(pr["root_hash"]), sha256(data), proof)
        assert not verify_proof(bytes.fromhex(pr["root_hash"]), sha256(data + b"x"), proof)
    res = await chain.call("tx", {"hash": b64(failing.hash)})  # base64 form of the hash
    assert res["tx_result"]["code"] == 5 and res["tx_result"]["info"] == "INSUFFICIENT_FUNDS"
    assert "proof" not in res
    err = await chain.error("tx", {"hash": "ab" * 32})
    assert err["code"] == -32002 and "latest height is 1" in err["data"]


async def test_block_shapes(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    tx = alice.transfer(bob.address, 5)
    b1 = await chain.produce([tx])
    b2 = await chain.produce()
    vset1 = chain.builder.validators_at(1)
    assert vset1 is not None
    ev = duplicate_vote_evidence(chain.net.chain_id, chain.net.validator_keys[1], vset1, 1)
    b3 = await chain.produce(evidence=[ev])

    res = await chain.call("block", {"height": 1})
    assert res["block_id"] == {"hash": b1.block.id.hex().upper()}
    h = res["block"]["header"]
    hb = b1.block.header
    assert h["height"] == "1" and h["chain_id"] == chain.net.chain_id
    assert h["time"] == format_time(hb.time)
    assert h["proposer_address"] == hb.proposer_address.hex().upper()
    assert h["app_hash"] == hb.app_hash.hex().upper()
    assert h["last_block_id"] == {"hash": ""}
    assert [base64.b64decode(t) for t in res["block"]["data"]["txs"]] == [tx.encoded]
    assert res["block"]["last_commit"] == {
        "height": "0",
        "round": 0,
        "block_id": {"hash": ""},
        "signatures": [],
    }
    assert res["block"]["evidence"] == {"evidence": []} and res["block"]["pol"] is None

    latest = await chain.call("block")  # default: the latest
    assert latest["block_id"]["hash"] == b3.block.id.hex().upper()
    lc = latest["block"]["last_commit"]
    assert lc["height"] == "2" and lc["block_id"]["hash"] == b2.block.id.hex().upper()
    assert len(lc["signatures"]) == N_VALIDATORS
    for s in lc["signatures"]:
        assert s["block_id_flag"] == 2 and len(base64.b64decode(s["signature"])) == 64
    evs = latest["block"]["evidence"]["evidence"]
    assert len(evs) == 1 and evs[0]["type"] == "tendermint/DuplicateVoteEvidence"
    assert evs[0]["value"]["vote_a"]["height"] == "1"
    assert evs[0]["value"]["vote_a"]["validator_address"] == ev.validator_address.hex().upper()

    by_hash = await chain.call("block_by_hash", {"hash": b2.block.id.hex()})
    assert by_hash["block"]["header"]["height"] == "2"
    by_b64 = await chain.call("block_by_hash", {"hash": b64(b2.block.id)})
    assert by_b64 == by_hash

    c = await chain.call("commit", {"height": 2})
    assert c["canonical"] is True and c["signed_header"]["header"]["height"] == "2"
    assert c["signed_header"]["commit"]["block_id"]["hash"] == b2.block.id.hex().upper()
    assert (await chain.call("commit"))["canonical"] is False  # the seen commit of the tip

    # URI form, as curl would send it.
    r = await chain.client.get("/block?height=2")
    assert r.json()["result"]["block_id"]["hash"] == b2.block.id.hex().upper()


async def test_blockchain_metas(chain: Chain) -> None:
    empty = await chain.call("blockchain")
    assert empty == {"last_height": "0", "block_metas": []}
    blocks = [await chain.produce() for _ in range(22)]
    res = await chain.call("blockchain")
    assert res["last_height"] == "22"
    heights = [m["header"]["height"] for m in res["block_metas"]]
    assert heights == [str(h) for h in range(22, 2, -1)]  # 20 metas, newest first
    m = res["block_metas"][0]
    assert m["block_id"]["hash"] == blocks[-1].block.id.hex().upper()
    assert m["num_txs"] == "0" and m["block_size"] == str(len(blocks[-1].block.encoded))
    res = await chain.call("blockchain", {"minHeight": "5", "maxHeight": 7})
    assert [m["header"]["height"] for m in res["block_metas"]] == ["7", "6", "5"]
    res = await chain.call("blockchain", {"minHeight": 21, "maxHeight": 99})  # clamped
    assert [m["header"]["height"] for m in res["block_metas"]] == ["22", "21"]


async def test_block_results(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    new_val = validator_key(10)
    txs = [
        alice.transfer(bob.address, 5),
        alice.transfer(bob.address, 10**15),
        alice.bond(new_val.public_key, 50),
    ]
    cb = await chain.produce(txs)
    res = await chain.call("block_results", {"height": 1})
    assert res["height"] == "1"
    assert [r["code"] for r in res["txs_results"]] == [0, 5, 0]
    assert res["txs_results"][1]["info"] == "INSUFFICIENT_FUNDS"
    assert "balance" in res["txs_results"][1]["log"]
    assert res["validator_updates"] == [
        {
            "pub_key": {"type": "tendermint/PubKeyEd25519", "value": b64(new_val.public_key)},
            "power": "50",
        }
    ]
    assert res["app_hash"] == cb.state.app_hash.hex().upper()
    await chain.produce()
    assert (await chain.call("block_results"))["txs_results"] is None  # empty block 2
    # app_hash of height 1 now comes from header 2 and is the same.
    assert (await chain.call("block_results", {"height": 1}))["app_hash"] == res["app_hash"]


# ---------------------------------------------------------------- validators


async def test_validators_pagination_and_set_change_at_h_plus_2(chain: Chain) -> None:
    res = await chain.call("validators")
    assert res["block_height"] == "1" and res["total"] == str(N_VALIDATORS)
    got = {v["address"] for v in res["validators"]}
    assert got == {k.address.hex().upper() for k in chain.net.validator_keys}
    v0 = res["validators"][0]
    assert v0["voting_power"] == "100"
    # CometBFT priorities of height 1: the genesis set after one increment, centred
    prios = [int(v["proposer_priority"]) for v in res["validators"]]
    assert abs(sum(prios)) < N_VALIDATORS and max(prios) > 0
    assert v0["pub_key"]["type"] == "tendermint/PubKeyEd25519"
    page2 = await chain.call("validators", {"page": 2, "per_page": 3})
    assert page2["count"] == "1" and page2["total"] == "4"
    assert page2["validators"][0] == res["validators"][3]

    new_val = validator_key(10)
    await chain.produce([chain.wallet(0).bond(new_val.public_key, 500)])  # height 1
    addr = new_val.address.hex().upper()
    at2 = await chain.call("validators", {"height": 2})
    at3 = await chain.call("validators", {"height": 3})
    assert addr not in {v["address"] for v in at2["validators"]}
    assert at3["validators"][0]["address"] == addr and at3["total"] == "5"


# ---------------------------------------------------------------- abci_query


async def test_abci_query_account_with_proof(chain: Chain) -> None:
    alice, bob = chain.wallet(0), chain.wallet(1)
    await chain.produce([alice.transfer(bob.address, 25)])
    path = f"/account/{alice.address.hex()}"
    res = await chain.call("abci_query", {"path": path, "prove": True})
    resp = res["response"]
    assert resp["code"] == 0 and resp["height"] == "1" and resp["log"] == "exists"
    assert resp["decoded"] == {
        "address": alice.address.hex().upper(),
        "balance": str(1_000_000_000 - 25),
        "nonce": "1",
    }
    assert base64.b64decode(resp["value"]) == encode(Account(1_000_000_000 - 25, 1))
    # Verify against the app hash a client trusts: the node's latest, then header 2's.
    st = await chain.call("status")
    assert verify_query_response(res, bytes.fromhex(st["sync_info"]["latest_app_hash"]))
    b2 = await chain.produce()
    assert verify_query_response(res, b2.block.header.app_hash)
    assert not verify_query_response(res, chain.builder.blocks[0].block.header.app_hash)
    # A lying node: a bigger balance no longer matches the proof.
    forged = json.loads(json.dumps(res))
    forged["response"]["value"] = b64(encode(Account(10**12, 1)))
    assert not verify_query_response(forged, b2.block.header.app_hash)
    # Absence is proven too (an unknown account reads as zero).
    stranger = "ab" * 20
    res = await chain.call("abci_query", {"path": "/account", "data": stranger, "prove": True})
    assert res["response"]["value"] is None and res["response"]["decoded"]["balance"] == "0"
    assert len(query_result_from_response(res).proofs) in (1, 2)
    assert verify_query_response(res, chain.node.chain.state.app_hash)
    # Without prove there is no proof to check.
    res = await chain.call("abci_query", {"path": path})
    assert res["response"]["proofOps"] is None
    with pytest.raises(ValueError, match="no proof"):
        verify_query_response(res, b2.block.header.app_hash)


async def test_abci_query_validator_and_raw_store(chain: Chain) -> None:
    vk = chain.net.validator_keys[0]
    for arg in (vk.address.hex(), vk.public_key.hex()):
        res = await chain.call("abci_query", {"path": f"/validator/{arg}", "prove": "true"})
        d = res["response"]["decoded"]
        assert d["address"] == vk.address.hex().upper() and d["voting_power"] == "100"
        assert d["pub_key"]["value"] == b64(vk.public_key) and d["name"] == "node0"
        assert d["operator"] == chain.net.account_keys[0].address.hex().upper()
        assert verify_query_response(res, chain.node.chain.state.app_hash)
    res = await chain.call("abci_query", {"path": "/validator/" + "00" * 20})
    assert res["response"]["value"] is None and res["response"]["decoded"] is None
    res = await chain.call("abci_query", {"path": "/store/" + b"params".hex(), "prove": True})
    assert res["response"]["value"] is not None and res["response"]["decoded"] is None
    assert verify_query_response(res, chain.node.chain.state.app_hash)
    # URI form.
    r = await chain.client.get(f'/abci_query?path="/store/{b"params".hex()}"&prove=true')
    assert r.json()["result"]["response"]["key"] == b64(b"params")


# ---------------------------------------------------------------- errors


BAD_CALLS: list[tuple[str, dict[str, Any], int, str]] = [
    ("block", {"height": 9}, -32002, "height 9 is not available: the latest height is 2"),
    ("block", {"height": 0}, -32602, "height: must be >= 1"),
    ("block", {"height": "abc"}, -32602, "height: expected an integer"),
    ("block", {"hieght": 1}, -32602, "unknown param(s) hieght"),
    ("block_results", {"height": 3}, -32002, "the latest height is 2"),
    ("commit", {"height": 3}, -32002, "the latest height is 2"),
    ("block_by_hash", {"hash": "cd" * 32}, -32002, "the latest height is 2"),
    ("block_by_hash", {"hash": "xyz"}, -32602, "hash: expected a 32-byte hash"),
    ("block_by_hash", {}, -32602, "missing required param 'hash'"),
    ("tx", {"hash": "ab" * 31}, -32602, "hash: expected a 32-byte hash"),
    ("tx", {"hash": 5}, -32602, "hash: expected a string"),
    ("blockchain", {"minHeight": 5, "maxHeight": 3}, -32602, "minHeight 5 is greater"),
    ("blockchain", {"minHeight": 5}, -32002, "the latest height is 2"),
    ("blockchain", {"maxHeight": -1}, -32602, "maxHeight: must be >= 0"),
    ("validators", {"height": 9}, -32002, "the latest height is 2"),
    ("validators", {"page": 2}, -32602, "page: must be within [1, 1]"),
    ("validators", {"per_page": 0}, -32602, "per_page: must be >= 1"),
    ("unconfirmed_txs", {"limit": "many"}, -32602, "limit: expected an integer"),
    ("broadcast_tx_sync", {"tx": "%%%"}, -32602, "tx: not valid base64"),
    ("broadcast_tx_commit", {}, -32602, "missing required param 'tx'"),
    ("broadcast_tx_async", {"tx": 12}, -32602, "tx: expected a bytes string"),
    ("abci_query", {"path": "/bogus/00"}, -32602, "path: unknown query path"),
    ("abci_query", {"path": "/account/zz"}, -32602, "is not valid hex"),
    ("abci_query", {"path": "/account/abcd"}, -32602, "needs an address (20 bytes)"),
    ("abci_query", {"path": "/store"}, -32602, "/store needs a key"),
    ("abci_query", {"path": "/account/" + "ab" * 20, "data": "ab" * 20}, -32602, "not both"),
    (
        "abci_query",
        {"path": "/account/" + "ab" * 20, "height": 1},
        -32602,
        "height: state queries are answered at the latest height only (2)",
    ),
    ("abci_query", {"path": "/account", "data": "xyz"}, -32602, "data: not valid hex"),
    ("abci_query", {"path": "/account", "prove": "maybe"}, -32602, "prove: expected true"),
]


async def test_bad_params_and_unknown_heights(chain: Chain) -> None:
    """Each bad call gets its JSON-RPC error naming the param or the latest height (one node
    serves the whole table: starting one per row would cost more than the calls)."""
    await chain.produce()
    await chain.produce()
    for method, params, code, fragment in BAD_CALLS:
        err = await chain.error(method, params)
        assert err["code"] == code, (method, params, err)
        assert fragment in json.dumps(err), (method, params, err)


async def test_empty_chain_answers(chain: Chain) -> None:
    err = await chain.error("block")
    assert err["code"] == -32002 and "latest height is 0" in err["data"]
    err = await chain.error("block_results")
    assert err["code"] == -32002
    res = await chain.call("abci_query", {"path": "/account/" + "ab" * 20, "prove": True})
    assert res["response"]["height"] == "0"  # the genesis state, with a proof
    assert verify_query_response(res, chain.node.chain.state.app_hash)
    listing = (await chain.client.get("/")).json()["methods"]
    names = {m["name"] for m in listing}
    assert {
        "broadcast_tx_async",
        "broadcast_tx_sync",
        "broadcast_tx_commit",
        "tx",
        "block",
        "block_by_hash",
        "blockchain",
        "validators",
        "genesis",
        "num_unconfirmed_txs",
        "unconfirmed_txs",
        "abci_query",
        "block_results",
        "commit",
    } <= names

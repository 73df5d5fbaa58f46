"""The content service in real in-process nodes: RPC over HTTP, exchange over loopback libp2p."""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from node.config import NodeConfig
from node.content import EXCHANGE_PENALTIES, ContentService
from node.daemon import Node
from node.home import write_genesis
from node.rpc.content import MAX_READ_BYTES
from storage.cid import Cid, chunk_cid, manifest_cid
from storage.errors import StoreClosed
from storage.exchange.wire import PROTOCOL_ID, ErrorMsg, FramedStream, WantHave
from tests.node.node_helpers import loopback_config, make_home

CS = 64 * 1024  # small chunks: multi-chunk objects stay cheap


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def content_config(**storage: Any) -> NodeConfig:
    cfg = loopback_config()
    cfg.storage.chunk_size = CS
    for k, v in storage.items():
        setattr(cfg.storage, k, v)
    return cfg


@dataclass
class Peer:
    """A running node plus an RPC client that sends its operator token (or not)."""

    node: Node
    http: httpx.AsyncClient

    @property
    def content(self) -> ContentService:
        return self.node.content

    async def post(
        self, method: str, params: dict[str, Any] | None = None, token: str | None = "own"
    ) -> dict[str, Any]:
        if token == "own":
            token = self.node.home.operator_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        r = await self.http.post("/", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert "Traceback" not in r.text
        return r.json()  # type: ignore[no-any-return]

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        doc = await self.post(method, params)
        assert "error" not in doc, doc
        return doc["result"]

    async def read_all(self, cid: str) -> bytes:
        """The object through the public chunk-range read, as a remote client gets it."""
        out, chunk = bytearray(), 0
        while True:
            part = await self.call("content_read", {"cid": cid, "chunk": chunk})
            assert part["offset"] == len(out) and part["length"] <= MAX_READ_BYTES
            out += base64.b64decode(part["data"])
            if part["next"] is None:
                return bytes(out)
            chunk = part["next"]


async def wait_connected(node: Node, peers: list[Node]) -> None:
    want = {p.p2p.peer_id for p in peers}
    with trio.fail_after(10):
        while not want <= set(node.p2p.connected_peers()):
            await trio.sleep(0.01)


@asynccontextmanager
async def content_nodes(tmp_path: Path, n: int, **storage: Any) -> AsyncIterator[list[Peer]]:
    """``n`` nodes of one chain, each bootstrapping to the earlier ones; yields once connected.

    On exit every node has fully stopped (closers ran), unlike a bare cancel.
    """
    async with trio.open_nursery() as nursery:
        try:
            nodes: list[Node] = []
            homes = [make_home(tmp_path / f"n{i}", f"n{i}") for i in range(n)]
            for home in homes[1:]:  # one chain: n0 validates, the others follow as full nodes
                write_genesis(home, homes[0].load_genesis())
            for home in homes:
                cfg = content_config(**storage)
                cfg.p2p.bootstrap = [p.p2p.listen_multiaddrs()[0] for p in nodes]
                node = Node(home, cfg)
                await nursery.start(node.run)
                nodes.append(node)
            for i, node in enumerate(nodes):
                await wait_connected(node, nodes[:i] + nodes[i + 1 :])
                await node.content.wait_ready()
            async with AsyncExitStack() as clients:
                peers = []
                for nd in nodes:
                    http = httpx.AsyncClient(base_url=f"http://{nd.rpc_laddr}", timeout=30)
                    peers.append(Peer(nd, await clients.enter_async_context(http)))
                yield peers
        finally:
            nursery.cancel_scope.cancel()


async def metric(peer: Peer, direction: str) -> float:
    r = await peer.http.get("/metrics")
    for line in r.text.splitlines():
        if line.startswith(f'fedledger_exchange_bytes_total{{direction="{direction}"}}'):
            return float(line.split()[-1])
    return 0.0


# ---------------------------------------------------------------- the happy path, with a liar


async def test_put_on_a_fetch_on_b_identical_bytes_pinned_and_liar_penalised(
    tmp_path: Path,
) -> None:
    data = blob(40 * CS + 123, 1)  # 41 chunks, the last one short
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    async with content_nodes(tmp_path, 3) as (a, b, c):
        put = await a.call("content_put", {"path": str(src), "pin": "own submission"})
        cid = put["cid"]
        assert put["size"] == len(data) and put["chunks"] == 41 and put["complete"]
        assert put["pins"] == ["own submission"] and cid.startswith("baga")
        assert (await c.call("content_put", {"path": str(src)}))["cid"] == cid

        # C serves every chunk with one bit flipped: B must notice, use A, and penalise C.
        real = c.content.exchange.server._load_block  # type: ignore[union-attr]

        def lie(x: Cid) -> bytes:
            block = bytearray(real(x))
            if not x.is_manifest:
                block[0] ^= 1
            return bytes(block)

        c.content.exchange.server._load_block = lie  # type: ignore[union-attr,method-assign]

        got = await b.call("content_fetch", {"cid": cid, "pin": "replica"})
        assert got["cid"] == cid and got["complete"] and got["pins"] == ["replica"]
        assert got["fetched_bytes"] == len(data)
        assert await b.read_all(cid) == data
        out = tmp_path / "out.bin"
        res = await b.call("content_get", {"cid": cid, "path": str(out)})
        assert res == {"cid": cid, "path": str(out), "size": len(data)}
        assert out.read_bytes() == data
        assert (await b.call("pin_ls", {"cid": cid}))["pins"][0]["reason"] == "replica"

        scores = b.node.p2p.scores
        assert scores.score(c.node.p2p.peer_id) == -EXCHANGE_PENALTIES["exchange-bad-block"]
        assert scores.reasons[c.node.p2p.peer_id] == ["exchange-bad-block"]
        assert scores.score(a.node.p2p.peer_id) == 0
        assert await metric(b, "received") >= len(data)
        a.content.sync_metrics()
        assert await metric(a, "sent") > 0

        # A second fetch of present content moves nothing and just adds the pin.
        again = await b.call("content_fetch", {"cid": cid, "pin": "global model"})
        assert again["fetched_bytes"] == 0 and set(again["pins"]) == {"replica", "global model"}
        store = b.content.store
    with pytest.raises(StoreClosed):  # the closer ran after the host stopped
        store.stat(cid)


async def test_exchange_says_busy_before_the_node_guard_resets(tmp_path: Path) -> None:
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID

    async with content_nodes(tmp_path, 2) as (a, b):
        limit = a.content.server_limits.max_streams_per_peer
        cid = a.content.store.put_bytes(b"x")
        a_id = ID.from_base58(a.node.p2p.peer_id)
        held = []
        for _ in range(limit):  # proven live by a round trip each
            s = await b.node.p2p.host.new_stream(a_id, [TProtocol(PROTOCOL_ID)])
            fs = FramedStream(s, stall_timeout=5.0)
            await fs.write_message(WantHave(None, (bytes(cid),)))
            await fs.read_message(1 << 16)
            await fs.read_message(1 << 16)
            held.append(fs)
        s = await b.node.p2p.host.new_stream(a_id, [TProtocol(PROTOCOL_ID)])
        reply = await FramedStream(s, stall_timeout=5.0).read_message(1 << 16)
        assert isinstance(reply, ErrorMsg) and reply.code == "busy"
        assert a.node.p2p.scores.score(b.node.p2p.peer_id) == 0  # polite answer, no penalty
        for fs in held:
            await fs.close()


# ---------------------------------------------------------------- bad input


async def test_bad_input_gives_clear_rpc_errors_and_node_keeps_running(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(blob(5 * CS, 2))  # over max_object_bytes
    a1, a2, a3 = (tmp_path / f"a{i}.bin" for i in range(3))
    for i, p in enumerate((a1, a2, a3)):
        p.write_bytes(blob(3 * CS, 10 + i))
    async with content_nodes(tmp_path, 1, max_object_bytes=4 * CS, quota_bytes=7 * CS) as (n,):
        stored = await n.call("content_put", {"path": str(a1)})
        cid = stored["cid"]
        first_chunk = str(chunk_cid(a1.read_bytes()[:CS]))
        unknown = str(chunk_cid(b"never stored"))
        as_manifest = str(manifest_cid(a1.read_bytes()[:CS]))  # a chunk named as a manifest
        bad_token = "wrong"
        cases: list[tuple[str, dict[str, Any], str | None, int, str]] = [
            # (method, params, token, code, kind or text in the error)
            ("content_stat", {"cid": "not-a-cid"}, None, -32602, "invalid_cid"),
            (
                "content_stat",
                {"cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"},
                None,
                -32602,
                "invalid_cid",
            ),
            ("content_stat", {"cid": "b" * 500}, None, -32602, "longer than"),
            ("content_stat", {"cid": unknown}, None, -32002, "not_found"),
            ("content_stat", {}, None, -32602, "missing required param 'cid'"),
            ("content_read", {"cid": unknown}, None, -32002, "not_found"),
            ("content_read", {"cid": cid, "chunk": 3}, None, -32602, "past the last chunk"),
            ("content_read", {"cid": as_manifest}, None, -32602, "invalid_manifest"),
            ("content_put", {"path": str(a2)}, None, -32001, "operator-only"),
            ("content_put", {"path": str(a2)}, bad_token, -32001, "operator-only"),
            ("content_put", {"path": "relative/file.bin"}, "own", -32602, "must be absolute"),
            ("content_put", {"path": str(tmp_path / "nope")}, "own", -32602, "bad_path"),
            ("content_put", {"path": str(tmp_path)}, "own", -32602, "bad_path"),
            ("content_put", {"path": str(big)}, "own", -32000, "too_large"),
            ("content_get", {"cid": cid, "path": "out.bin"}, "own", -32602, "must be absolute"),
            (
                "content_get",
                {"cid": cid, "path": str(tmp_path / "no" / "x")},
                "own",
                -32602,
                "bad_path",
            ),
            ("content_get", {"cid": cid, "path": "/tmp/x"}, None, -32001, "operator-only"),
            ("pin_add", {"cid": cid, "reason": ""}, "own", -32602, "invalid_params"),
            ("pin_add", {"cid": unknown, "reason": "r"}, "own", -32002, "not_found"),
            ("pin_add", {"cid": cid, "reason": "r"}, None, -32001, "operator-only"),
            ("pin_rm", {"cid": cid}, "own", -32002, "not_pinned"),
            ("content_gc", {}, None, -32001, "operator-only"),
            ("content_fetch", {"cid": unknown}, "own", -32004, "unavailable"),
            ("content_fetch", {"cid": cid, "peers": ["garbage!"]}, "own", -32602, "peers[0]"),
            ("content_fetch", {"cid": cid, "timeout_s": 0}, "own", -32602, "timeout_s"),
        ]
        for method, params, token, code, text in cases:
            doc = await n.post(method, params, token=token)
            assert "error" in doc, (method, params, doc)
            err = doc["error"]
            assert err["code"] == code, (method, params, err)
            assert text in str(err.get("data")), (method, params, err)

        # A chunk is readable by its own raw CID (a one-chunk object).
        part = await n.call("content_read", {"cid": first_chunk})
        assert base64.b64decode(part["data"]) == a1.read_bytes()[:CS] and part["next"] is None

        # Full quota: pinned content leaves no room; the error says how much.
        await n.call("pin_add", {"cid": cid, "reason": "keep"})
        await n.call("content_put", {"path": str(a2), "pin": "keep"})
        doc = await n.post("content_put", {"path": str(a3), "pin": "keep"})
        err = doc["error"]
        assert err["code"] == -32000 and err["data"]["kind"] == "quota_exceeded"
        assert err["data"]["quota"] == 7 * CS and err["data"]["needed"] > 0

        # A fetch that misses its deadline is -32003 (the exchange is faked to hang here).
        ex = n.content.exchange
        assert ex is not None

        async def hang(*args: Any, **kwargs: Any) -> Cid:
            await trio.sleep_forever()
            raise AssertionError

        real_fetch = ex.fetch
        ex.fetch = hang  # type: ignore[method-assign]
        doc = await n.post("content_fetch", {"cid": unknown, "timeout_s": 1})
        assert doc["error"]["code"] == -32003 and doc["error"]["data"]["kind"] == "timeout"
        ex.fetch = real_fetch  # type: ignore[method-assign]

        # A serving policy that refuses anonymous readers covers the object and its chunks;
        # the operator can still get it.
        n.content.policy = lambda peer, c: not (peer is None and str(c) == cid)
        for denied in (cid, first_chunk):
            doc = await n.post("content_read", {"cid": denied})
            assert doc["error"]["code"] == -32001 and doc["error"]["data"]["kind"] == "forbidden"
        out = tmp_path / "operator-copy.bin"
        await n.call("content_get", {"cid": cid, "path": str(out)})
        assert out.read_bytes() == a1.read_bytes()

        # Still serving, and the store still works.
        assert await n.call("health") == {}
        gc = await n.call("content_gc")
        assert gc["used_bytes"] == n.content.store.used_bytes and gc["quota_bytes"] == 7 * CS
        assert (await n.call("content_stat", {"cid": cid}))["pins"] == ["keep"]
        assert (await n.call("content_verify"))["ok"] is True

"""Operator JSON-RPC over real HTTP against an in-process node: methods, forms and errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from node.rpc.jsonrpc import Param
from tests.node.node_helpers import make_home, running_inprocess_node


@pytest.fixture
async def node(tmp_path, nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    home = make_home(tmp_path / "home")
    async with running_inprocess_node(nursery, home) as n:

        async def echo(height: int, name: str = "x", raw: bytes = b"") -> dict[str, Any]:
            return {"height": height, "name": name, "raw": raw.hex()}

        async def boom() -> None:
            raise ZeroDivisionError("secret internal detail")

        async def secret() -> str:
            return "ok"

        n.rpc.add("test_echo", echo, [Param("height", "int", required=True, minimum=0),
                                      Param("name", "str"), Param("raw", "hex")])
        n.rpc.add("test_boom", boom)
        n.rpc.add("test_secret", secret, operator=True)
        yield n


def url(node) -> str:  # type: ignore[no-untyped-def]
    return f"http://{node.rpc_laddr}"


async def post(node, body: Any, raw: bytes | None = None, **kw: Any) -> httpx.Response:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as c:
        content = raw if raw is not None else json.dumps(body).encode()
        return await c.post(url(node) + "/", content=content, **kw)


async def get(node, path: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as c:
        return await c.get(url(node) + path)


def call(method: str, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    d: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        d["params"] = params
    return d


async def test_health_status_net_info(node) -> None:  # type: ignore[no-untyped-def]
    r = await post(node, call("health"))
    assert r.status_code == 200 and r.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    st = (await post(node, call("status"))).json()["result"]
    assert st["node_info"]["id"] == node.p2p.peer_id
    assert st["node_info"]["network"] == "test-chain"
    assert st["node_info"]["moniker"] == "n0"
    assert st["node_info"]["listen_addr"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert st["sync_info"]["latest_block_height"].isdigit()  # a 1-validator chain commits
    assert st["sync_info"]["catching_up"] is False
    net = (await post(node, call("net_info"))).json()["result"]
    assert net["n_peers"] == "0" and net["peers"] == [] and net["listening"] is True


async def test_uri_form(node) -> None:  # type: ignore[no-untyped-def]
    r = await get(node, "/status")
    assert r.status_code == 200 and r.json()["result"]["node_info"]["id"] == node.p2p.peer_id
    r = await get(node, '/test_echo?height=5&name="bob"&raw=0xab')
    assert r.json()["result"] == {"height": 5, "name": "bob", "raw": "ab"}
    r = await get(node, "/test_echo?height=abc")
    assert r.json()["error"]["code"] == -32602
    r = await get(node, "/no_such_method")
    assert r.status_code == 404 and r.json()["error"]["code"] == -32601
    listing = (await get(node, "/")).json()["methods"]
    assert {"status", "net_info", "health"} <= {m["name"] for m in listing}


@pytest.mark.parametrize(
    "body, code, fragment",
    [
        (b"{not json", -32700, ""),
        (b'"just a string"', -32600, "JSON object"),
        (json.dumps({"jsonrpc": "1.0", "id": 1, "method": "health"}).encode(), -32600, "2.0"),
        (json.dumps({"jsonrpc": "2.0", "id": 1, "method": 7}).encode(), -32600, "method"),
        (json.dumps(call("nope")).encode(), -32601, "nope"),
        (json.dumps(call("test_echo", {"height": "x"})).encode(), -32602, "height"),
        (json.dumps(call("test_echo", {"height": True})).encode(), -32602, "boolean"),
        (json.dumps(call("test_echo", {"height": -1})).encode(), -32602, ">= 0"),
        (json.dumps(call("test_echo", {})).encode(), -32602, "missing required param 'height'"),
        (json.dumps(call("test_echo", {"height": 1, "bogus": 2})).encode(), -32602, "bogus"),
        (json.dumps(call("test_echo", [1, "a", "zz"])).encode(), -32602, "raw: not valid hex"),
        (json.dumps(call("test_echo", [1, 2, 3, 4])).encode(), -32602, "at most 3"),
        (json.dumps(call("test_echo", "str-params")).encode(), -32600, "array or object"),
        (json.dumps(call("test_boom")).encode(), -32603, "ZeroDivisionError in test_boom"),
        (json.dumps(call("test_secret")).encode(), -32001, "operator-only"),
        (b"[]", -32600, "empty batch"),
    ],
)
async def test_errors_are_spec_conforming(node, body: bytes, code: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    r = await post(node, None, raw=body)
    assert r.status_code in (200, 400)
    err = r.json()["error"]
    assert err["code"] == code
    assert fragment in json.dumps(err)
    assert "Traceback" not in r.text and "secret internal detail" not in r.text


async def test_positional_params_and_notifications(node) -> None:  # type: ignore[no-untyped-def]
    r = await post(node, call("test_echo", [3, "n"]))
    assert r.json()["result"] == {"height": 3, "name": "n", "raw": ""}
    r = await post(node, {"jsonrpc": "2.0", "method": "health"})  # notification: no reply
    assert r.status_code == 204 and r.content == b""


async def test_batch_and_batch_limit(node) -> None:  # type: ignore[no-untyped-def]
    r = await post(node, [call("health", id_=1), call("nope", id_=2),
                          {"jsonrpc": "2.0", "method": "health"}])
    out = r.json()
    assert [o["id"] for o in out] == [1, 2]
    assert out[0]["result"] == {} and out[1]["error"]["code"] == -32601
    r = await post(node, [call("health", id_=i) for i in range(11)])
    assert r.json()["error"]["code"] == -32600 and "limit of 10" in r.json()["error"]["data"]


async def test_oversized_body_is_refused(node) -> None:  # type: ignore[no-untyped-def]
    big = json.dumps(call("test_echo", {"height": 1, "name": "x" * 1_100_000})).encode()
    r = await post(node, None, raw=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == -32600 and "exceeds 1000000 bytes" in r.text
    # The node is still fine afterwards.
    assert (await post(node, call("health"))).json()["result"] == {}


async def test_operator_token_unlocks_operator_methods(node) -> None:  # type: ignore[no-untyped-def]
    token = node.home.operator_token()
    assert len(token) >= 32
    r = await post(node, call("test_secret"), headers={"Authorization": f"Bearer {token}"})
    assert r.json()["result"] == "ok"
    r = await post(node, call("test_secret"), headers={"Authorization": "Bearer wrong"})
    assert r.json()["error"]["code"] == -32001


async def test_metrics_endpoint(node) -> None:  # type: ignore[no-untyped-def]
    r = await get(node, "/metrics")
    assert r.status_code == 200 and "fedledger_p2p_peers" in r.text


async def test_operator_only_parameter_needs_the_token() -> None:
    """A public method with an operator-only option (fl_infer's ``record``) refuses the option
    without the token and grants it with the token."""
    from node.rpc.jsonrpc import (
        UNAUTHORIZED,
        CallContext,
        Registry,
        RPCError,
        dispatch,
        require_operator,
    )

    reg = Registry()

    async def infer(record: bool = False) -> str:
        if record:
            require_operator("infer with record")
        return "recorded" if record else "ok"

    reg.add("infer", infer, [Param("record", "bool")])
    assert await dispatch(reg, "infer", {}, CallContext(authorized=False)) == "ok"
    refused = await dispatch(reg, "infer", {"record": True}, CallContext(authorized=False))
    assert isinstance(refused, RPCError) and refused.code == UNAUTHORIZED
    assert "operator-only" in str(refused.data)
    assert await dispatch(reg, "infer", {"record": True}, CallContext(authorized=True)) == "recorded"

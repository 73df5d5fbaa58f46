"""The RPC's HTTP side: an ASGI app served by hypercorn's trio worker.

Routes (CometBFT-compatible where the concept exists):

* ``POST /``                JSON-RPC 2.0 (single or batch)
* ``GET  /<method>?k=v``    CometBFT's URI form, e.g. ``/status`` or ``/block?height=5``
* ``GET  /``                list of methods
* ``GET  /metrics``         Prometheus exposition
* ``GET  /websocket``       JSON-RPC over a websocket, with ``subscribe``/``unsubscribe``

Limits: body size (413 + JSON-RPC -32600 before reading an oversize body),
batch size, concurrent requests (503). Handlers never leak tracebacks.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import trio

from node.events import EventBus, QueryError
from node.rpc.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    UNAVAILABLE,
    CallContext,
    Registry,
    RPCError,
    call_one,
    dispatch,
    handle_body,
)

Scope = dict[str, Any]


def _error_body(code: int, message: str, data: Any = None, id_: Any = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_,
                       "error": RPCError(code, message, data).to_json()}).encode()


class RPCApp:
    """ASGI application over a method :class:`Registry`."""

    def __init__(
        self,
        registry: Registry,
        *,
        max_body_bytes: int = 1_000_000,
        max_batch: int = 10,
        max_connections: int = 64,
        operator_token: str = "",
        metrics: Callable[[], bytes] | None = None,
        events: EventBus | None = None,
        log: Any = None,
    ) -> None:
        self.registry = registry
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.max_connections = max_connections
        self.operator_token = operator_token
        self.metrics = metrics
        self.events = events if events is not None else EventBus()  # an empty bus is falsy
        self.log = log
        self.active = 0

    # ------------------------------------------------------------ plumbing

    def _ctx(self, scope: Scope) -> CallContext:
        auth = ""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                auth = v.decode("latin-1")
        ok = bool(self.operator_token) and hmac.compare_digest(
            auth.encode(), f"Bearer {self.operator_token}".encode())
        return CallContext(authorized=ok, on_internal_error=self._internal_error)

    def _internal_error(self, method: str, exc: BaseException) -> None:
        if self.log is not None:
            self.log.error("rpc handler failed", method=method, error=repr(exc),
                           exc_info=exc)

    async def _send(self, send: Any, status: int, body: bytes,
                    ctype: bytes = b"application/json") -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind == "websocket":
            await self._websocket(scope, receive, send)
            return
        if self.active >= self.max_connections:
            await self._send(send, 503, _error_body(
                UNAVAILABLE, "Server busy", f"more than {self.max_connections} requests"))
            return
        self.active += 1
        try:
            await self._http(scope, receive, send)
        finally:
            self.active -= 1

    async def _read_body(self, scope: Scope, receive: Any) -> bytes | None:
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    if int(v) > self.max_body_bytes:
                        return None
                except ValueError:
                    return None
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return b""
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                return None
            chunks.append(body)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        method = scope["method"]
        path = scope["path"]
        if method == "POST" and path in ("/", ""):
            body = await self._read_body(scope, receive)
            if body is None:
                await self._send(send, 413, _error_body(
                    INVALID_REQUEST, "Invalid Request",
                    f"request body exceeds {self.max_body_bytes} bytes"))
                return
            if not body:
                await self._send(send, 400, _error_body(PARSE_ERROR, "Parse error", "empty body"))
                return
            out = await handle_body(self.registry, body, self._ctx(scope), self.max_batch)
            if out is None:  # notifications only
                await self._send(send, 204, b"")
                return
            await self._send(send, 200, json.dumps(out, default=_json_default).encode())
            return
        if method != "GET":
            await self._send(send, 405, _error_body(INVALID_REQUEST, "Invalid Request",
                                                    f"HTTP method {method} not allowed"))
            return
        name = path.strip("/")
        if name == "":
            listing = {"methods": [
                {"name": m.name, "params": [p.name for p in m.params],
                 "operator": m.operator, "doc": m.doc}
                for m in sorted(self.registry.methods.values(), key=lambda m: m.name)]}
            await self._send(send, 200, json.dumps(listing).encode())
            return
        if name == "metrics" and self.metrics is not None:
            await self._send(send, 200, self.metrics(), b"text/plain; version=0.0.4")
            return
        # URI form: /status, /block?height=5, strings may be "quoted" as CometBFT's are.
        try:
            qs = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                        keep_blank_values=True, strict_parsing=False,
                                        max_num_fields=32)
        except ValueError as e:
            await self._send(send, 400, _error_body(INVALID_PARAMS, "Invalid params", str(e)))
            return
        params = {k: _uri_value(v) for k, v in qs}
        result = await dispatch(self.registry, name, params, self._ctx(scope))
        if isinstance(result, RPCError):
            status = 404 if result.code == -32601 else 200
            await self._send(send, status, json.dumps(
                {"jsonrpc": "2.0", "id": -1, "error": result.to_json()}).encode())
            return
        await self._send(send, 200, json.dumps({"jsonrpc": "2.0", "id": -1, "result": result},
                                               default=_json_default).encode())

    # ------------------------------------------------------------ websocket

    async def _websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        if scope["path"].strip("/") != "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        ctx = self._ctx(scope)
        subs: dict[str, Any] = {}
        lock = trio.Lock()

        async def send_json(obj: Any) -> None:
            async with lock:
                await send({"type": "websocket.send",
                            "text": json.dumps(obj, default=_json_default)})

        async def pump(sub: Any, id_: Any) -> None:
            async for event in sub.receive:
                await send_json({"jsonrpc": "2.0", "id": id_, "result": event})

        async with trio.open_nursery() as nursery:
            try:
                while True:
                    msg = await receive()
                    if msg["type"] == "websocket.disconnect":
                        break
                    text = msg.get("text") or (msg.get("bytes") or b"").decode("utf-8", "replace")
                    if len(text) > self.max_body_bytes:
                        await send_json({"jsonrpc": "2.0", "id": None, "error": RPCError(
                            INVALID_REQUEST, "Invalid Request", "message too large").to_json()})
                        continue
                    try:
                        req = json.loads(text)
                    except json.JSONDecodeError as e:
                        await send_json({"jsonrpc": "2.0", "id": None, "error": RPCError(
                            PARSE_ERROR, "Parse error", str(e)[:200]).to_json()})
                        continue
                    if isinstance(req, dict) and req.get("method") in ("subscribe", "unsubscribe",
                                                                        "unsubscribe_all"):
                        await self._ws_subscription(req, subs, nursery, pump, send_json)
                        continue
                    out = await call_one(self.registry, req, ctx)
                    if out is not None:
                        await send_json(out)
            finally:
                for sub in subs.values():
                    self.events.unsubscribe(sub.id)
                nursery.cancel_scope.cancel()

    async def _ws_subscription(self, req: dict[str, Any], subs: dict[str, Any],
                               nursery: trio.Nursery, pump: Any, send_json: Any) -> None:
        id_ = req.get("id")
        params = req.get("params") or {}
        query = params.get("query") if isinstance(params, dict) else (
            params[0] if isinstance(params, list) and params else None)
        if req["method"] == "unsubscribe_all":
            for sub in subs.values():
                self.events.unsubscribe(sub.id)
            subs.clear()
            await send_json({"jsonrpc": "2.0", "id": id_, "result": {}})
            return
        if not isinstance(query, str):
            await send_json({"jsonrpc": "2.0", "id": id_, "error": RPCError(
                INVALID_PARAMS, "Invalid params", "query (string) is required").to_json()})
            return
        if req["method"] == "unsubscribe":
            sub = subs.pop(query, None)
            if sub is not None:
                self.events.unsubscribe(sub.id)
            await send_json({"jsonrpc": "2.0", "id": id_, "result": {}})
            return
        try:
            sub = self.events.subscribe(query)
        except QueryError as e:
            await send_json({"jsonrpc": "2.0", "id": id_, "error": RPCError(
                INVALID_PARAMS, "Invalid params", str(e)).to_json()})
            return
        subs[query] = sub
        await send_json({"jsonrpc": "2.0", "id": id_, "result": {}})
        nursery.start_soon(pump, sub, id_)


def _uri_value(v: str) -> Any:
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    if v and v[0] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


async def serve_rpc(app: RPCApp, laddr: str, *, task_status: Any = trio.TASK_STATUS_IGNORED,
                    shutdown: trio.Event | None = None) -> None:
    """Serve on ``host:port`` until cancelled (or ``shutdown`` is set)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    cfg = Config()
    cfg.bind = [laddr]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 5.0
    cfg.h11_max_incomplete_size = 16 * 1024
    cfg.websocket_max_message_size = app.max_body_bytes
    cfg.include_server_header = False
    ev = shutdown or trio.Event()
    await serve(app, cfg, shutdown_trigger=ev.wait, task_status=task_status)  # type: ignore[arg-type]

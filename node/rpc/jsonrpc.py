"""JSON-RPC 2.0 protocol handling, free of HTTP: parse, validate params, dispatch, error objects.

Methods are registered with a declared parameter list, so bad params are a
spec-conforming -32602 that names the parameter, never a Python exception.
Integer params accept JSON numbers and decimal strings (CometBFT clients send
``"height": "5"``); byte params accept hex (optionally ``0x``-prefixed) or
base64 as the parameter's kind declares.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# server-defined range -32000..-32099
SERVER_ERROR = -32000
UNAUTHORIZED = -32001
NOT_FOUND = -32002
TIMEOUT = -32003
UNAVAILABLE = -32004


class RPCError(Exception):
    """An error answered to the client as a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def invalid_params(msg: str) -> RPCError:
    return RPCError(INVALID_PARAMS, "Invalid params", msg)


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # int | str | bool | hex | b64 | bytes | list | dict | any
    required: bool = False
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    max_len: int | None = None


def _int(p: Param, v: Any) -> int:
    if isinstance(v, bool):
        raise invalid_params(f"{p.name}: expected an integer, got a boolean")
    if isinstance(v, int):
        out = v
    elif isinstance(v, str) and v.strip().lstrip("-").isdigit() and len(v) < 24:
        out = int(v)
    else:
        raise invalid_params(f"{p.name}: expected an integer, got {type(v).__name__} {v!r:.40}")
    if p.minimum is not None and out < p.minimum:
        raise invalid_params(f"{p.name}: must be >= {p.minimum}")
    if p.maximum is not None and out > p.maximum:
        raise invalid_params(f"{p.name}: must be <= {p.maximum}")
    return out


def _bytes(p: Param, v: Any) -> bytes:
    if not isinstance(v, str):
        raise invalid_params(f"{p.name}: expected a {p.kind} string, got {type(v).__name__}")
    s = v.strip()
    try:
        if p.kind == "hex" or (p.kind == "bytes" and s.lower().startswith("0x")):
            s = s[2:] if s.lower().startswith("0x") else s
            out = bytes.fromhex(s)
        else:
            out = base64.b64decode(s, validate=True)
    except (ValueError, binascii.Error):
        raise invalid_params(f"{p.name}: not valid {'hex' if p.kind == 'hex' else 'base64'}") from None
    if p.max_len is not None and len(out) > p.max_len:
        raise invalid_params(f"{p.name}: longer than {p.max_len} bytes")
    return out


def convert_param(p: Param, v: Any) -> Any:
    if p.kind == "any":
        return v
    if p.kind == "int":
        return _int(p, v)
    if p.kind == "str":
        if not isinstance(v, str):
            raise invalid_params(f"{p.name}: expected a string, got {type(v).__name__}")
        if p.max_len is not None and len(v) > p.max_len:
            raise invalid_params(f"{p.name}: longer than {p.max_len} characters")
        return v
    if p.kind == "bool":
        if isinstance(v, bool):
            return v
        if v in ("true", "false"):
            return v == "true"
        raise invalid_params(f"{p.name}: expected true or false, got {v!r:.40}")
    if p.kind in ("hex", "b64", "bytes"):
        return _bytes(p, v)
    if p.kind == "list":
        if not isinstance(v, list):
            raise invalid_params(f"{p.name}: expected an array, got {type(v).__name__}")
        return v
    if p.kind == "dict":
        if not isinstance(v, dict):
            raise invalid_params(f"{p.name}: expected an object, got {type(v).__name__}")
        return v
    raise RPCError(INTERNAL_ERROR, "Internal error", f"bad param kind {p.kind}")  # pragma: no cover


Handler = Callable[..., Awaitable[Any]]


@dataclass
class Method:
    name: str
    handler: Handler
    params: list[Param] = field(default_factory=list)
    operator: bool = False
    doc: str = ""

    def bind(self, params: Any) -> dict[str, Any]:
        """Map positional or named params onto the declared list, converting each."""
        if params is None:
            params = {}
        if isinstance(params, list):
            if len(params) > len(self.params):
                raise invalid_params(
                    f"{self.name} takes at most {len(self.params)} params, got {len(params)}"
                )
            params = {p.name: v for p, v in zip(self.params, params)}
        elif not isinstance(params, dict):
            raise RPCError(INVALID_REQUEST, "Invalid Request", "params must be an array or object")
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise invalid_params(f"unknown param(s) {', '.join(unknown)} for {self.name}")
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in params and params[p.name] is not None:
                out[p.name] = convert_param(p, params[p.name])
            elif p.required:
                raise invalid_params(f"missing required param {p.name!r}")
            elif p.default is not None:
                out[p.name] = p.default
            # else: omitted, so the handler's own default applies
        return out


class Registry:
    def __init__(self) -> None:
        self.methods: dict[str, Method] = {}

    def add(self, name: str, handler: Handler, params: list[Param] | None = None,
            operator: bool = False, doc: str = "") -> None:
        if name in self.methods:
            raise ValueError(f"RPC method {name} registered twice")
        self.methods[name] = Method(name, handler, params or [], operator, doc or
                                    (handler.__doc__ or "").strip().split("\n")[0])

    def method(self, name: str, params: list[Param] | None = None,
               operator: bool = False) -> Callable[[Handler], Handler]:
        def wrap(fn: Handler) -> Handler:
            self.add(name, fn, params, operator)
            return fn

        return wrap


@dataclass
class CallContext:
    authorized: bool = False  # the request carried the operator token
    # hooks to log internal errors without leaking them to the client
    on_internal_error: Callable[[str, BaseException], None] | None = None


def _response(id_: Any, result: Any = None, error: RPCError | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": id_, "error": error.to_json()}
    return {"jsonrpc": "2.0", "id": id_, "result": result}


async def call_one(registry: Registry, req: Any, ctx: CallContext) -> dict[str, Any] | None:
    """Handle one request object; None for a notification (no id)."""
    if not isinstance(req, dict):
        return _response(None, error=RPCError(INVALID_REQUEST, "Invalid Request",
                                              "a request must be a JSON object"))
    id_ = req.get("id")
    is_notification = "id" not in req
    if not (id_ is None or isinstance(id_, (str, int)) and not isinstance(id_, bool)):
        return _response(None, error=RPCError(INVALID_REQUEST, "Invalid Request",
                                              "id must be a string, number or null"))
    if req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
        return _response(id_, error=RPCError(INVALID_REQUEST, "Invalid Request",
                                             'need "jsonrpc": "2.0" and a string "method"'))
    result = await dispatch(registry, req["method"], req.get("params"), ctx)
    if is_notification:
        return None
    if isinstance(result, RPCError):
        return _response(id_, error=result)
    return _response(id_, result=result)


async def dispatch(registry: Registry, name: str, params: Any, ctx: CallContext) -> Any:
    """Run one method; returns the result or an RPCError (never raises)."""
    m = registry.methods.get(name)
    if m is None:
        return RPCError(METHOD_NOT_FOUND, "Method not found", f"no method named {name!r:.80}")
    if m.operator and not ctx.authorized:
        return RPCError(UNAUTHORIZED, "Unauthorized",
                        f"{name} is operator-only: send 'Authorization: Bearer <token>' "
                        "(the token is in HOME/config/operator_token)")
    token = _CALL.set(ctx)
    try:
        kwargs = m.bind(params)
        return await m.handler(**kwargs)
    except RPCError as e:
        return e
    except Exception as e:  # never a traceback to the client
        if ctx.on_internal_error is not None:
            ctx.on_internal_error(name, e)
        return RPCError(INTERNAL_ERROR, "Internal error", f"{type(e).__name__} in {name}")
    finally:
        _CALL.reset(token)


# the context of the call being handled, for parameters that are operator-only
_CALL: contextvars.ContextVar[CallContext] = contextvars.ContextVar("rpc_call")


def require_operator(what: str) -> None:
    """Raise Unauthorized unless the current call carried the operator token."""
    ctx = _CALL.get(None)
    if ctx is None or not ctx.authorized:
        raise RPCError(UNAUTHORIZED, "Unauthorized",
                       f"{what} is operator-only: send 'Authorization: Bearer <token>' "
                       "(the token is in HOME/config/operator_token)")


async def handle_body(registry: Registry, body: bytes, ctx: CallContext,
                      max_batch: int) -> Any | None:
    """Handle a POST body; returns the JSON value to send, or None (notifications only)."""
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        return _response(None, error=RPCError(PARSE_ERROR, "Parse error", str(e)[:200]))
    if isinstance(req, list):
        if not req:
            return _response(None, error=RPCError(INVALID_REQUEST, "Invalid Request",
                                                  "empty batch"))
        if len(req) > max_batch:
            return _response(None, error=RPCError(
                INVALID_REQUEST, "Invalid Request",
                f"batch of {len(req)} requests exceeds the limit of {max_batch}"))
        out = [r for r in [await call_one(registry, x, ctx) for x in req] if r is not None]
        return out or None
    return await call_one(registry, req, ctx)

"""Shared CLI helpers: error exits, RPC client calls, home resolution."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DEFAULT_HOME = Path(os.environ.get("FEDLEDGER_HOME", "~/.fedledger")).expanduser()
DEFAULT_RPC = os.environ.get("FEDLEDGER_RPC", "127.0.0.1:26657")

HomeOpt = typer.Option(DEFAULT_HOME, "--home", help="Node home directory ($FEDLEDGER_HOME).")
RpcOpt = typer.Option(DEFAULT_RPC, "--rpc", help="RPC address host:port ($FEDLEDGER_RPC).")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (no traceback) and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def rpc_url(addr: str) -> str:
    addr = addr.strip()
    if addr.startswith(("http://", "https://")):
        return addr.rstrip("/")
    return f"http://{addr}"


class RPCCallError(Exception):
    def __init__(self, error: dict[str, Any]):
        self.error = error
        data = error.get("data")
        super().__init__(f"{error.get('message')} ({error.get('code')})"
                         + (f": {data}" if data else ""))


def rpc_call(addr: str, method: str, params: dict[str, Any] | None = None,
             timeout: float = 10.0, token: str | None = None) -> Any:
    """One JSON-RPC call; exits with a clear message if the node is unreachable."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    try:
        r = httpx.post(rpc_url(addr) + "/", json=body, timeout=timeout, headers=headers)
    except httpx.HTTPError as e:
        fail(f"cannot reach the node's RPC at {addr}: {e} (is `fedledger node run` running?)")
    try:
        doc = r.json()
    except json.JSONDecodeError:
        fail(f"RPC at {addr} answered HTTP {r.status_code} with a non-JSON body")
    if "error" in doc:
        raise RPCCallError(doc["error"])
    return doc.get("result")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")

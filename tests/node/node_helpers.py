"""Helpers to run in-process nodes and separate node processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from node.config import NodeConfig
from node.daemon import Node
from node.home import Home, init_home

# The installed console script, as an operator runs it; `python -m cli.main` if not installed.
_SCRIPT = Path(sys.executable).parent / "fedledger"
FEDLEDGER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


def loopback_config() -> NodeConfig:
    cfg = NodeConfig()
    cfg.p2p.listen = ["/ip4/127.0.0.1/tcp/0"]
    cfg.rpc.laddr = "127.0.0.1:0"
    cfg.p2p.redial_initial_ms = 100
    cfg.p2p.redial_max_ms = 1000
    return cfg


def make_home(root: Path, moniker: str = "n0") -> Home:
    return init_home(root, moniker, "test-chain", config=loopback_config()).home


@asynccontextmanager
async def running_inprocess_node(nursery: trio.Nursery, home: Home,
                                 cfg: NodeConfig | None = None,
                                 node: Node | None = None) -> AsyncIterator[Node]:
    node = node or Node(home, cfg or home.load_config())
    cancel = trio.CancelScope()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with cancel:
            await node.run(task_status=task_status)

    await nursery.start(run)
    try:
        yield node
    finally:
        cancel.cancel()


def rpc(addr: str, method: str, params: dict[str, Any] | None = None,
        timeout: float = 5.0) -> Any:
    r = httpx.post(f"http://{addr}/", json={"jsonrpc": "2.0", "id": 1, "method": method,
                                           "params": params or {}}, timeout=timeout)
    doc = r.json()
    if "error" in doc:
        raise RuntimeError(f"{method}: {doc['error']}")
    return doc["result"]


def try_rpc(addr: str, method: str, params: dict[str, Any] | None = None) -> Any | None:
    try:
        return rpc(addr, method, params, timeout=2.0)
    except (httpx.HTTPError, RuntimeError, ValueError):
        return None


def wait_for(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    """Poll a condition across processes with a deadline; returns its truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


class NodeProcess:
    """`fedledger node run` as a separate OS process, with its log captured to a file."""

    def __init__(self, home: Path, extra: list[str] | None = None, log_name: str = "node.log",
                 env: dict[str, str] | None = None, command: tuple[str, ...] = ("node", "run")):
        self.home = home
        self.log_path = home / log_name
        self.args = [*FEDLEDGER, *command, "--home", str(home), "--log-format", "json",
                     *(extra or [])]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_rpc(self, addr: str, timeout: float) -> Any:
        """Wait for the node's ``status`` RPC; fails at once if the process exits first, and
        either failure carries the tail of the node's log (CI keeps no other trace of it)."""
        def up() -> Any:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the node exited with {self.proc.returncode} before its "
                                     "RPC came up")
            return try_rpc(addr, "status")
        try:
            return wait_for(up, timeout, f"the node's RPC at {addr}")
        except AssertionError as e:
            raise AssertionError(f"{e}; its log ends:\n{self.log_text()[-3000:]}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

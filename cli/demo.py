"""`fedledger demo`: a local multi-validator testnet as separate processes, watched live."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from cli.common import console


def _fedledger() -> list[str]:
    script = Path(sys.executable).parent / "fedledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def _try(addr: str, method: str) -> Any:
    import httpx

    try:
        r = httpx.post(f"http://{addr}/", json={"jsonrpc": "2.0", "id": 1, "method": method},
                       timeout=2)
        return r.json().get("result")
    except (httpx.HTTPError, ValueError):
        return None


def demo(
    validators: int = typer.Option(4, "--validators", min=1, max=16),
    workdir: Path | None = typer.Option(None, "--workdir", help="Keep homes and logs here."),
    duration: float = typer.Option(20.0, "--duration", help="Seconds to watch before stopping."),
) -> None:
    """Run a local testnet of VALIDATORS node processes on loopback and watch it."""
    from node.home import make_testnet

    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="fedledger-demo-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    from node.ports import free_port_block

    base = free_port_block(2 * validators)
    nodes = make_testnet(workdir / "testnet", validators, base_port=base, force=True,
                         chain_id="fedledger-demo")
    console.print(f"[bold]fedledger demo[/]: {validators} validators in {workdir}")
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for n in nodes:
            log = open(n.home.root / "node.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(subprocess.Popen(
                [*_fedledger(), "node", "run", "--home", str(n.home.root), "--log-format",
                 "json"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        t_end = time.monotonic() + duration
        with Live(console=console, refresh_per_second=4) as live:
            while time.monotonic() < t_end:
                table = Table(title="testnet (Ctrl-C to stop)")
                for col in ("node", "peer id", "height", "peers"):
                    table.add_column(col)
                for n in nodes:
                    st = _try(n.rpc_addr, "status")
                    net = _try(n.rpc_addr, "net_info")
                    table.add_row(
                        n.name, n.peer_id[-10:],
                        st["sync_info"]["latest_block_height"] if st else "-",
                        net["n_peers"] if net else "starting")
                live.update(table)
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=10))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        for log in logs:
            log.close()
        console.print(f"stopped {len(procs)} nodes (exit codes {codes})")
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

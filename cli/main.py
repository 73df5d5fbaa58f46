"""The `fedledger` command: home setup, running a node, status, and the subcommand groups."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli import content, demo, fl_cmd, keys, query, task, tx
from cli.common import HomeOpt, JsonOpt, RPCCallError, RpcOpt, console, fail, print_json, rpc_call
from cli.noderun import BootstrapOpt, ListenOpt, LogFormatOpt, LogLevelOpt, RpcListenOpt, run_node

app = typer.Typer(
    name="fedledger",
    help="Peer-to-peer node for decentralised federated learning on a BFT chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
node_app = typer.Typer(help="Run and manage the node daemon.", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(keys.app, name="keys", help="Account keys in the home's keyring.")
app.add_typer(tx.app, name="tx", help="Sign and broadcast transactions.")
app.add_typer(query.app, name="query", help="Query chain state over RPC.")
app.add_typer(content.app, name="content", help="Content store: add, get, pin, gc.")
app.add_typer(fl_cmd.app, name="fl", help="Federated learning engine (no chain): simulate.")
app.add_typer(task.app, name="task", help="FL tasks on the chain: create, list, status.")
app.add_typer(task.model_app, name="model", help="Committed global models of FL tasks.")
app.command("train")(task.train)
app.command("infer")(task.infer)
app.command("demo")(demo.demo)


@app.command()
def init(
    home: Path = HomeOpt,
    moniker: str = typer.Option("node", help="Human-readable node name."),
    chain_id: str = typer.Option("fedledger-local", "--chain-id", help="Chain id."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing home (deletes keys!)."),
) -> None:
    """Create a node home with fresh keys and a one-validator genesis."""
    from node.home import HomeError, init_home

    try:
        res = init_home(home, moniker, chain_id, force=force)
    except HomeError as e:
        fail(str(e))
    console.print(f"Initialised [bold]{home}[/] for chain [bold]{chain_id}[/]")
    console.print(f"  peer id            {res.peer_id}")
    console.print(f"  validator address  {res.validator_address.hex()}")
    console.print(f"  account ({moniker})  {res.account_address.hex()}")


@app.command()
def testnet(
    validators: int = typer.Option(4, "--validators", "-v", min=1, help="Validator nodes."),
    non_validators: int = typer.Option(0, "--non-validators", min=0, help="Full nodes."),
    output: Path = typer.Option(Path("./testnet"), "--output", "-o", help="Output directory."),
    base_port: int = typer.Option(26656, "--base-port", help="p2p port of node0 (RPC = +1)."),
    chain_id: str = typer.Option("fedledger-testnet", "--chain-id"),
    force: bool = typer.Option(False, "--force", help="Overwrite existing homes."),
    json_out: bool = JsonOpt,
) -> None:
    """Generate N (+M) homes with one shared genesis and each other as bootstrap peers."""
    from node.home import HomeError, make_testnet

    try:
        nodes = make_testnet(output, validators, non_validators, base_port, chain_id, force=force)
    except HomeError as e:
        fail(str(e))
    if json_out:
        print_json([{"name": n.name, "home": str(n.home.root), "peer_id": n.peer_id,
                     "p2p": n.multiaddr, "rpc": n.rpc_addr, "validator": n.validator}
                    for n in nodes])
        return
    t = Table(title=f"testnet {chain_id} in {output}")
    for col in ("node", "validator", "p2p multiaddr", "rpc"):
        t.add_column(col)
    for n in nodes:
        t.add_row(n.name, "yes" if n.validator else "no", n.multiaddr, n.rpc_addr)
    console.print(t)
    console.print(f"Start each with: fedledger node run --home {output}/nodeI")


@node_app.command("run")
def node_run(
    home: Path = HomeOpt,
    bootstrap: list[str] = BootstrapOpt,
    listen: list[str] = ListenOpt,
    rpc: str | None = RpcListenOpt,
    log_format: str | None = LogFormatOpt,
    log_level: str | None = LogLevelOpt,
) -> None:
    """Run the node until SIGINT/SIGTERM."""
    run_node(home, bootstrap, listen, rpc, log_format, log_level)


@node_app.command("start", hidden=True)
def node_start(
    home: Path = HomeOpt,
    bootstrap: list[str] = BootstrapOpt,
    listen: list[str] = ListenOpt,
    rpc: str | None = RpcListenOpt,
    log_format: str | None = LogFormatOpt,
    log_level: str | None = LogLevelOpt,
) -> None:
    """Alias of `node run`."""
    run_node(home, bootstrap, listen, rpc, log_format, log_level)


@app.command()
def status(rpc: str = RpcOpt, json_out: bool = JsonOpt) -> None:
    """Show a running node's status."""
    try:
        st = rpc_call(rpc, "status")
        net = rpc_call(rpc, "net_info")
    except RPCCallError as e:
        fail(str(e))
    if json_out:
        print_json({"status": st, "net_info": net})
        return
    ni, si, vi = st["node_info"], st["sync_info"], st["validator_info"]
    t = Table(show_header=False, title=f"{ni['moniker']} on {ni['network']}")
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("peer id", ni["id"]),
        ("listen", "\n".join(ni["listen_addr"])),
        ("rpc", ni["other"].get("rpc_address", rpc)),
        ("height", si["latest_block_height"]),
        ("block hash", si["latest_block_hash"] or "-"),
        ("app hash", si["latest_app_hash"] or "-"),
        ("block time", si["latest_block_time"] or "-"),
        ("catching up", str(si["catching_up"]).lower()),
        ("validator", f"{vi['address']} (power {vi['voting_power']})"),
        ("peers", f"{net['n_peers']}: " + ", ".join(p["node_info"]["id"][-8:]
                                                   for p in net["peers"])),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@app.command()
def version() -> None:
    """Print the version."""
    from node.rpc.core import VERSION

    console.print(VERSION)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

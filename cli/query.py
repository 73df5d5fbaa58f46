"""`fedledger query account|validators|block`: chain state and blocks over RPC, as tables."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.common import HomeOpt, JsonOpt, RPCCallError, RpcOpt, console, fail, print_json, rpc_call
from cli.keys import resolve_address

app = typer.Typer(no_args_is_help=True)

_MAX_TX_ROWS = 20


def _rpc(rpc: str, method: str, params: dict[str, Any] | None = None) -> Any:
    try:
        return rpc_call(rpc, method, params)
    except RPCCallError as e:
        fail(f"{method}: {e}")


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(show_header=False, title=title)
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    return t


def _app_hash_after(rpc: str, height: int) -> bytes:
    """The app hash of the state after ``height``: in header height+1, or the node's latest."""
    st = _rpc(rpc, "status")["sync_info"]
    if int(st["latest_block_height"]) == height:
        return bytes.fromhex(st["latest_app_hash"])
    nxt = _rpc(rpc, "block", {"height": height + 1})
    return bytes.fromhex(nxt["block"]["header"]["app_hash"])


@app.command("account")
def account(
    address: str = typer.Argument(..., help="Account address (40 hex) or keyring key name."),
    home: Path = HomeOpt,
    rpc: str = RpcOpt,
    prove: bool = typer.Option(False, "--prove", help="Fetch and verify the Merkle proof."),
    json_out: bool = JsonOpt,
) -> None:
    """Balance and nonce of an account (an unknown account has balance 0, nonce 0)."""
    addr = resolve_address(address, home)
    res = _rpc(rpc, "abci_query", {"path": f"/account/{addr.hex()}", "prove": prove})
    resp = res["response"]
    verified = None
    if prove:
        from node.rpc.ledger import verify_query_response

        height = int(resp["height"])
        app_hash = _app_hash_after(rpc, height)
        try:
            ok = verify_query_response(res, app_hash)
        except ValueError as e:
            fail(f"cannot check the proof: {e}")
        if not ok:
            fail(f"the proof does NOT verify against app hash {app_hash.hex().upper()}")
        verified = f"verified against app hash {app_hash.hex().upper()} (after height {height})"
    d = resp["decoded"]
    if json_out:
        print_json({**d, "height": resp["height"], "proof": verified})
        return
    rows = [
        ("address", d["address"].lower()),
        ("balance", d["balance"]),
        ("nonce", d["nonce"]),
        ("height", resp["height"]),
    ]
    if verified:
        rows.append(("proof", verified))
    console.print(_kv_table("account", rows))


@app.command("validators")
def validators(
    height: int | None = typer.Option(None, "--height", min=1, help="Default: the next height."),
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The validator set that signs a height."""
    vals: list[dict[str, Any]] = []
    page, block_height, total = 1, "", 0
    while True:
        params: dict[str, Any] = {"page": page, "per_page": 100}
        if height is not None:
            params["height"] = height
        res = _rpc(rpc, "validators", params)
        vals += res["validators"]
        block_height, total = res["block_height"], int(res["total"])
        if len(vals) >= total or not res["validators"]:
            break
        page += 1
    if json_out:
        print_json({"block_height": block_height, "validators": vals, "total": str(total)})
        return
    power = sum(int(v["voting_power"]) for v in vals)
    t = Table(title=f"validators of height {block_height} ({total}, total power {power})")
    for col in ("address", "pub_key", "power", "share", "proposer priority"):
        t.add_column(col)
    for v in vals:
        p = int(v["voting_power"])
        share = f"{100 * p / power:.1f}%" if power else "-"
        t.add_row(
            v["address"], v["pub_key"]["value"], v["voting_power"], share, v["proposer_priority"]
        )
    console.print(t)


@app.command("block")
def block(
    height: int | None = typer.Argument(None, min=1, help="Block height (default: the latest)."),
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """A block's header, last commit and transactions."""
    res = _rpc(rpc, "block", {} if height is None else {"height": height})
    if json_out:
        print_json(res)
        return
    b = res["block"]
    h, lc, txs = b["header"], b["last_commit"], b["data"]["txs"]
    signed = sum(1 for s in lc["signatures"] if s["block_id_flag"] == 2)
    rows = [
        ("height", h["height"]),
        ("hash", res["block_id"]["hash"]),
        ("chain id", h["chain_id"]),
        ("time", h["time"]),
        ("proposer", h["proposer_address"]),
        ("txs", str(len(txs))),
        ("evidence", str(len(b["evidence"]["evidence"]))),
        (
            "last commit",
            f"{signed} of {len(lc['signatures'])} validators signed height {lc['height']}"
            if lc["signatures"]
            else "none (first block)",
        ),
        ("last block id", h["last_block_id"]["hash"] or "-"),
        ("app hash", h["app_hash"]),
        ("data hash", h["data_hash"]),
        ("validators hash", h["validators_hash"]),
        ("next validators hash", h["next_validators_hash"]),
    ]
    console.print(_kv_table(f"block {h['height']}", rows))
    if txs:
        t = Table(title="transactions")
        t.add_column("#", justify="right")
        t.add_column("tx hash")
        t.add_column("bytes", justify="right")
        for i, raw_b64 in enumerate(txs[:_MAX_TX_ROWS]):
            raw = base64.b64decode(raw_b64)
            t.add_row(str(i), hashlib.sha256(raw).hexdigest().upper(), str(len(raw)))
        console.print(t)
        if len(txs) > _MAX_TX_ROWS:
            console.print(f"... and {len(txs) - _MAX_TX_ROWS} more (use --json)")

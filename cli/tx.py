"""`fedledger tx send|bond|unbond`: sign with a keyring key and broadcast over RPC.

The chain id comes from the node's `status`, the nonce from `abci_query /account/<addr>`
(the committed nonce: while earlier txs of the same key wait in the mempool, pass
`--nonce`). Broadcast waits for the commit by default (`broadcast_tx_commit`);
`--sync` returns after CheckTx, `--async` at once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cli.common import (
    HomeOpt,
    JsonOpt,
    RPCCallError,
    RpcOpt,
    console,
    fail,
    print_json,
    rpc_call,
)
from cli.keys import load_key, resolve_address

if TYPE_CHECKING:
    from ledger.crypto import PrivateKey
    from ledger.tx import Tx, TxBody

app = typer.Typer(no_args_is_help=True)

_FromOpt = typer.Option(..., "--from", help="Name of the keyring key that signs.")
_AmountOpt = typer.Option(..., "--amount", min=1, help="Amount in tokens (a positive integer).")
_AsyncOpt = typer.Option(False, "--async", help="Return at once, without waiting for CheckTx.")
_SyncOpt = typer.Option(False, "--sync", help="Return after CheckTx, without waiting for a block.")
_NonceOpt = typer.Option(
    None, "--nonce", min=0, help="Override the nonce (default: the account's)."
)
_TimeoutOpt = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for the RPC answer.")
_ValidatorOpt = typer.Option(
    ..., "--validator", help="Validator consensus pubkey (base64 or 64 hex) or address (40 hex)."
)


def _code_name(code: int) -> str:
    from ledger.results import Code

    try:
        return Code(code).name
    except ValueError:
        return f"code {code}"


def _rpc(rpc: str, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    try:
        return rpc_call(rpc, method, params, timeout=timeout)
    except RPCCallError as e:
        fail(f"{method}: {e}")


def parse_validator_pubkey(text: str, rpc: str) -> bytes:
    """A validator's 32-byte consensus pubkey from base64, hex, or its address (via RPC)."""
    s = text.strip()
    h = s[2:] if s.lower().startswith("0x") else s
    if len(h) == 64:
        try:
            return bytes.fromhex(h)
        except ValueError:
            pass
    if len(h) == 40:
        try:
            bytes.fromhex(h)
        except ValueError:
            pass
        else:
            q = _rpc(rpc, "abci_query", {"path": f"/validator/{h}"})
            decoded = q["response"].get("decoded")
            if decoded is None:
                fail(f"no validator with address {h} on this chain (bond needs its pubkey)")
            return base64.b64decode(decoded["pub_key"]["value"])
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        fail(
            f"bad validator key {text!r}: expected a 32-byte Ed25519 pubkey as base64 or "
            "64 hex digits, or a 40-hex validator address"
        )
    return raw


def sign_for_node(rpc: str, key: PrivateKey, body: TxBody, nonce: int | None) -> tuple[Tx, int]:
    """``body`` signed by ``key`` for the node's chain (its id from ``status``) with ``nonce``
    (default: the account's committed nonce, from ``abci_query``); the tx and its nonce."""
    from ledger.tx import sign_tx

    chain_id = _rpc(rpc, "status")["node_info"]["network"]
    if nonce is None:
        acct = _rpc(rpc, "abci_query", {"path": f"/account/{key.address.hex()}"})
        nonce = int(acct["response"]["decoded"]["nonce"])
    return sign_tx(key, chain_id, body, nonce), nonce


def sign_and_broadcast(
    home: Path,
    rpc: str,
    from_name: str,
    make_body: Callable[[], TxBody],
    *,
    mode: str,
    nonce: int | None,
    timeout: float,
    json_out: bool,
) -> None:
    """Build, sign and broadcast one tx; print the outcome; exit 1 if it failed."""
    key = load_key(home, from_name)
    try:
        body = make_body()
    except ValueError as e:
        fail(f"invalid transaction: {e}")
    tx, nonce = sign_for_node(rpc, key, body, nonce)
    method = {"async": "broadcast_tx_async", "sync": "broadcast_tx_sync"}.get(
        mode, "broadcast_tx_commit"
    )
    res = _rpc(rpc, method, {"tx": base64.b64encode(tx.encoded).decode()}, timeout=timeout)
    check = res["check_tx"] if mode == "commit" else res
    result = res.get("tx_result") if mode == "commit" else None
    if json_out:
        print_json(res)
    else:
        t = Table(show_header=False, title=f"{type(body).__name__} ({method})")
        t.add_column(style="bold")
        t.add_column()
        t.add_row("tx hash", res["hash"])
        t.add_row("from", f"{from_name} ({key.address.hex()}), nonce {nonce}")
        if mode != "async":
            t.add_row("check_tx", _outcome(check))
        if result is not None:
            t.add_row("height", res["height"])
            t.add_row("result", _outcome(result))
        console.print(t)
    if check["code"] != 0:
        fail(f"CheckTx rejected the tx: {_code_name(check['code'])}: {check['log']}")
    if result is not None and result["code"] != 0:
        fail(
            f"the tx was committed at height {res['height']} but failed: "
            f"{_code_name(result['code'])}: {result['log']}"
        )


def _outcome(r: dict[str, Any]) -> str:
    if r["code"] == 0:
        return "OK"
    return f"{_code_name(r['code'])} ({r['code']}): {r['log']}"


def _mode(async_: bool, sync: bool) -> str:
    if async_ and sync:
        fail("give at most one of --async and --sync", code=2)
    return "async" if async_ else "sync" if sync else "commit"


@app.command("send")
def send(
    from_: str = _FromOpt,
    to: str = typer.Option(..., "--to", help="Recipient address (40 hex) or keyring key name."),
    amount: int = _AmountOpt,
    home: Path = HomeOpt,
    rpc: str = RpcOpt,
    async_: bool = _AsyncOpt,
    sync: bool = _SyncOpt,
    nonce: int | None = _NonceOpt,
    timeout: float = _TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Transfer tokens to another account."""
    from ledger.tx import Transfer

    mode = _mode(async_, sync)
    recipient = resolve_address(to, home)
    sign_and_broadcast(
        home,
        rpc,
        from_,
        lambda: Transfer(recipient, amount),
        mode=mode,
        nonce=nonce,
        timeout=timeout,
        json_out=json_out,
    )


@app.command("bond")
def bond(
    from_: str = _FromOpt,
    validator: str = _ValidatorOpt,
    amount: int = _AmountOpt,
    home: Path = HomeOpt,
    rpc: str = RpcOpt,
    async_: bool = _AsyncOpt,
    sync: bool = _SyncOpt,
    nonce: int | None = _NonceOpt,
    timeout: float = _TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Stake tokens on a validator (a new key becomes a validator operated by you); power
    changes two heights later."""
    from ledger.tx import Bond

    mode = _mode(async_, sync)
    pubkey = parse_validator_pubkey(validator, rpc)
    sign_and_broadcast(
        home,
        rpc,
        from_,
        lambda: Bond(pubkey, amount),
        mode=mode,
        nonce=nonce,
        timeout=timeout,
        json_out=json_out,
    )


@app.command("unbond")
def unbond(
    from_: str = _FromOpt,
    validator: str = _ValidatorOpt,
    amount: int = _AmountOpt,
    home: Path = HomeOpt,
    rpc: str = RpcOpt,
    async_: bool = _AsyncOpt,
    sync: bool = _SyncOpt,
    nonce: int | None = _NonceOpt,
    timeout: float = _TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Withdraw stake from a validator; the tokens return after the unbonding period."""
    from ledger.tx import Unbond

    mode = _mode(async_, sync)
    pubkey = parse_validator_pubkey(validator, rpc)
    sign_and_broadcast(
        home,
        rpc,
        from_,
        lambda: Unbond(pubkey, amount),
        mode=mode,
        nonce=nonce,
        timeout=timeout,
        json_out=json_out,
    )

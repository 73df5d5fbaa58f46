"""`fedledger keys add|list|show`: account keys in the home's keyring (files of mode 0600)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cli.common import HomeOpt, JsonOpt, console, fail, print_json

if TYPE_CHECKING:
    from ledger.crypto import PrivateKey

app = typer.Typer(no_args_is_help=True)


def load_key(home: Path, name: str) -> PrivateKey:
    """The keyring key ``name``; exits with a clear message if it is missing or corrupt."""
    from node.keys import KeyFileError, keyring_path, load_account_key

    try:
        if not keyring_path(home, name).exists():
            fail(f"no key named {name!r} in {home / 'keyring'} (see `fedledger keys list`)")
        return load_account_key(home, name)
    except KeyFileError as e:
        fail(str(e))


def parse_address(text: str, what: str = "address") -> bytes:
    """A 20-byte account address in hex (40 digits, optional 0x); exits otherwise."""
    s = text.strip()
    s = s[2:] if s.lower().startswith("0x") else s
    try:
        raw = bytes.fromhex(s)
    except ValueError:
        raw = b""
    if len(raw) != 20:
        fail(f"bad {what} {text!r}: expected 40 hex digits (20 bytes)")
    return raw


def resolve_address(text: str, home: Path) -> bytes:
    """An address in hex, or the name of a keyring key (its address)."""
    from node.keys import keyring_path

    s = text.strip()
    if len(s.removeprefix("0x")) != 40:
        try:
            if keyring_path(home, s).exists():
                return load_key(home, s).address
        except ValueError:
            pass
    return parse_address(s)


def key_info(name: str, key: PrivateKey) -> dict[str, Any]:
    return {
        "name": name,
        "address": key.address.hex(),
        "pub_key": base64.b64encode(key.public_key).decode(),
        "pub_key_hex": key.public_key.hex(),
    }


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Key name (letters, digits, '.', '_', '-')."),
    home: Path = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Generate a new account key and print its address (never overwrites a key)."""
    from ledger.crypto import PrivateKey
    from node.keys import KeyFileError, save_account_key

    key = PrivateKey.generate()
    try:
        path = save_account_key(home, name, key)
    except KeyFileError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write the key under {home}: {e.strerror or e}")
    info = {**key_info(name, key), "file": str(path)}
    if json_out:
        print_json(info)
        return
    console.print(f"Created key [bold]{name}[/] in {path}")
    console.print(f"  address  {info['address']}")
    console.print(f"  pub_key  {info['pub_key']}")


@app.command("list")
def list_keys(home: Path = HomeOpt, json_out: bool = JsonOpt) -> None:
    """List the keyring's keys and their addresses."""
    from node.keys import list_account_keys

    keys = list_account_keys(home)
    if json_out:
        print_json([{"name": n, "address": a.hex()} for n, a in keys])
        return
    if not keys:
        console.print(f"no keys in {home / 'keyring'} (create one with `fedledger keys add NAME`)")
        return
    t = Table(title=f"keys in {home / 'keyring'}")
    t.add_column("name")
    t.add_column("address")
    for n, a in keys:
        t.add_row(n, a.hex())
    console.print(t)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Key name."),
    home: Path = HomeOpt,
    address: bool = typer.Option(False, "--address", "-a", help="Print only the address."),
    json_out: bool = JsonOpt,
) -> None:
    """Show a key's address and public key (never the private key)."""
    key = load_key(home, name)
    info = key_info(name, key)
    if address:
        typer.echo(info["address"])
        return
    if json_out:
        print_json(info)
        return
    t = Table(show_header=False, title=f"key {name}")
    t.add_column(style="bold")
    t.add_column()
    for k in ("address", "pub_key", "pub_key_hex"):
        t.add_row(k, info[k])
    console.print(t)

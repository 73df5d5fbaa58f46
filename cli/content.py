"""`fedledger content add|get|stat|fetch|pin|unpin|pins|gc|verify`: the node's content store over RPC."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import typer
from rich import box
from rich.table import Table

from cli.common import (
    DEFAULT_HOME,
    JsonOpt,
    RPCCallError,
    RpcOpt,
    console,
    err_console,
    fail,
    print_json,
    rpc_call,
)

app = typer.Typer(no_args_is_help=True)

# Node-side work (hashing a large file, a fetch from peers) can take a while.
_LONG_TIMEOUT_S = 600.0

HomeTokenOpt = typer.Option(
    DEFAULT_HOME, "--home", help="Node home whose config/operator_token to use ($FEDLEDGER_HOME)."
)
TokenOpt = typer.Option(
    None,
    "--token",
    envvar="FEDLEDGER_OPERATOR_TOKEN",
    help="Operator token (default: read from --home).",
)
TimeoutOpt = typer.Option(_LONG_TIMEOUT_S, "--timeout", min=1.0, help="RPC timeout in seconds.")


def _token(home: Path, token: str | None) -> str:
    """The operator token: --token, else HOME/config/operator_token (as `node run` reads it)."""
    if token:
        return token.strip()
    from node.home import Home

    h = Home(home)
    try:
        found = h.operator_token()
    except OSError as e:
        fail(f"cannot read the operator token in {h.operator_token_file}: {e.strerror or e}")
    if not found:
        fail(
            f"this command needs the node's operator token: none at {h.operator_token_file} "
            "(pass --home of the node, or --token)"
        )
    return found


def _explain(method: str, e: RPCCallError) -> str:
    err = e.error
    data = err.get("data")
    detail = data.get("detail") if isinstance(data, dict) else data
    msg = f"{method}: {err.get('message')}"
    if detail:
        msg += f": {detail}"
    if err.get("code") == -32001:
        msg += " (wrong token? it is in HOME/config/operator_token of the node)"
    return msg


def _call(
    rpc: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    timeout: float = 30.0,
) -> Any:
    try:
        return rpc_call(rpc, method, params, timeout=timeout, token=token)
    except RPCCallError as e:
        fail(_explain(method, e))


@contextlib.contextmanager
def _spinner(text: str, quiet: bool) -> Iterator[None]:
    if quiet:
        yield
        return
    with err_console.status(text):
        yield


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit} ({n} B)"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _stat_table(st: dict[str, Any], title: str) -> Table:
    # borderless, so a CID fits one line of an 80-column terminal (copy-paste friendly)
    t = Table(show_header=False, title=title, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    rows = [
        ("cid", st["cid"]),
        ("size", _size(st["size"])),
        ("media type", st.get("media_type") or "-"),
        ("codec", st["codec"]),
        (
            "chunks",
            f"{st['chunks_present']}/{st['chunks']} present"
            + ("" if st["complete"] else " (incomplete: `content fetch` repairs it)"),
        ),
        ("tensors", str(st["tensors"])),
        ("pins", ", ".join(st["pins"]) or "none (collectable by gc)"),
    ]
    if "elapsed_ms" in st:
        rows.append(("fetched", f"{_size(st['fetched_bytes'])} in {st['elapsed_ms']} ms"))
    for k, v in rows:
        t.add_row(k, v)
    return t


@app.command("add")
def add(
    path: Path = typer.Argument(..., help="File to add (read by the node: same machine)."),
    pin: str | None = typer.Option(None, "--pin", help="Pin it with this reason."),
    media_type: str | None = typer.Option(None, "--media-type", help="Default: from the name."),
    rpc: str = RpcOpt,
    home: Path = HomeTokenOpt,
    token: str | None = TokenOpt,
    timeout: float = TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Add a local file to the node's store and print its CID (`.safetensors`: tensor-aligned)."""
    tok = _token(home, token)
    params: dict[str, Any] = {"path": str(path.expanduser().resolve())}
    if pin is not None:
        params["pin"] = pin
    if media_type is not None:
        params["media_type"] = media_type
    with _spinner(f"adding {path} ...", json_out):
        st = _call(rpc, "content_put", params, token=tok, timeout=timeout)
    if json_out:
        print_json(st)
        return
    console.print(_stat_table(st, "added"))


@app.command("stat")
def stat(
    cid: str = typer.Argument(..., help="Content id (bafk... or baga...)."),
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Size, chunks present, pins and media type of stored content."""
    st = _call(rpc, "content_stat", {"cid": cid})
    if json_out:
        print_json(st)
        return
    console.print(_stat_table(st, "content"))


@app.command("get")
def get(
    cid: str = typer.Argument(..., help="Content id."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="File to write (a directory: DIR/CID)."
    ),
    on_node: bool = typer.Option(
        False,
        "--on-node",
        help="Let the node write the file itself (same machine; operator token; no base64).",
    ),
    rpc: str = RpcOpt,
    home: Path = HomeTokenOpt,
    token: str | None = TokenOpt,
    timeout: float = TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Write stored content to a file (streamed in verified chunks over RPC, atomically)."""
    if on_node:
        params = {"cid": cid, "path": str(output.expanduser().resolve())}
        with _spinner(f"writing {cid} ...", json_out):
            res = _call(rpc, "content_get", params, token=_token(home, token), timeout=timeout)
    else:
        res = _stream_to_file(rpc, cid, output.expanduser(), quiet=json_out)
    if json_out:
        print_json(res)
        return
    console.print(f"wrote {_size(res['size'])} to {res['path']}", soft_wrap=True)


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[BinaryIO]:
    """A file that becomes ``dest`` (synced, then renamed over it) when the block completes;
    if the block fails (or exits) ``dest`` is left as it was. I/O errors exit with one line."""
    if not dest.parent.is_dir():
        fail(f"directory {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as e:
        fail(f"cannot write {dest}: {e.strerror or e}")
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _stream_to_file(rpc: str, cid: str, output: Path, quiet: bool) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    first = _call(rpc, "content_read", {"cid": cid})
    dest = output / first["cid"] if output.is_dir() else output
    total = int(first["size"])
    progress = Progress(
        TextColumn("[bold]get"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    )
    written = 0
    with progress, atomic_output(dest) as f:
        task = progress.add_task("get", total=total)
        part = first
        while True:
            if part["offset"] != written:
                fail(f"node answered offset {part['offset']}, expected {written}")
            data = base64.b64decode(part["data"])
            f.write(data)
            written += len(data)
            progress.update(task, completed=written)
            if part["next"] is None:
                break
            part = _call(rpc, "content_read", {"cid": cid, "chunk": part["next"]})
        if written != total:
            fail(f"got {written} bytes, the manifest says {total}")
    return {"cid": first["cid"], "path": str(dest), "size": written}


@app.command("fetch")
def fetch(
    cid: str = typer.Argument(..., help="Content id."),
    pin: str | None = typer.Option(None, "--pin", help="Pin it with this reason once fetched."),
    peer: list[str] = typer.Option([], "--peer", help="Ask only this peer id (repeatable)."),
    fetch_timeout: int | None = typer.Option(
        None, "--fetch-timeout", min=1, help="Seconds (default: storage.fetch_timeout_s)."
    ),
    rpc: str = RpcOpt,
    home: Path = HomeTokenOpt,
    token: str | None = TokenOpt,
    timeout: float = TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Fetch content from the node's peers into its store (parallel, verified chunks)."""
    params: dict[str, Any] = {"cid": cid}
    if pin is not None:
        params["pin"] = pin
    if peer:
        params["peers"] = peer
    if fetch_timeout is not None:
        params["timeout_s"] = fetch_timeout
    with _spinner(f"fetching {cid} from peers ...", json_out):
        st = _call(rpc, "content_fetch", params, token=_token(home, token), timeout=timeout)
    if json_out:
        print_json(st)
        return
    console.print(_stat_table(st, "fetched"))


@app.command("pin")
def pin(
    cid: str = typer.Argument(..., help="Content id (must be in the store)."),
    reason: str = typer.Option(
        ..., "--reason", "-r", help="Why it is kept, e.g. 'own submission'."
    ),
    rpc: str = RpcOpt,
    home: Path = HomeTokenOpt,
    token: str | None = TokenOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Pin content (it and its chunks survive gc and quota eviction)."""
    res = _call(rpc, "pin_add", {"cid": cid, "reason": reason}, token=_token(home, token))
    if json_out:
        print_json(res)
        return
    state = "pinned" if res["added"] else "already pinned"
    console.print(f"{state}: {res['cid']} ({res['reason']})")


@app.command("unpin")
def unpin(
    cid: str = typer.Argument(..., help="Content id."),
    reason: str | None = typer.Option(None, "--reason", "-r", help="Default: every reason."),
    rpc: str = RpcOpt,
    home: Path = HomeTokenOpt,
    token: str | None = TokenOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Remove a pin (one reason, or all); the content stays until gc or eviction."""
    params: dict[str, Any] = {"cid": cid}
    if reason is not None:
        params["reason"] = reason
    res = _call(rpc, "pin_rm", params, token=_token(home, token))
    if json_out:
        print_json(res)
        return
    console.print(f"removed {res['removed']} pin(s) of {res['cid']}")


@app.command("pins")
def pins(
    cid: str | None = typer.Argument(None, help="Only this content id."),
    rpc: str = RpcOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List pins."""
    params = {"cid": cid} if cid is not None else {}
    res = _call(rpc, "pin_ls", params)
    if json_out:
        print_json(res)
        return
    import datetime as dt

    t = Table(title=f"pins ({res['count']})", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("cid", no_wrap=True)
    t.add_column("reason", overflow="fold")
    t.add_column("pinned at (UTC)")
    for p in res["pins"]:
        when = dt.datetime.fromtimestamp(p["pinned_at_ms"] / 1000, tz=dt.UTC)
        t.add_row(p["cid"], p["reason"], when.strftime("%Y-%m-%d %H:%M:%S"))
    console.print(t)


@app.command("gc")
def gc(
    rpc: str = RpcOpt,
    home: Path = HomeTokenOpt,
    token: str | None = TokenOpt,
    timeout: float = TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Delete every unpinned block from the node's store."""
    with _spinner("collecting ...", json_out):
        res = _call(rpc, "content_gc", {}, token=_token(home, token), timeout=timeout)
    if json_out:
        print_json(res)
        return
    t = Table(show_header=False, title="gc")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("blocks removed", str(res["removed_blocks"]))
    t.add_row("freed", _size(res["freed_bytes"]))
    t.add_row("used", _size(res["used_bytes"]))
    t.add_row("quota", _size(res.get("quota_bytes")) if res.get("quota_bytes") else "none")
    console.print(t)


@app.command("verify")
def verify(
    quick: bool = typer.Option(False, "--quick", help="Check metadata only, do not re-hash."),
    rpc: str = RpcOpt,
    home: Path = HomeTokenOpt,
    token: str | None = TokenOpt,
    timeout: float = TimeoutOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Check the store: re-hash every block (corrupt ones are quarantined), find broken pins."""
    with _spinner("verifying ...", json_out):
        res = _call(
            rpc, "content_verify", {"deep": not quick}, token=_token(home, token), timeout=timeout
        )
    if json_out:
        print_json(res)
    else:
        console.print(f"{res['blocks']} blocks: " + ("ok" if res["ok"] else "PROBLEMS"))
        for key in ("corrupt", "incomplete_manifests", "dangling_pins", "meta_errors"):
            for item in res[key]:
                console.print(f"  {key}: {item}")
    if not res["ok"]:
        raise typer.Exit(1)

"""`fedledger content ...` run as separate OS processes against in-process nodes over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.node.node_helpers import FEDLEDGER
from tests.node.test_content_service import CS, blob, content_nodes

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
ENV.pop("FEDLEDGER_OPERATOR_TOKEN", None)


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    import trio

    return await trio.run_process(
        [*FEDLEDGER, "content", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=ENV,
    )


def out(p: subprocess.CompletedProcess[bytes]) -> str:
    return p.stdout.decode()


def err(p: subprocess.CompletedProcess[bytes]) -> str:
    return " ".join(p.stderr.decode().split())  # rich may wrap long messages


def js(p: subprocess.CompletedProcess[bytes]) -> Any:
    assert p.returncode == 0, err(p)
    return json.loads(out(p))


async def test_add_stat_get_pin_unpin_gc(tmp_path: Path) -> None:
    data = blob(5 * 1024 * 1024 + 7, 3)  # over one 4 MiB content_read: the CLI must page
    src = tmp_path / "weights.bin"
    src.write_bytes(data)
    async with content_nodes(tmp_path, 1) as (n,):
        rpc = ["--rpc", n.node.rpc_laddr]
        op = [*rpc, "--home", str(n.node.home.root)]

        added = js(await cli("add", str(src), "--pin", "own submission", *op, "--json"))
        cid = added["cid"]
        assert added["size"] == len(data) and added["pins"] == ["own submission"]
        assert added["chunks"] == -(-len(data) // CS)

        p = await cli("stat", cid, *rpc)
        assert p.returncode == 0 and cid in out(p) and "own submission" in out(p)
        assert f"{added['chunks']}/{added['chunks']} present" in out(p)

        # Streamed through content_read (no token needed) into a file, and by the node itself.
        dest = tmp_path / "copy.bin"
        got = js(await cli("get", cid, "--output", str(dest), *rpc, "--json"))
        assert got == {"cid": cid, "path": str(dest), "size": len(data)}
        assert dest.read_bytes() == data
        outdir = tmp_path / "outdir"
        outdir.mkdir()
        p = await cli("get", cid, "-o", str(outdir), "--on-node", *op)
        assert p.returncode == 0, err(p)
        assert (outdir / cid).read_bytes() == data

        p = await cli("pin", cid, "--reason", "global model of task 1 round 2", *op)
        assert p.returncode == 0 and "pinned" in out(p)
        p = await cli("pins", *rpc)
        assert p.returncode == 0 and "pins (2)" in out(p) and out(p).count(cid) == 2
        assert "own submission" in out(p) and "global model of task 1 round 2" in out(p)

        assert js(await cli("gc", *op, "--json"))["removed_blocks"] == 0  # still pinned
        assert js(await cli("unpin", cid, "--reason", "own submission", *op, "--json")) == {
            "cid": cid,
            "removed": 1,
        }
        assert js(await cli("unpin", cid, *op, "--json"))["removed"] == 1
        p = await cli("gc", *op)
        assert p.returncode == 0 and "blocks removed" in out(p)
        assert n.content.store.used_bytes == 0

        p = await cli("stat", cid, *rpc)
        assert p.returncode == 1 and "Content not found" in err(p) and cid in err(p)
        p = await cli("unpin", cid, *op)
        assert p.returncode == 1 and "not pinned" in err(p)


async def test_clear_errors_for_token_cids_and_paths(tmp_path: Path) -> None:
    async with content_nodes(tmp_path, 1) as (n,):
        rpc = ["--rpc", n.node.rpc_laddr]
        p = await cli("add", str(tmp_path), *rpc, "--home", str(tmp_path / "not-a-home"))
        assert p.returncode == 1 and "operator token" in err(p)
        p = await cli("gc", *rpc, "--token", "wrong")
        assert p.returncode == 1 and "Unauthorized" in err(p) and "operator_token" in err(p)
        p = await cli("add", str(tmp_path / "missing.bin"), *rpc, "--home", str(n.node.home.root))
        assert p.returncode == 1 and "Bad path" in err(p) and "missing.bin" in err(p)
        p = await cli("get", "bafy-not-a-cid", "-o", str(tmp_path / "x"), *rpc)
        assert p.returncode == 1 and "Invalid CID" in err(p) and not (tmp_path / "x").exists()
        p = await cli("stat", "bafkqaaa", "--rpc", "127.0.0.1:9")
        assert p.returncode == 1 and "cannot reach" in err(p)
        assert n.node.ready.is_set() and (await n.call("health")) == {}

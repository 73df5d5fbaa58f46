"""Benchmark: content exchange MB/s vs a bare py-libp2p stream and raw trio TCP; store vs raw plyvel.

Usage::

    python benchmarks/exchange.py [--mb 50] [--repeat 3] [--chunk-kib 1024] [--concurrency 4]

Every server runs in its own OS process (the client in this one), all on
127.0.0.1, so the figures are two-process figures like LIBP2P_NOTES.md's.
Rows (same bytes, same run):

* raw trio TCP             one socket, 1 MiB writes
* bare libp2p stream       Noise + yamux, one stream, 1 MiB writes, no framing, no hashing
* exchange, 1 peer         ``Exchange.fetch`` of a manifest: framing, SHA-256, LevelDB writes
* exchange, 3 peers        the same object served by three processes in parallel
* store put / get          ``ContentStore.put_bytes`` / ``get_bytes`` (hash-verified)
* raw plyvel put / get     the same 1 MiB values straight into LevelDB
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE_PROTOCOL = "/fedledger/bench-bare/1.0.0"
SEED = 1234


def payload(n: int) -> bytes:
    return random.Random(SEED).randbytes(n)


def new_host() -> Any:
    from libp2p import new_host as _new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.config import ConnectionConfig

    return _new_host(
        key_pair=create_new_key_pair(),
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


# ---------------------------------------------------------------- server processes


async def serve(mode: str, size: int, chunk_size: int, home: str) -> None:
    from libp2p.custom_types import TProtocol
    from multiaddr import Multiaddr

    data = payload(size)
    if mode == "tcp":

        async def tcp_handler(stream: trio.SocketStream) -> None:
            view = memoryview(data)
            for i in range(0, size, 1 << 20):
                await stream.send_all(view[i : i + (1 << 20)])
            await stream.aclose()

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await trio.serve_listeners(tcp_handler, listeners)
        return

    host = new_host()
    info: dict[str, Any] = {}
    if mode == "bare":

        async def bare_handler(stream: Any) -> None:
            for i in range(0, size, 1 << 20):
                await stream.write(data[i : i + (1 << 20)])
            await stream.close()

        host.set_stream_handler(TProtocol(BARE_PROTOCOL), bare_handler)
    else:
        from storage.exchange import Exchange
        from storage.store import ContentStore

        store = ContentStore(home, chunk_size=chunk_size)
        info["cid"] = str(store.put_bytes(data, pin="bench"))
        Exchange(host, store).start()
    async with host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info["addr"] = str(host.get_addrs()[0])
        print(json.dumps(info), flush=True)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await host.close()


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Servers:
    """Start server processes and read the one JSON line each prints."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.dirs: list[str] = []

    def start(self, mode: str, size: int, chunk_size: int) -> dict[str, Any]:
        home = tempfile.mkdtemp(prefix="fedledger-bench-")
        self.dirs.append(home)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode, "--bytes", str(size),
             "--chunk-kib", str(chunk_size // 1024), "--home", home],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "LIBP2P_DEBUG": ""},
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{mode} server died")
        info: dict[str, Any] = json.loads(line)
        info["pid"] = proc.pid
        return info

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- client measurements


async def time_tcp(port: int, size: int) -> float:
    t = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    got = 0
    while got < size:
        d = await stream.receive_some(1 << 20)
        if not d:
            break
        got += len(d)
    await stream.aclose()
    assert got == size, got
    return time.perf_counter() - t


async def time_bare(host: Any, addr: str, size: int) -> float:
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    info = info_from_p2p_addr(Multiaddr(addr))
    await host.connect(info)
    t = time.perf_counter()
    stream = await host.new_stream(info.peer_id, [TProtocol(BARE_PROTOCOL)])
    got = 0
    while got < size:
        try:
            d = await stream.read(1 << 20)
        except Exception:
            break
        if not d:
            break
        got += len(d)
    assert got == size, got
    await stream.close()
    return time.perf_counter() - t


async def time_fetch(host: Any, addrs: list[str], cid: str, chunk_size: int, conc: int) -> float:
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from storage.exchange import Exchange, FetchLimits
    from storage.store import ContentStore

    home = tempfile.mkdtemp(prefix="fedledger-bench-client-")
    try:
        store = ContentStore(home, chunk_size=chunk_size)
        ex = Exchange(host, store, fetch_limits=FetchLimits(per_peer_concurrency=conc))
        peers = []
        for a in addrs:
            info = info_from_p2p_addr(Multiaddr(a))
            await host.connect(info)
            peers.append(info.peer_id)
        t = time.perf_counter()
        await ex.fetch(cid, peers=peers)
        dt = time.perf_counter() - t
        assert store.has(cid)
        store.close()
        return dt
    finally:
        shutil.rmtree(home, ignore_errors=True)


def time_store(size: int, chunk_size: int) -> dict[str, float]:
    import plyvel

    from storage.store import ContentStore

    data = payload(size)
    out: dict[str, float] = {}
    home = tempfile.mkdtemp(prefix="fedledger-bench-store-")
    try:
        store = ContentStore(Path(home) / "cs", chunk_size=chunk_size)
        t = time.perf_counter()
        cid = store.put_bytes(data)
        out["store put"] = time.perf_counter() - t
        t = time.perf_counter()
        assert len(store.get_bytes(cid)) == size
        out["store get"] = time.perf_counter() - t
        store.close()
        db = plyvel.DB(str(Path(home) / "raw"), create_if_missing=True, compression=None,
                       write_buffer_size=32 * 1024 * 1024)  # fmt: skip
        keys = [i.to_bytes(8, "big") for i in range(0, size, chunk_size)]
        t = time.perf_counter()
        for k in keys:
            i = int.from_bytes(k, "big")
            db.put(k, data[i : i + chunk_size])
        db.put(b"end", b"", sync=True)
        out["raw plyvel put"] = time.perf_counter() - t
        t = time.perf_counter()
        got = b"".join(db.get(k) for k in keys)
        out["raw plyvel get"] = time.perf_counter() - t
        assert len(got) == size
        db.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


async def client(args: argparse.Namespace) -> None:
    size = args.mb * 1_000_000
    chunk = args.chunk_kib * 1024
    from multiaddr import Multiaddr

    servers = Servers()
    results: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}  # label -> (client, servers) CPU seconds
    try:
        tcp = servers.start("tcp", size, chunk)
        bare = servers.start("bare", size, chunk)
        ex = [servers.start("exchange", size, chunk) for _ in range(3)]
        cid = ex[0]["cid"]
        assert all(e["cid"] == cid for e in ex)
        for _ in range(args.repeat):
            c0, s0 = time.process_time(), proc_cpu(tcp["pid"])
            results.setdefault("raw trio TCP", []).append(await time_tcp(tcp["port"], size))
            cpu.setdefault("raw trio TCP", []).append(
                (time.process_time() - c0, proc_cpu(tcp["pid"]) - s0)
            )
            for label, srv in (
                ("bare libp2p stream", [bare]),
                ("exchange, 1 peer", ex[:1]),
                ("exchange, 3 peers", ex),
            ):
                host = new_host()  # fresh client host per run: no warm connections
                async with host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                    try:
                        c0 = time.process_time()
                        s0 = sum(proc_cpu(s["pid"]) for s in srv)
                        if label.startswith("bare"):
                            dt = await time_bare(host, bare["addr"], size)
                        else:
                            addrs = [s["addr"] for s in srv]
                            dt = await time_fetch(host, addrs, cid, chunk, args.concurrency)
                        used = (
                            time.process_time() - c0,
                            sum(proc_cpu(s["pid"]) for s in srv) - s0,
                        )
                    finally:
                        with trio.CancelScope(shield=True):
                            await host.close()
                results.setdefault(label, []).append(dt)
                cpu.setdefault(label, []).append(used)
            for k, v in time_store(size, chunk).items():
                results.setdefault(k, []).append(v)
    finally:
        servers.stop()
    report(results, cpu, size, args)


def dedup_table() -> None:
    """Bytes a new model version shares with the previous one, tensor-aligned vs plain chunking."""
    import torch

    from storage.store import ContentStore
    from storage.tensors import put_state_dict, shared_bytes, state_dict_to_safetensors

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256),
        torch.nn.ReLU(), torch.nn.Linear(256, 10),
    )  # fmt: skip
    base = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    lm = {
        "embed.weight": torch.randn(8000, 256),
        **{f"layer{i}.w": torch.randn(256, 256) for i in range(4)},
        **{f"layer{i}.b": torch.randn(256) for i in range(4)},
        "head.weight": torch.randn(10, 256),
    }

    def bump(sd: dict[str, Any], names: list[str]) -> dict[str, Any]:
        return {k: (v + 1 if k in names else v.clone()) for k, v in sd.items()}

    cases = [
        ("MLP 784-512-256-10, head fine-tuned", base, bump(base, ["4.weight", "4.bias"])),
        ("MLP, every tensor changed (an FL round)", base, bump(base, list(base))),
        ("MLP, resubmitted unchanged (free rider)", base, bump(base, [])),
        ("embedding model, frozen embedding", lm, bump(lm, [k for k in lm if k != "embed.weight"])),
        ("embedding model, vocabulary grown", lm, {**lm, "embed.weight": torch.randn(8100, 256)}),
    ]
    print("\n| new version | size | shared, tensor-aligned | shared, plain 1 MiB chunks |")
    print("| --- | ---: | ---: | ---: |")
    for label, old, new in cases:
        home = tempfile.mkdtemp(prefix="fedledger-bench-dedup-")
        try:
            with ContentStore(home) as s:
                a, b = put_state_dict(s, old), put_state_dict(s, new)
                shared, total = shared_bytes(s, a, b)
                # plain fixed-size chunking of the same safetensors bytes, for comparison
                pa = s.put_bytes(state_dict_to_safetensors(old))
                pb = s.put_bytes(state_dict_to_safetensors(new))
                plain, _ = shared_bytes(s, pa, pb)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        print(f"| {label} | {total / 1e6:.1f} MB | {shared / total:.1%} | {plain / total:.1%} |")


def report(
    results: dict[str, list[float]],
    cpu: dict[str, list[tuple[float, float]]],
    size: int,
    args: argparse.Namespace,
) -> None:
    mbps = {k: size / statistics.median(v) / 1e6 for k, v in results.items()}
    best = {k: size / min(v) / 1e6 for k, v in results.items()}
    base = mbps["bare libp2p stream"]
    tcp = mbps["raw trio TCP"]
    print(f"\n{args.mb} MB object, chunk {args.chunk_kib} KiB, {args.concurrency} streams/peer, "
          f"median of {args.repeat} (best in brackets), {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| what | MB/s | vs bare libp2p | vs raw TCP | CPU s client | CPU s server(s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k in results:
        if k.startswith(("store", "raw plyvel")):
            continue
        c = statistics.median(x for x, _ in cpu[k])
        s = statistics.median(y for _, y in cpu[k])
        print(
            f"| {k} | {mbps[k]:.1f} ({best[k]:.1f}) | {mbps[k] / base:.0%} "
            f"| {mbps[k] / tcp:.1%} | {c:.2f} | {s:.2f} |"
        )
    print("\n| store op | MB/s | raw plyvel MB/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for op in ("put", "get"):
        s, r = mbps[f"store {op}"], mbps[f"raw plyvel {op}"]
        print(f"| {op} | {s:.0f} | {r:.0f} | {s / r:.0%} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mb", type=int, default=50, help="object size in MB (10^6 bytes)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chunk-kib", type=int, default=1024)
    p.add_argument("--concurrency", type=int, default=4, help="streams per peer")
    p.add_argument("--dedup-only", action="store_true", help="only the dedup table")
    p.add_argument("--serve", choices=["tcp", "bare", "exchange"], help=argparse.SUPPRESS)
    p.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    p.add_argument("--home", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        trio.run(serve, args.serve, args.bytes, args.chunk_kib * 1024, args.home)
    elif args.dedup_only:
        dedup_table()
    else:
        trio.run(client, args)
        dedup_table()


if __name__ == "__main__":
    main()

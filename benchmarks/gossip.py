"""Gossip latency and throughput among 4 nodes on loopback, next to raw trio TCP.

Measures what bounds consensus speed: the one-way latency of one gossip
message (p50/p99 over all receivers) and sustained lossless messages/s, for
200 B, 100 KB and 1 MB payloads. The baseline in the same run is raw trio TCP
sockets moving the same bytes over a full mesh (length-prefixed frames, the
sender writes to each peer directly: the floor any gossip layer can reach).
Variants show what limits py-libp2p: message signing and the muxer.

    python -m benchmarks.gossip            # full table (a few minutes)
    python -m benchmarks.gossip --quick    # fewer samples
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from node.config import P2PConfig
from node.keys import NodeKey
from node.p2p import P2PNode, Validation

SIZES = {"200 B": 200, "100 KB": 100_000, "1 MB": 1_000_000}
N_NODES = 4
CHAIN = "bench"


@dataclass
class Result:
    transport: str
    size: str
    p50_ms: float
    p99_ms: float
    msgs_per_s: float
    lost: int


def pct(xs: list[float], q: float) -> float:
    if not xs:  # every sample was lost
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Receivers:
    """Arrival bookkeeping shared by all receivers (one process, one clock)."""

    def __init__(self) -> None:
        self.arrivals: dict[int, list[int]] = {}
        self.changed = trio.Event()

    def arrive(self, seq: int) -> None:
        self.arrivals.setdefault(seq, []).append(time.perf_counter_ns())
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not pred():
                await self.changed.wait()
            return True
        return False


def frame(seq: int, size: int) -> bytes:
    head = struct.pack(">QQ", seq, time.perf_counter_ns())
    return head + b"\x00" * max(0, size - len(head))


async def measure(send: Callable[[bytes], Any], rx: Receivers, size: int, samples: int,
                  burst: int, receivers: int) -> tuple[list[float], float, int]:
    # latency: one message at a time, wait for every receiver
    lat: list[float] = []
    for i in range(samples):
        msg = frame(i, size)
        t0 = struct.unpack(">QQ", msg[:16])[1]
        await send(msg)
        ok = await rx.wait(lambda i=i: len(rx.arrivals.get(i, [])) >= receivers, 10)
        if ok:
            lat += [(t - t0) / 1e6 for t in rx.arrivals[i]]
    # throughput: a burst as fast as the sender can go, until every receiver has all
    base = 1_000_000
    t0 = time.perf_counter()
    for j in range(burst):
        await send(frame(base + j, size))

    def all_in() -> bool:
        return all(len(rx.arrivals.get(base + j, [])) >= receivers for j in range(burst))

    await rx.wait(all_in, 60)
    elapsed = time.perf_counter() - t0
    got = sum(min(receivers, len(rx.arrivals.get(base + j, []))) for j in range(burst))
    lost = burst * receivers - got
    return lat, burst / elapsed, lost


# ---------------------------------------------------------------- py-libp2p gossip


async def bench_libp2p(label: str, size: int, samples: int, burst: int,
                       **cfg_kw: Any) -> Result:
    rx = Receivers()

    def validator(origin: str, data: bytes) -> Validation:
        return Validation.accept(data)

    async def handler(origin: str, data: bytes) -> None:
        rx.arrive(struct.unpack(">Q", data[:8])[0])

    log = structlog.get_logger("bench")
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        nodes: list[P2PNode] = []
        for _ in range(N_NODES):
            cfg = P2PConfig(listen=["/ip4/127.0.0.1/tcp/0"],
                            bootstrap=[n.listen_multiaddrs()[0] for n in nodes],
                            max_gossip_bytes=1_040_000, **cfg_kw)
            node = P2PNode(NodeKey.generate(), cfg, CHAIN, log)
            node.add_topic("bench", validator, handler)
            cancel = trio.CancelScope()

            async def run(node: P2PNode = node, cancel: trio.CancelScope = cancel,
                          task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with cancel:
                    await node.run(task_status=task_status)

            await nursery.start(run)
            stack.callback(cancel.cancel)
            nodes.append(node)
        # The last node bootstrapped to every other one, so they are all its gossipsub direct
        # peers (p2p.direct_bootstrap), as every validator's peers are in a testnet. The
        # first node has no direct peers and the others ignore its GRAFTs (it is their direct
        # peer), so from there messages reached only some receivers.
        src = nodes[-1]
        from libp2p.peer.id import ID

        with trio.fail_after(20):
            for other in nodes[:-1]:
                await src.pubsub.wait_for_subscription(ID.from_base58(other.peer_id),
                                                       src.topic_name("bench"), timeout=20)
        await trio.sleep(1.0)  # let meshes settle (heartbeat 1 s)

        async def send(msg: bytes) -> None:
            await src.publish("bench", msg)

        lat, rate, lost = await measure(send, rx, size, samples, burst, N_NODES - 1)
        nursery.cancel_scope.cancel()
    return Result(label, "", pct(lat, 0.5), pct(lat, 0.99), rate, lost)


# ---------------------------------------------------------------- raw trio TCP


async def bench_tcp(size: int, samples: int, burst: int) -> Result:
    rx = Receivers()

    async def serve(stream: trio.SocketStream) -> None:
        buf = bytearray()
        while True:
            data = await stream.receive_some(1 << 20)
            if not data:
                return
            buf += data
            while len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + n:
                    break
                rx.arrive(struct.unpack(">Q", bytes(buf[4:12]))[0])
                del buf[: 4 + n]

    async with trio.open_nursery() as nursery:
        ports = []
        for _ in range(N_NODES - 1):
            listeners = await nursery.start(trio.serve_tcp, serve, 0, )
            ports.append(listeners[0].socket.getsockname()[1])
        conns = [await trio.open_tcp_stream("127.0.0.1", p) for p in ports]

        async def send(msg: bytes) -> None:
            data = struct.pack(">I", len(msg)) + msg
            for c in conns:
                await c.send_all(data)

        lat, rate, lost = await measure(send, rx, size, samples, burst, N_NODES - 1)
        for c in conns:
            await c.aclose()
        nursery.cancel_scope.cancel()
    return Result("raw trio TCP", "", pct(lat, 0.5), pct(lat, 0.99), rate, lost)


def plan(size: int, quick: bool) -> tuple[int, int]:
    samples = {200: 200, 100_000: 60, 1_000_000: 20}[size]
    burst = {200: 300, 100_000: 60, 1_000_000: 15}[size]
    if quick:
        samples, burst = max(10, samples // 5), max(5, burst // 5)
    return samples, burst


async def main(quick: bool, variants: bool) -> list[Result]:
    results: list[Result] = []
    for label, size in SIZES.items():
        samples, burst = plan(size, quick)
        runs = [("libp2p gossip (product: yamux, signed)", {})]
        if variants:
            runs += [("libp2p gossip, unsigned", {"sign_messages": False}),
                     ("libp2p gossip, mplex", {"muxer": "mplex"})]
        for name, kw in runs:
            r = await bench_libp2p(name, size, samples, burst, **kw)
            r.size = label
            results.append(r)
            print(fmt_row(r), flush=True)
        r = await bench_tcp(size, samples, burst)
        r.size = label
        results.append(r)
        print(fmt_row(r), flush=True)
    return results


HEADER = (f"| {'transport':<40} | {'size':>6} | {'p50 ms':>8} | {'p99 ms':>8} | "
          f"{'msgs/s':>8} | {'lost':>4} |")


def fmt_row(r: Result) -> str:
    return (f"| {r.transport:<40} | {r.size:>6} | {r.p50_ms:8.2f} | {r.p99_ms:8.2f} | "
            f"{r.msgs_per_s:8.1f} | {r.lost:>4} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument("--no-variants", action="store_true", help="product settings only")
    args = ap.parse_args()
    from node.logs import setup_logging

    setup_logging("warning", "console")
    print("4 nodes, one process, loopback; latency = one-way, p50/p99 over all receivers")
    print(HEADER)
    print("|" + "|".join("-" * (len(c)) for c in HEADER.split("|")[1:-1]) + "|")
    trio.run(main, args.quick, not args.no_variants)

"""Finding free loopback ports for local testnets (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# IANA's dynamic range: macOS and Windows hand out client ports from here
_DEFAULT_EPHEMERAL = (49152, 65535)


def ephemeral_range(path: Path = _RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (inclusive)."""
    try:
        lo, hi = (int(x) for x in path.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


def port_window(n: int, start: int, end: int, ephemeral: tuple[int, int]) -> tuple[int, int]:
    """The part of [start, end) left of the ephemeral range, if a block of n fits there.

    A listen port inside the ephemeral range can be taken between our check and the
    node's bind by any outgoing connection on the machine, and a node that restarts
    can find its own port held by a peer's re-dial: the bind then fails with
    EADDRINUSE (SO_REUSEADDR does not help against a connected socket).
    """
    lo = ephemeral[0]
    if lo - start >= 4 * n:
        return start, min(end, lo)
    if end - (ephemeral[1] + 1) >= 4 * n:  # ephemeral range starts low: use what is above
        return max(start, ephemeral[1] + 1), end
    return start, end


def free_port_block(n: int, start: int = 10000, end: int = 60000) -> int:
    """A base port such that base .. base+n-1 are all free on 127.0.0.1 right now.

    Chosen outside the kernel's ephemeral range where one fits (see `port_window`).
    """
    start, end = port_window(n, start, end, ephemeral_range())
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(start, end - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports on 127.0.0.1")

"""Finding free loopback ports for local testnets (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import random
import socket
import time


def free_port_block(n: int, start: int = 20000, end: int = 60000) -> int:
    """A base port such that base .. base+n-1 are all free on 127.0.0.1 right now."""
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

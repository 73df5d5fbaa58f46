"""Local testnet ports stay out of the kernel's range for outgoing connections."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from node.ports import ephemeral_range, free_port_block, port_window


def test_reads_the_kernel_range_and_falls_back_on_a_bad_file(tmp_path: Path) -> None:
    good = tmp_path / "range"
    good.write_text("32768\t60999\n")
    bad = tmp_path / "bad"
    bad.write_text("garbage")

    assert ephemeral_range(good) == (32768, 60999)
    assert ephemeral_range(bad) == (49152, 65535)
    assert ephemeral_range(tmp_path / "missing") == (49152, 65535)


@pytest.mark.parametrize(("ephemeral", "window"), [
    ((32768, 60999), (10000, 32768)),  # Linux default: below it
    ((49152, 65535), (10000, 49152)),  # macOS / IANA
    ((1024, 20000), (20001, 60000)),   # a range that starts low: above it
    ((1024, 65535), (10000, 60000)),   # no room outside: the whole window, as before
])
def test_window_avoids_the_ephemeral_range(ephemeral: tuple[int, int],
                                           window: tuple[int, int]) -> None:
    assert port_window(8, 10000, 60000, ephemeral) == window


def test_block_is_free_and_outside_the_ephemeral_range() -> None:
    lo, hi = ephemeral_range()
    start, end = port_window(4, 10000, 60000, (lo, hi))

    base = free_port_block(4)

    assert start <= base and base + 4 <= end
    for p in range(base, base + 4):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))

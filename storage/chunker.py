"""Fixed-size chunking with forced cut points (tensor boundaries) over a stream of bytes.

A chunk ends at the next multiple of ``chunk_size`` counted from the last cut,
or at the next forced cut, whichever comes first. With no cuts this is plain
fixed-size chunking; with cuts at tensor starts/ends an unchanged tensor always
yields the same chunks whatever moved in front of it (ADR 0302).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_BLOCK_SIZE", "MIN_CHUNK_SIZE", "boundaries", "rechunk"]

DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 1024
MAX_BLOCK_SIZE = 4 * 1024 * 1024  # protocol limit for any single block (chunk or manifest)
_READ_SIZE = 1024 * 1024


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool):
        raise TypeError("chunk_size must be an int")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"chunk_size must be in [{MIN_CHUNK_SIZE}, {MAX_BLOCK_SIZE}]")
    return chunk_size


def _normal_cuts(cuts: Iterable[int]) -> list[int]:
    given = list(cuts)
    if any(not isinstance(c, int) or isinstance(c, bool) for c in given):
        raise TypeError("cut offsets must be ints")
    return sorted({c for c in given if c > 0})


def boundaries(total: int, chunk_size: int, cuts: Iterable[int] = ()) -> list[tuple[int, int]]:
    """The ``(start, end)`` of every chunk of a ``total``-byte object."""
    check_chunk_size(chunk_size)
    cut_list = [c for c in _normal_cuts(cuts) if c < total]
    out: list[tuple[int, int]] = []
    start = 0
    while start < total:
        i = bisect.bisect_right(cut_list, start)
        limit = cut_list[i] if i < len(cut_list) else total
        end = min(start + chunk_size, limit)
        out.append((start, end))
        start = end
    return out


def _pieces(source: Iterable[bytes] | BinaryIO | bytes) -> Iterator[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
        return
    read = getattr(source, "read", None)
    if read is not None:
        while True:
            piece = read(_READ_SIZE)
            if not piece:
                return
            yield piece
        return
    yield from source  # type: ignore[misc]


def rechunk(
    source: Iterable[bytes] | BinaryIO | bytes,
    chunk_size: int,
    cuts: Sequence[int] = (),
) -> Iterator[bytes]:
    """Re-cut arbitrary byte pieces into chunks at the boundaries :func:`boundaries` defines.

    Memory stays at about one chunk plus one input piece whatever the source size.
    """
    check_chunk_size(chunk_size)
    cut_list = _normal_cuts(cuts)
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for s, e in boundaries(len(view), chunk_size, cut_list):
            yield bytes(view[s:e])
        return
    parts: list[bytes] = []
    have = 0
    start = 0  # absolute offset of the first buffered byte

    def next_len() -> int:
        i = bisect.bisect_right(cut_list, start)
        limit = cut_list[i] if i < len(cut_list) else start + chunk_size
        return min(start + chunk_size, limit) - start

    for piece in _pieces(source):
        if not piece:
            continue
        parts.append(bytes(piece))
        have += len(piece)
        need = next_len()
        if have < need:
            continue
        blob = b"".join(parts) if len(parts) > 1 else parts[0]
        pos = 0
        while have - pos >= need:
            yield blob[pos : pos + need]
            pos += need
            start += need
            need = next_len()
        parts = [blob[pos:]] if pos < have else []
        have -= pos
    blob = b"".join(parts)
    pos = 0
    while pos < len(blob):  # tail: still honour cuts that fall inside it
        n = min(next_len(), len(blob) - pos)
        yield blob[pos : pos + n]
        pos += n
        start += n

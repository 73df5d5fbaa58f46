"""Chunk boundaries: coverage, size bound, forced cuts, and streaming equivalence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.chunker import MAX_BLOCK_SIZE, MIN_CHUNK_SIZE, boundaries, rechunk

sizes = st.sampled_from([1024, 1500, 4096])


@given(st.integers(0, 50_000), sizes, st.lists(st.integers(-5, 60_000), max_size=8))
def test_boundaries_tile_the_object_and_honour_cuts(total: int, size: int, cuts: list[int]) -> None:
    spans = boundaries(total, size, cuts)
    assert [s for s, _ in spans] == ([0] if spans else []) + [e for _, e in spans[:-1]]
    assert (spans[-1][1] if spans else 0) == total
    assert all(0 < e - s <= size for s, e in spans)
    ends = {e for _, e in spans}
    assert all(c in ends for c in cuts if 0 < c < total)  # every cut is a chunk edge


@given(st.binary(max_size=20_000), sizes, st.lists(st.integers(1, 20_000), max_size=6), st.data())
def test_rechunk_of_any_piece_split_equals_boundaries(
    data: bytes, size: int, cuts: list[int], draw: st.DataObject
) -> None:
    expected = [data[s:e] for s, e in boundaries(len(data), size, cuts)]
    assert list(rechunk(data, size, cuts)) == expected
    splits = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=10)))
    pieces = [data[a:b] for a, b in zip([0, *splits], [*splits, len(data)], strict=True)]
    assert list(rechunk(iter(pieces), size, cuts)) == expected


def test_no_cuts_is_plain_fixed_size() -> None:
    assert boundaries(2500, 1024) == [(0, 1024), (1024, 2048), (2048, 2500)]


def test_cut_restarts_the_fixed_grid() -> None:
    # a cut at 100 shifts every later chunk edge: tensors start on a chunk edge
    assert boundaries(2200, 1024, [100]) == [(0, 100), (100, 1124), (1124, 2148), (2148, 2200)]


@pytest.mark.parametrize("bad", [MIN_CHUNK_SIZE - 1, MAX_BLOCK_SIZE + 1, 0, -5])
def test_chunk_size_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        boundaries(10, bad)


def test_non_int_cuts_rejected() -> None:
    with pytest.raises(TypeError):
        boundaries(10, 1024, [1.5])  # type: ignore[list-item]

"""Slot packing (BatchCrypt-style lanes with headroom): exact sums, range checks, fitted layouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl.privacy import EXACT, LAYOUTS, Layout, PackingError
from fl.privacy.packing import from_grid, pack, to_grid, unpack
from ledger.codec import decode_record, encode


@st.composite
def packed_sums(draw: st.DrawFn) -> tuple[Layout, list[np.ndarray], list[int]]:
    lanes = draw(st.integers(1, 4))
    lane_bits = draw(st.integers(6, 36 // lanes))
    max_weight = draw(st.sampled_from([1, 2, 5, 16, 32]).filter(lambda w: w < 1 << (lane_bits - 2)))
    layout = Layout(draw(st.integers(0, 24)), lanes, lane_bits, max_weight)
    n = draw(st.integers(1, 40))
    weights = draw(st.lists(st.integers(1, max_weight), min_size=1, max_size=max_weight))
    while sum(weights) > max_weight:
        weights.pop()
    if not weights:
        weights = [1]
    b = layout.value_bound
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Mix extremes (the headroom's worst case) with random values.
    values = [
        rng.choice(np.array([-b, b, 0, 1, -1], dtype=np.int64), n)
        if draw(st.booleans())
        else rng.integers(-b, b + 1, n, dtype=np.int64)
        for _ in weights
    ]
    return layout, values, weights


@settings(max_examples=150, deadline=None)
@given(packed_sums())
def test_sum_of_packed_contributions_unpacks_to_the_weighted_sum(
    case: tuple[Layout, list[np.ndarray], list[int]],
) -> None:
    layout, values, weights = case
    slots = sum(pack(v, w, layout).astype(np.int64) for v, w in zip(values, weights))
    assert isinstance(slots, np.ndarray)
    want = sum(np.int64(w) * v for v, w in zip(values, weights))
    got = unpack(slots, layout, values[0].size)
    assert np.array_equal(got, want)


def test_slots_stay_exact_in_float64_at_the_extremes() -> None:
    layout = Layout(24, 1, 36, 1)
    v = np.array([layout.value_bound, -layout.value_bound, 0], dtype=np.int64)
    s = pack(v, 1, layout)
    assert s.dtype == np.float64 and np.array_equal(s.astype(np.int64), v)


def test_grid_requantization_rounds_half_up_and_is_exact_at_24_bits() -> None:
    q = np.array([0, 1, 127, 128, 129, -128, -129, 1 << 30], dtype=np.int64)
    layout = Layout(16, 1, 36, 1)  # shift 8: 128 is half a grid step
    assert to_grid(q, layout).tolist() == [0, 0, 0, 1, 1, 0, -1, 1 << 22]
    assert np.array_equal(to_grid(q, EXACT), q)
    assert np.array_equal(from_grid(to_grid(q << 8, layout), layout), q << 8)


@pytest.mark.parametrize(
    ("layout", "value", "weight", "message"),
    [
        (LAYOUTS["packed2"], 2048, 1, "outside the layout's range"),
        (LAYOUTS["packed2"], -2048, 1, "outside the layout's range"),
        (LAYOUTS["packed2"], 5, 65, "weight must be"),
        (EXACT, 1, 0, "weight must be"),
    ],
)
def test_out_of_range_values_and_weights_are_refused(
    layout: Layout, value: int, weight: int, message: str
) -> None:
    with pytest.raises(PackingError, match=message):
        pack(np.array([0, value], dtype=np.int64), weight, layout)


def test_overflowed_sum_is_detected_not_misread() -> None:
    layout = LAYOUTS["packed2"]
    too_big = np.array([1 << (layout.slot_bits - 1)], dtype=np.int64)
    with pytest.raises(PackingError, match="overflowed"):
        unpack(too_big, layout, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((25, 1, 36, 1), "frac_bits"),
        ((24, 0, 36, 1), "at least one lane"),
        ((24, 2, 30, 1), "bits per slot"),
        ((24, 1, 8, 1 << 10), "no room"),
    ],
)
def test_impossible_layouts(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(PackingError, match=message):
        Layout(*args)


def test_layouts_are_canonical_records() -> None:
    for layout in LAYOUTS.values():
        assert decode_record(encode(layout), Layout) == layout
    assert EXACT.max_abs == pytest.approx(1.0, rel=1e-6) and EXACT.resolution == 2.0**-24


def test_fitted_layout_takes_the_finest_grid_that_covers_the_range() -> None:
    layout = Layout.fitted(8.6, 16, 3, 36, resolution=0.25)
    assert layout.lanes == 3 and layout.lane_bits == 12 and layout.max_abs >= 8.6
    assert Layout(layout.frac_bits + 1, 3, 12, 16).max_abs < 8.6  # one bit finer no longer fits
    with pytest.raises(PackingError, match="coarser"):
        Layout.fitted(8.6, 16, 3, 36, resolution=0.01)

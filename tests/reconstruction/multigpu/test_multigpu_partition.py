"""Partition of a scan into G overlapping regions: ownership, halo width, object windows."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.multigpu.partition import bounding_window, cut_points, default_grid, owner_of, partition
from reconstruction.simulate import raster_px

N_PX = 16


def _corners(kind: str) -> np.ndarray:
    if kind == "raster":
        return np.floor(raster_px((10, 14), 3.0) + 0.5)
    rng = np.random.default_rng(4)
    return np.floor(rng.uniform(0, 60, size=(150, 2)) + 0.5)


def _shape(corners: np.ndarray) -> tuple[int, int]:
    h, w = (corners.max(axis=0) + N_PX + 1).astype(int)
    return int(h), int(w)


CASES = [("raster", 1, None), ("raster", 2, None), ("raster", 4, None), ("raster", 4, (2, 2)),
         ("random", 3, None), ("random", 4, (2, 2)), ("random", 6, (3, 2))]


@pytest.mark.parametrize(("kind", "g", "grid"), CASES)
def test_every_position_has_exactly_one_owner(kind: str, g: int, grid: tuple[int, int] | None) -> None:
    corners = _corners(kind)
    regions = partition(corners, N_PX, _shape(corners), g, overlap_px=5, grid=grid)
    assert len(regions) == g
    counts = np.zeros(len(corners), dtype=int)
    for reg in regions:
        counts[reg.owned] += 1
        assert np.all(np.isin(reg.owned, reg.positions))
    assert np.all(counts == 1)
    assert np.all(owner_of(regions, len(corners)) >= 0)


@pytest.mark.parametrize(("kind", "g", "grid"), CASES)
@pytest.mark.parametrize("overlap_px", [0, 4, 9])
def test_halo_is_exactly_the_positions_within_the_overlap(kind: str, g: int, grid: tuple[int, int] | None,
                                                          overlap_px: int) -> None:
    corners = _corners(kind)
    for reg in partition(corners, N_PX, _shape(corners), g, overlap_px=overlap_px, grid=grid):
        r_lo, r_hi, c_lo, c_hi = reg.cell_px
        # distance from each corner to the cell (0 inside)
        dr = np.maximum(np.maximum(r_lo - corners[:, 0], corners[:, 0] - r_hi), 0)
        dc = np.maximum(np.maximum(c_lo - corners[:, 1], corners[:, 1] - c_hi), 0)
        inside_grown = (corners[:, 0] >= r_lo - overlap_px) & (corners[:, 0] < r_hi + overlap_px) \
            & (corners[:, 1] >= c_lo - overlap_px) & (corners[:, 1] < c_hi + overlap_px)
        expected = np.union1d(np.flatnonzero(inside_grown), reg.owned)
        np.testing.assert_array_equal(reg.positions, expected)
        assert np.all(np.maximum(dr, dc)[reg.halo] <= overlap_px)
        if overlap_px == 0:
            assert reg.halo.size == 0


def test_neighbouring_strips_share_the_requested_width() -> None:
    corners = _corners("raster")  # rows 1, 4, ..., 28 (step 3)
    a, b = partition(corners, N_PX, _shape(corners), 2, overlap_px=7, grid=(2, 1))
    cut = a.cell_px[1]
    assert cut == b.cell_px[0]
    shared = np.intersect1d(a.positions, b.positions)
    rows = np.unique(corners[shared, 0])
    expected = np.unique(corners[np.abs(corners[:, 0] - cut) <= 7, 0])
    np.testing.assert_array_equal(rows, expected)
    assert len(rows) >= 4  # about 2 x 7 px / 3 px rows


@pytest.mark.parametrize(("kind", "g", "grid"), CASES)
def test_object_windows_cover_their_positions(kind: str, g: int, grid: tuple[int, int] | None) -> None:
    corners = _corners(kind)
    shape = _shape(corners)
    for reg in partition(corners, N_PX, shape, g, overlap_px=6, grid=grid):
        w = reg.window
        assert 0 <= w.r0 < w.r1 <= shape[0] and 0 <= w.c0 < w.c1 <= shape[1]
        local = reg.local_corners(corners)
        assert local.min() >= 0
        assert np.all(local[:, 0] + N_PX <= w.shape[0]) and np.all(local[:, 1] + N_PX <= w.shape[1])
        # the smallest such window: some window touches each side
        assert local[:, 0].min() == 0 and local[:, 1].min() == 0
        assert (local[:, 0] + N_PX).max() == w.shape[0] and (local[:, 1] + N_PX).max() == w.shape[1]


def test_raster_lines_stay_together_and_regions_are_balanced() -> None:
    corners = _corners("raster")  # 10 rows x 14 columns, rows span less than columns
    assert default_grid(corners, 4) == (1, 4)
    regions = partition(corners, N_PX, _shape(corners), 4, overlap_px=0)
    sizes = [len(r.owned) for r in regions]
    assert sum(sizes) == 140 and max(sizes) - min(sizes) <= 10  # whole columns of 10 positions
    for reg in regions:
        cols = np.unique(corners[reg.owned, 1])
        for c in cols:  # every position of a column it owns
            assert np.sum(corners[reg.owned, 1] == c) == 10


def test_cut_points_split_equal_values_together() -> None:
    values = np.repeat(np.arange(6, dtype=float), 5)
    cuts = cut_points(values, 3)
    assert cuts[0] == -np.inf and cuts[-1] == np.inf
    groups = [np.sum((values >= cuts[k]) & (values < cuts[k + 1])) for k in range(3)]
    assert groups == [10, 10, 10]
    assert np.all(np.diff(cuts) > 0)


def test_bounding_window_is_clipped_to_the_object() -> None:
    w = bounding_window(np.array([[2.0, 3.0], [10.0, 40.0]]), 16, (20, 50))
    assert (w.r0, w.r1, w.c0, w.c1) == (2, 20, 3, 50)


def test_impossible_partitions_are_refused() -> None:
    corners = _corners("raster")
    with pytest.raises(ValueError, match="grid"):
        partition(corners, N_PX, _shape(corners), 4, 0, grid=(3, 1))
    with pytest.raises(ValueError, match="holds no position"):
        partition(corners, N_PX, _shape(corners), 11, 0, grid=(11, 1))  # only 10 distinct rows
    with pytest.raises(ValueError, match="overlap_px"):
        partition(corners, N_PX, _shape(corners), 2, -1)

"""Split a scan into G overlapping regions, one per device (pure NumPy, host side).

Positions are the (N, 2) integer (row, col) top-left window corners the driver uses. The scan is cut into
``grid = (gr, gc)`` cells of about equal numbers of positions (strips along the longer axis by default).
Each position is *owned* by exactly one cell; a region holds its owned positions plus the *halo*: the other
positions whose corners lie within ``overlap_px`` of the cell. A region's object window is the bounding box,
in global object coordinates, of every window it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A rectangle of the global object: rows r0:r1, cols c0:c1."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.r0, self.r1), slice(self.c0, self.c1)


@dataclass(frozen=True)
class Region:
    """One device's share of the scan.

    owned: (No,) sorted indices into the global positions; positions: (Nr,) sorted indices (owned plus halo);
    window: the region's object window; cell_px: (row_lo, row_hi, col_lo, col_hi) corner bounds of its cell.
    """

    index: int
    owned: np.ndarray
    positions: np.ndarray
    window: Window
    cell_px: tuple[float, float, float, float]

    @property
    def halo(self) -> np.ndarray:
        """(Nh,) indices of the positions this region holds but does not own."""
        return np.setdiff1d(self.positions, self.owned)

    def local_corners(self, corners_px: np.ndarray) -> np.ndarray:
        """(Nr, 2) corners of this region's positions relative to its window."""
        return corners_px[self.positions] - np.array([self.window.r0, self.window.c0])


def default_grid(corners_px: np.ndarray, n_regions: int) -> tuple[int, int]:
    """Strips across the longer extent of the scan: (G, 1) when rows span more, else (1, G)."""
    extent = np.ptp(corners_px, axis=0) if len(corners_px) else np.zeros(2)
    return (n_regions, 1) if extent[0] >= extent[1] else (1, n_regions)


def cut_points(values: np.ndarray, parts: int) -> np.ndarray:
    """(parts + 1,) increasing cuts with -inf/inf ends, splitting ``values`` into ``parts`` groups of about
    equal size; a cut lies half way between distinct values, so equal values (a raster line) stay together."""
    u = np.unique(values)
    cuts = [-np.inf]
    for k in range(1, parts):
        q = float(np.quantile(values, k / parts, method="inverted_cdf"))
        i = int(np.searchsorted(u, q, side="right"))  # first distinct value above q
        hi = u[min(i, len(u) - 1)]
        cut = 0.5 * (q + hi) if hi > q else q + 0.5
        cuts.append(max(cut, cuts[-1]))
    cuts.append(np.inf)
    return np.asarray(cuts, dtype=np.float64)


def partition(corners_px: np.ndarray, size_px: int, object_shape: tuple[int, int], n_regions: int,
              overlap_px: float, grid: tuple[int, int] | None = None) -> list[Region]:
    """G regions covering the scan: owned positions, halo within ``overlap_px`` and the object window.

    corners_px: (N, 2) window corners; size_px: window side n; object_shape: (H, W) of the global object.
    ``grid`` (gr, gc) with gr * gc == n_regions; default strips along the longer axis.
    """
    corners = np.asarray(corners_px, dtype=np.float64)
    if n_regions < 1:
        raise ValueError(f"n_regions={n_regions}: must be >= 1")
    if overlap_px < 0:
        raise ValueError(f"overlap_px={overlap_px}: must be >= 0")
    gr, gc = grid if grid is not None else default_grid(corners, n_regions)
    if gr * gc != n_regions or gr < 1 or gc < 1:
        raise ValueError(f"grid={grid}: expected two positive integers whose product is {n_regions}")
    if len(corners) < n_regions:
        raise ValueError(f"{len(corners)} positions cannot be split into {n_regions} regions")
    row_cuts = cut_points(corners[:, 0], gr)
    regions: list[Region] = []
    for i in range(gr):
        in_strip = (corners[:, 0] >= row_cuts[i]) & (corners[:, 0] < row_cuts[i + 1])
        col_cuts = cut_points(corners[in_strip, 1], gc) if in_strip.any() else cut_points(corners[:, 1], gc)
        for j in range(gc):
            cell = (row_cuts[i], row_cuts[i + 1], col_cuts[j], col_cuts[j + 1])
            owned = np.flatnonzero(in_strip & (corners[:, 1] >= cell[2]) & (corners[:, 1] < cell[3]))
            if owned.size == 0:
                raise ValueError(f"region {len(regions)} of grid {(gr, gc)} holds no position; use fewer regions")
            held = np.flatnonzero(_near_cell(corners, cell, overlap_px))
            held = np.union1d(held, owned)
            regions.append(Region(len(regions), owned, held, bounding_window(corners[held], size_px, object_shape),
                                  tuple(float(v) for v in cell)))  # type: ignore[arg-type]
    return regions


def _near_cell(corners: np.ndarray, cell: tuple[float, ...], overlap_px: float) -> np.ndarray:
    """(N,) bool: corners inside the cell grown by ``overlap_px`` on every side."""
    r_lo, r_hi, c_lo, c_hi = cell
    return ((corners[:, 0] >= r_lo - overlap_px) & (corners[:, 0] < r_hi + overlap_px)
            & (corners[:, 1] >= c_lo - overlap_px) & (corners[:, 1] < c_hi + overlap_px))


def bounding_window(corners: np.ndarray, size_px: int, object_shape: tuple[int, int]) -> Window:
    """Smallest window of the (H, W) object holding every ``size_px`` window at ``corners`` (M, 2)."""
    lo = np.floor(corners.min(axis=0)).astype(int)
    hi = np.floor(corners.max(axis=0)).astype(int) + int(size_px)
    return Window(max(0, int(lo[0])), min(int(object_shape[0]), int(hi[0])),
                  max(0, int(lo[1])), min(int(object_shape[1]), int(hi[1])))


def owner_of(regions: list[Region], n_positions: int) -> np.ndarray:
    """(N,) index of the region owning each position (-1 where none does)."""
    out = np.full(n_positions, -1, dtype=np.int64)
    for reg in regions:
        out[reg.owned] = reg.index
    return out

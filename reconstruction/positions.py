"""Scan positions: raster or spiral in metres from the parameters, and the one conversion to pixels.

Conventions (the original's): raster point (i, j) of a (rows, cols) grid sits at
((i - (rows-1)/2) * step0, (j - (cols-1)/2) * step1) metres, visited row-major (index i*cols + j);
mirroring reverses an axis, ``flip_scan_axis`` swaps the two coordinates; the spiral is
r = sqrt(k), (r cos 4r * step0, r sin 4r * step1). Pixels = metres / pixel_size, shifted so the minimum
sits at ``margin_px``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .parameters import Parameters


def raster_positions_m(
    scan_dims: tuple[int, int],
    step_m: tuple[float, float],
    *,
    mirror_1st: bool = False,
    mirror_2nd: bool = False,
    flip: bool = False,
    drift_m: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """(rows*cols, 2) float64 raster positions in metres, row-major."""
    rows, cols = scan_dims
    i, j = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    di = i - (rows - 1) / 2.0
    dj = j - (cols - 1) / 2.0
    if mirror_1st:
        di = -di
    if mirror_2nd:
        dj = -dj
    pos = np.stack([di * step_m[0] + i * drift_m[0], dj * step_m[1] + j * drift_m[1]], axis=-1).reshape(-1, 2)
    if flip:
        pos = pos[:, ::-1].copy()
    return pos


def spiral_positions_m(n_points: int, step_m: tuple[float, float], *, flip: bool = False) -> np.ndarray:
    """(n_points, 2) float64 spiral positions in metres (the original's r = sqrt(k), angle 4r)."""
    r = np.sqrt(np.arange(n_points, dtype=np.float64))
    pos = np.stack([r * np.cos(4 * r) * step_m[0], r * np.sin(4 * r) * step_m[1]], axis=-1)
    if flip:
        pos = pos[:, ::-1].copy()
    return pos


def positions_m_from_parameters(params: Parameters) -> np.ndarray:
    """(N, 2) metres from scanDims/step/spiral/flip/mirror/drift (not from a positions file)."""
    e = params.experiment
    if e.spiral_scan:
        return spiral_positions_m(params.n_positions, e.step_m, flip=e.flip_scan_axis)
    return raster_positions_m(
        e.scan_dims, e.step_m, mirror_1st=e.mirror_1st_scan_axis, mirror_2nd=e.mirror_2nd_scan_axis,
        flip=e.flip_scan_axis, drift_m=e.drift_m,
    )


def metres_to_pixels(
    positions_m: np.ndarray,
    pixel_size_m: float,
    *,
    margin_px: float = 1.0,
    jitter_radius_px: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(N, 2) pixel positions (row, col) with the minimum at ``margin_px``; optional uniform jitter."""
    if pixel_size_m <= 0:
        raise ValueError(f"pixel_size_m={pixel_size_m}: must be > 0")
    px = np.asarray(positions_m, dtype=np.float64) / pixel_size_m
    if jitter_radius_px > 0:
        rng = rng or np.random.default_rng()
        px = px + rng.uniform(-jitter_radius_px, jitter_radius_px, size=px.shape)
    return px - px.min(axis=0) + margin_px


def positions_px_from_parameters(params: Parameters, seed: int | None = None) -> np.ndarray:
    """(N, 2) pixel positions of the raster/spiral described by the parameters."""
    rng = np.random.default_rng(seed)
    return metres_to_pixels(
        positions_m_from_parameters(params), params.pixel_size_m,
        jitter_radius_px=params.experiment.jitter_radius_px, rng=rng,
    )


def window_corners(positions_px: Any, xp: Any = np, dtype: Any = np.int64) -> Any:
    """(N, 2) whole-pixel top-left corners of the windows at ``positions_px`` (N, 2) pixels: each rounded half
    up, the one rule every engine, the input checks and the previews use."""
    return xp.floor(positions_px + 0.5).astype(dtype)


def object_shape_for(positions_px: np.ndarray, size_px: int, margin_px: int = 1) -> tuple[int, int]:
    """Smallest (H, W) holding every window (rounded to whole pixels) plus ``margin_px`` on the far side."""
    top_left = window_corners(np.asarray(positions_px))
    h, w = (top_left.max(axis=0) + size_px + margin_px).tolist()
    return int(h), int(w)

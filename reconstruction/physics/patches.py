"""Probe-window extraction from the object and its adjoint, the scatter-add of windows back into it.

Windows use integer top-left corners: window j covers ``obj[r_j:r_j+n, c_j:c_j+n]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def window_indices(xp: Any, rows: Any, cols: Any, n: int, width: int) -> Any:
    """(N, n, n) int64 flat indices into an object of ``width`` columns for windows at (rows, cols)."""
    ar = xp.arange(n, dtype=xp.int64)
    r = rows.astype(xp.int64)[:, None, None] + ar[None, :, None]
    c = cols.astype(xp.int64)[:, None, None] + ar[None, None, :]
    return r * width + c


def extract_patches(xp: Any, obj: Any, flat_idx: Any) -> Any:
    """(N, n, n) windows of ``obj`` (H, W) at the flat indices from :func:`window_indices`."""
    return obj.ravel()[flat_idx]


def scatter_add_patches(xp: Any, shape: tuple[int, int], patches: Any, flat_idx: Any) -> Any:
    """(H, W) sum of (N, n, n) ``patches`` placed at their windows (the adjoint of extraction).

    Real and complex patches are supported (float32 / complex64 out); overlapping windows add up. On NumPy the
    windows are added as slices, one position at a time (no full-object temporaries per position), so the sums
    accumulate in float32; on other namespaces one ``bincount`` over all pixels accumulates in float64. The two
    agree to float32 rounding (a few overlaps per pixel; tests/reconstruction/test_physics_operators.py).
    """
    if xp is np:
        return _scatter_add_slices(shape, patches, flat_idx)
    size = shape[0] * shape[1]
    idx = flat_idx.ravel()
    if xp.iscomplexobj(patches):
        flat = patches.ravel()
        re = xp.bincount(idx, weights=flat.real.astype(xp.float64), minlength=size)
        im = xp.bincount(idx, weights=flat.imag.astype(xp.float64), minlength=size)
        out = (re + 1j * im).astype(xp.complex64)
    else:
        out = xp.bincount(idx, weights=patches.ravel().astype(xp.float64), minlength=size).astype(xp.float32)
    return out.reshape(shape)


def roll_windows(xp: Any, stack: Any, shifts_px: Any) -> None:
    """Roll each window's images in place by its whole-pixel shift: ``stack[j] = roll(stack[j], shifts_px[j],
    axis=(-2, -1))`` for every j whose (2,) shift is not zero. ``stack`` (N, ..., ny, nx), ``shifts_px`` (N, 2) int.
    One gather for all moved windows (the windows a position step moved across a pixel edge): a loop of ``roll``s
    cost two device-to-host reads and a roll's launches per window on the GPU."""
    moved = xp.nonzero(xp.any(shifts_px != 0, axis=1))[0]
    if int(moved.size) == 0:
        return
    ny, nx = stack.shape[-2:]
    sub = stack[moved].reshape(len(moved), -1, ny, nx)
    s = shifts_px[moved]
    rows = (xp.arange(ny)[None, :] - s[:, 0:1]) % ny  # np.roll: out[i] = in[(i - shift) mod n]
    cols = (xp.arange(nx)[None, :] - s[:, 1:2]) % nx
    k = xp.arange(len(moved))[:, None, None, None]
    planes = xp.arange(sub.shape[1])[None, :, None, None]
    stack[moved] = sub[k, planes, rows[:, None, :, None], cols[:, None, None, :]].reshape(stack[moved].shape)


def _scatter_add_slices(shape: tuple[int, int], patches: np.ndarray, flat_idx: np.ndarray) -> np.ndarray:
    """NumPy :func:`scatter_add_patches`: each window's corner is its first flat index (windows are squares)."""
    out = np.zeros(shape, dtype=np.complex64 if np.iscomplexobj(patches) else np.float32)
    n_rows, n_cols = flat_idx.shape[-2:]
    for k, corner in enumerate(flat_idx[:, 0, 0].tolist()):
        r, c = divmod(corner, shape[1])
        out[r:r + n_rows, c:c + n_cols] += patches[k]
    return out

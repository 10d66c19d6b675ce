"""Seamless merge of region objects into the global object (host NumPy).

Each global pixel is the illumination-weighted mean of the regions holding it,
O(x) = sum_g w_g(x) O_g(x) / sum_g w_g(x); a region's values fade out with its illumination, so no seam
marks where one region's cell ends. Pixels no region illuminates take the plain mean of the regions holding
them, and pixels no region holds keep ``fill``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .partition import Window


def merge_objects(objects: Sequence[np.ndarray], weights: Sequence[np.ndarray], windows: Sequence[Window],
                  global_shape: tuple[int, int], fill: complex | np.ndarray = 1.0) -> np.ndarray:
    """(H, W) complex64 global object from region objects (h_g, w_g), weights (h_g, w_g) >= 0 and windows.

    ``fill``: a scalar or an (H, W) array for the pixels outside every window.
    """
    num = np.zeros(global_shape, dtype=np.complex128)
    den = np.zeros(global_shape, dtype=np.float64)
    plain = np.zeros(global_shape, dtype=np.complex128)
    count = np.zeros(global_shape, dtype=np.int64)
    for obj, w, win in zip(objects, weights, windows, strict=True):
        if obj.shape != win.shape or w.shape != win.shape:
            raise ValueError(f"region object {obj.shape} / weight {w.shape} do not match window {win.shape}")
        s = win.slices
        num[s] += w * obj
        den[s] += w
        plain[s] += obj
        count[s] += 1
    out = np.empty(global_shape, dtype=np.complex128)
    out[...] = fill
    held = count > 0
    out[held] = plain[held] / count[held]
    lit = den > 1e-12 * max(float(den.max()), 0.0) if den.size else den > 0
    lit &= den > 0
    out[lit] = num[lit] / den[lit]
    return out.astype(np.complex64)


def split_object(obj: np.ndarray, windows: Sequence[Window]) -> list[np.ndarray]:
    """Copies of ``obj`` (H, W) cut at each window."""
    return [np.array(obj[w.slices]) for w in windows]

"""A measured diffraction pattern next to the model's for one scan position, small, for the live view.

Both are |.|^2 with zero frequency in the centre (fftshift), summed over ``b x b`` blocks down to at most
``max_px`` a side, and shown as log10(1 + counts) on one shared range, so equal colours mean equal counts. The
model is the current exit waves of all probe modes at that position, propagated (orthonormal FFT), as the engines
fit them (sub-pixel windows and per-position flux included). :func:`result_diffraction` draws the same pair from a
finished run's object, probe and positions (its result file) and the position's measured pattern.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engines.base import EngineState
from .physics.patches import extract_patches
from .physics.propagation import forward
from .positions import window_corners

MAX_DIFFRACTION_PX = 64


@dataclass(frozen=True)
class DiffractionPreview:
    """Position ``position``'s measured and model patterns, uint8 (h, w), 0..255 over log10(1 + counts) in
    ``log_range``; ``binning`` detector pixels per preview pixel along each side."""

    position: int
    measured: np.ndarray
    model: np.ndarray
    log_range: tuple[float, float]
    binning: int


def central_position(positions_px: np.ndarray) -> int:
    """The scan position nearest the middle of the scan (the one the live view shows)."""
    middle = positions_px.mean(axis=0)
    return int(np.argmin(np.hypot(*(positions_px - middle).T)))


def _bin(xp: Any, image: Any, b: int) -> Any:
    n = image.shape[-1] // b * b
    return image[:n, :n].reshape(n // b, b, n // b, b).sum(axis=(1, 3))


def diffraction_preview(state: Any, position: int, asnumpy: Any = np.asarray,
                        max_px: int = MAX_DIFFRACTION_PX) -> DiffractionPreview:
    """Measured and model pattern of ``position`` from the engine state (``reconstruction.engines.EngineState``;
    its amplitudes must be indexable: not a streamed run)."""
    xp = state.xp
    idx = xp.asarray([position])
    patch = extract_patches(xp, state.obj, state.window_idx(idx))  # (1, n, n)
    waves = state.lit_probes(idx) * patch[:, None]  # (1, M, n, n)
    model = xp.sum(xp.abs(forward(xp, waves)) ** 2, axis=1)[0]
    measured = state.amplitudes[position] ** 2
    b = max(1, math.ceil(model.shape[-1] / max_px))
    shown = [xp.log10(1.0 + _bin(xp, xp.fft.fftshift(img), b)) for img in (measured, model)]
    hi = max(float(xp.max(img)) for img in shown)
    scale = 255.0 / hi if hi > 0 else 0.0
    out = [np.ascontiguousarray(asnumpy(xp.clip(img * scale + 0.5, 0, 255).astype(xp.uint8))) for img in shown]
    return DiffractionPreview(int(position), out[0], out[1], (0.0, hi), b)


def result_diffraction(obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray, measured: np.ndarray,
                       position: int, intensity_scale: np.ndarray | None = None,
                       max_px: int = MAX_DIFFRACTION_PX) -> DiffractionPreview:
    """Position ``position``'s measured pattern ``measured`` (n, n) counts, zero frequency at [0, 0], next to the
    model of a finished run: its object (H, W), probe (M, n, n), positions (N, 2) px (a result's: the sub-pixel
    positions its windows followed, else whole-pixel corners) and per-position amplitude factors (N,) or None.
    The model is :func:`diffraction_preview`'s, from an engine state holding that one position, so the windows,
    the sub-pixel probe moves and the flux are the engines' own. ValueError naming the position or the shape that
    does not fit."""
    n_positions = len(positions_px)
    if not 0 <= int(position) < n_positions:
        raise ValueError(f"position {position}: this scan has positions 0..{n_positions - 1}")
    n = probe.shape[-1]
    if measured.shape != (n, n):
        raise ValueError(f"position {position}: the measured pattern is {measured.shape}, the probe {n} x {n}")
    at = np.asarray(positions_px[position:position + 1], dtype=np.float64)
    corner = window_corners(at)  # the window corner the engines use
    r, c = (int(v) for v in corner[0])
    if r < 0 or c < 0 or r + n > obj.shape[0] or c + n > obj.shape[1]:
        raise ValueError(f"position {position} at (row {r}, col {c}): its {n} x {n} window is outside the "
                         f"{obj.shape[0]} x {obj.shape[1]} object")
    state = EngineState(
        xp=np, obj=np.asarray(obj, np.complex64), probe=np.asarray(probe, np.complex64),
        amplitudes=np.sqrt(np.maximum(measured, 0), dtype=np.float32)[None], valid=None,
        rows=corner[:, 0], cols=corner[:, 1], rng=np.random.default_rng(0), modes_active=probe.shape[0],
        positions_px=at,  # whole-pixel positions have zero fractions: the probe is used as it is
        intensity_scale=None if intensity_scale is None else np.asarray(
            intensity_scale[position:position + 1], np.float32))
    return dataclasses.replace(diffraction_preview(state, 0, max_px=max_px), position=int(position))

"""A measured diffraction pattern next to the model's for one scan position, small, for the live view.

Both are |.|^2 with zero frequency in the centre (fftshift), summed over ``b x b`` blocks down to at most
``max_px`` a side, and shown as log10(1 + counts) on one shared range, so equal colours mean equal counts. The
model is the current exit waves of all probe modes at that position, propagated (orthonormal FFT), as the engines
fit them (sub-pixel windows and per-position flux included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .physics.patches import extract_patches
from .physics.propagation import forward

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

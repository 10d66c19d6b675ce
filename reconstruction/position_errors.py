"""Each scan position's Fourier error, for the live view's scan plot (coloured by it).

The engines keep only an iteration's sums (and the fast GPU engines fuse them into their kernels), so the error of
each position is measured here, from the engine state, on whatever device the run uses: the model of position j is
the exit waves of all active probe modes there (sub-pixel windows and per-position flux included, as the engines
fit them), propagated; its error is sqrt(sum (|Psi_j| - A_j)^2 / sum A_j^2) over the valid pixels, the measure the
iteration's error sums over all positions.

To keep a preview cheap, one call measures only the next chunk of at most ``pixels`` pattern pixels of the
positions shown (every ``stride``-th), going round them; the others keep the value of their last measurement.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .physics.modulus import error_terms, modal_amplitude
from .physics.patches import extract_patches
from .physics.propagation import forward

#: Pattern pixels measured per preview. CPU 2^18 (64 patterns of 64 px, 4 of 256 px): 24-30 ms measured on a
#: 2-core machine at load 9 (the preview itself 11-48 ms there); GPU 2^23 (2048 patterns of 64 px).
PIXELS_PER_PREVIEW = {"cpu": 2**18, "gpu": 2**23}


def position_errors(state: Any, index: Any) -> Any:
    """(B,) float32 device array: the Fourier error of each position of ``index`` (a (B,) int device array) in
    the engine state ``state`` (``reconstruction.engines.EngineState``, resident data); NaN for a pattern with no
    photons (a slot a streaming run has not filled yet: ``reconstruction/live``)."""
    xp = state.xp
    patch = extract_patches(xp, state.obj, state.window_idx(index))  # (B, n, n)
    waves = state.lit_probes(index) * patch[:, None]  # (B, M, n, n)
    model = modal_amplitude(xp, forward(xp, waves))
    sq, a2, _ = error_terms(xp, model, state.amplitudes[index], state.valid_for(index))
    error = xp.sqrt(sq / xp.maximum(a2, 1e-30))
    return xp.where(a2 > 0, error, xp.nan).astype(xp.float32)


class PositionErrorSweep:
    """The errors of every ``stride``-th of ``n_positions`` positions, refreshed a chunk at a time.

    ``values`` (m,) float32 host array (NaN until a position is first measured); ``measured_at`` (m,) int32 the
    iteration each value was measured at (0: not yet)."""

    def __init__(self, n_positions: int, stride: int, size_px: int, pixels: int) -> None:
        if n_positions < 1 or stride < 1 or size_px < 1:
            raise ValueError(f"PositionErrorSweep: n_positions={n_positions}, stride={stride}, size_px={size_px} "
                             "must all be >= 1")
        self.index = np.arange(0, n_positions, stride, dtype=np.int64)
        self.stride = stride
        self.chunk = max(1, min(self.index.size, pixels // (size_px * size_px)))
        self.values = np.full(self.index.size, np.nan, dtype=np.float32)
        self.measured_at = np.zeros(self.index.size, dtype=np.int32)
        self._next = 0

    @property
    def calls_per_sweep(self) -> int:
        """How many calls of :meth:`advance` measure every position once."""
        return math.ceil(self.index.size / self.chunk)

    def advance(self, state: Any, iteration: int, asnumpy: Any = np.asarray) -> np.ndarray:
        """Measure the next chunk in ``state`` at ``iteration``; returns :attr:`values` (all of them)."""
        xp = state.xp
        take = (self._next + np.arange(self.chunk)) % self.index.size
        errors = position_errors(state, xp.asarray(self.index[take]))
        self.values[take] = np.asarray(asnumpy(errors), dtype=np.float32)
        self.measured_at[take] = iteration
        self._next = int((take[-1] + 1) % self.index.size)
        return self.values

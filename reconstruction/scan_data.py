"""``ScanData``: what a loader (files or simulation) hands the driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ScanData:
    """Preprocessed patterns and positions, ready to reconstruct.

    intensities: (N, n, n) float32 photon counts (amplitude squared), zero frequency at [0, 0].
    positions_px: (N, 2) float64 (row, col) of each probe window's top-left corner in the object array.
    valid_mask: None, (n, n) or (N, n, n) bool; True where the pixel constrains the fit.
    pixel_size_m: sample-plane pixel size (lambda z / (n dx_d)), or None when unknown.
    """

    intensities: np.ndarray
    positions_px: np.ndarray
    valid_mask: np.ndarray | None = None
    pixel_size_m: float | None = None
    probe_guess: np.ndarray | None = None  # (modes, n, n) or (n, n) complex
    object_guess: np.ndarray | None = None  # (h, w) complex, pasted centred
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        return int(self.intensities.shape[0])

    @property
    def size_px(self) -> int:
        return int(self.intensities.shape[-1])

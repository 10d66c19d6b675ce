"""Small records the driver hands out: per-iteration :class:`Progress` and the final :class:`Result`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Progress:
    """What one iteration (epoch) reports.

    ``error`` is the Fourier-magnitude error sqrt(sum (|F psi| - A)^2 / sum A^2) over measured pixels;
    ``rms`` the original's metric (mean over positions of sum|A - |F psi|| / sum A) when asked, else None.
    """

    iteration: int  # 1-based, the iteration just finished
    iterations: int  # planned total
    error: float
    rms: float | None
    iteration_s: float  # wall time of this iteration
    elapsed_s: float  # since the first iteration started

    @property
    def rate_per_s(self) -> float:
        return self.iteration / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float:
        left = self.iterations - self.iteration
        return left * self.elapsed_s / self.iteration if self.iteration else float("nan")


@dataclass
class Result:
    """A finished (or stopped) reconstruction, on the host.

    object: (H, W) complex64; probe: (modes, n, n) complex64; positions_px: (N, 2) float64 (row, col) of
    each window's top-left corner, so the window of position j covers object[r:r+n, c:c+n].
    """

    object: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    errors: list[float]
    rms: list[float]
    iteration_s: list[float]
    algorithm: str
    device: str
    pixel_size_m: float | None = None
    parameters: Any = None  # reconstruction.parameters.Parameters when built from one
    stopped_early: str | None = None  # "time limit", "cancelled", ... or None
    inputs: dict[str, Any] = field(default_factory=dict)  # file references for provenance
    intensity_scale: np.ndarray | None = None  # (N,) fitted amplitude factor per position (-variableIntensity)
    run_plan: dict[str, Any] | None = None  # how the run went and why (reconstruction.run_plan.RunPlan.to_dict())

    @property
    def iterations(self) -> int:
        return len(self.errors)

    @property
    def error_measure(self) -> str:
        """What ``errors`` measure for this algorithm (:func:`reconstruction.engines.error_measure`)."""
        from .engines import error_measure

        return error_measure(self.algorithm)

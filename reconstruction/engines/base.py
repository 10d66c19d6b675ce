"""State shared by the engines and the per-iteration schedule derived from the parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..physics import modulus, patches, subpixel


@dataclass(frozen=True)
class EngineSettings:
    """Algorithm knobs (from ``Parameters.reconstruction``); iteration numbers are 1-based."""

    update_probe_from: int = 10
    update_modes_from: int = 20
    phase_constraint: int = 1
    delta_p: float = 0.1  # LSQML regularisation relative to the maximum of the normalisation
    noise_model: str = "gaussian"  # every engine: "gaussian" (amplitude) or "poisson" (the likelihood step)
    batch_size: int = 0  # LSQML mini-batch (0 = about N/40)
    beta_lsq: float = 0.9  # LSQML damping of the optimal step
    beta_decay: float = 0.0  # LSQML: halve beta after an epoch whose error fell by less than this fraction (0 = off)
    mean_span: int = 5  # LSQML: the run reports the exponential mean of the iterates, this span (1 = off)
    dm_relax: float = 0.05  # DM: relative radius of the noise ball the modulus projection stops at (0 = exact)
    position_refinement_from: int = 0  # refine positions from this iteration (0 = off, whole-pixel windows)
    position_affine: tuple[str, ...] = ()  # refinement: the free affine terms of the scan (the others are held)
    affine_delay: int = 0  # ... fitted after this many refining epochs (the per-position corrections first)
    affine_epochs: int = 10  # ... in this many epochs, the probe held meanwhile; then the geometry found is held
    coarse_search_px: int = 0  # refinement: whole-pixel search radius of each window (0 = off)
    coarse_search_epochs: int = 5  # ... in this many first refining epochs
    variable_intensity: bool = False  # every engine: fit a per-position incident-intensity scale (flux fluctuations)
    subpixel_windows: bool = False  # every engine: windows follow fractional positions (the probe moved by them)
    compute_rms: bool = False

    @property
    def per_position_fits(self) -> bool:
        """True when an engine fits something per position (positions, or intensities): one device."""
        return self.position_refinement_from > 0 or self.variable_intensity

    @property
    def windows_follow_positions(self) -> bool:
        """True when windows follow the sub-pixel positions (``subpixel_windows``, or position refinement),
        so the engine needs ``EngineState.positions_px``; else every window sits at its rounded corner."""
        return self.subpixel_windows or self.position_refinement_from > 0


@dataclass
class EngineState:
    """Arrays on the device (``xp``) that the engines update in place.

    obj (H, W) complex64; probe (M, n, n) complex64; amplitudes (N, n, n) float32 = sqrt(intensities), or for a
    streamed GPU run an ``AmplitudeStream`` (``reconstruction/gpu/streaming.py``: host data, same shape);
    valid None or bool (n, n) / (N, n, n); rows, cols (N,) int64 window corners (device arrays);
    positions_px None, or (N, 2) float64 sub-pixel positions (row, col) whose rounding the corners are, when
    windows follow them (``EngineSettings.windows_follow_positions``; an engine that refines positions keeps both
    up to date); intensity_scale None, or (N,) float32 amplitude
    factors c_j of the probe at each position (exit wave c_j P O_j; mean 1), for an engine that fits them.
    """

    xp: Any
    obj: Any
    probe: Any
    amplitudes: Any
    valid: Any | None
    rows: Any
    cols: Any
    rng: np.random.Generator
    modes_active: int = 1
    positions_px: Any | None = None
    intensity_scale: Any | None = None

    @property
    def n_positions(self) -> int:
        return int(self.amplitudes.shape[0])

    @property
    def size_px(self) -> int:
        return int(self.amplitudes.shape[-1])

    def window_idx(self, index: Any = None) -> Any:
        """(B, n, n) flat object indices of the windows of positions ``index`` (all when None)."""
        rows = self.rows if index is None else self.rows[index]
        cols = self.cols if index is None else self.cols[index]
        return patches.window_indices(self.xp, rows, cols, self.size_px, self.obj.shape[1])

    def lit_probes(self, index: Any) -> Any:
        """(B, M, n, n) the active probe modes as they light the windows of positions ``index`` (an index array):
        moved by each position's fraction when windows follow sub-pixel positions, scaled by each position's
        amplitude factor when the run fits them."""
        xp = self.xp
        probe = self.probe[: self.modes_active]
        if self.positions_px is None:
            probe = xp.broadcast_to(probe[None], (len(index),) + probe.shape)
        else:
            fractions = subpixel.fractions_px(xp, self.positions_px[index], self.rows[index], self.cols[index])
            probe = subpixel.moved_probes(xp, probe, fractions)[0]
        if self.intensity_scale is not None:
            probe = probe * self.intensity_scale[index][:, None, None, None]
        return probe

    def valid_for(self, index: Any) -> Any | None:
        """The mask for positions ``index`` (an int, a slice or an index array), or None."""
        if self.valid is None or self.valid.ndim == 2:
            return self.valid
        return self.valid[index]


@dataclass
class IterationMetrics:
    """Accumulates the per-position error sums of one iteration."""

    sq_err: float = 0.0
    sq_amp: float = 0.0
    rms_sum: float = 0.0
    rms_count: int = 0

    def add(self, xp: Any, model_amp: Any, measured_amp: Any, valid: Any | None, rms: bool) -> None:
        sq, a2, abs_err = modulus.error_terms(xp, model_amp, measured_amp, valid)
        self.sq_err += float(xp.sum(sq))
        self.sq_amp += float(xp.sum(a2))
        if rms:
            a_sum = xp.sum(measured_amp if valid is None else xp.where(valid, measured_amp, 0), axis=(-2, -1))
            ratio = abs_err / xp.maximum(a_sum, 1e-12)
            self.rms_sum += float(xp.sum(ratio))
            self.rms_count += int(ratio.size)

    @property
    def error(self) -> float:
        return float(np.sqrt(self.sq_err / self.sq_amp)) if self.sq_amp > 0 else 0.0

    @property
    def rms(self) -> float | None:
        return self.rms_sum / self.rms_count if self.rms_count else None


def normalise_flux(state: EngineState) -> None:
    """Divide the amplitude factors c_j (``state.intensity_scale``) by their mean m and multiply every probe mode
    by m: the model c_j P O_j is unchanged, the factors keep mean 1 and the probe carries the mean flux (ePIE and
    DM refit c_j from the data each visit, so without this the overall scale would drift into the factors)."""
    xp, scales = state.xp, cast(Any, state.intensity_scale)  # set whenever the run fits the flux
    mean = float(xp.mean(scales))
    if mean > 0:
        scales /= mean
        state.probe *= state.probe.real.dtype.type(mean)


def apply_phase_constraint(xp: Any, obj: Any) -> Any:
    """Set positive object phases to 0 (keep the amplitude): the original's early-iteration constraint."""
    return xp.where(obj.imag > 0, xp.abs(obj).astype(obj.dtype), obj)


def object_illumination(state: EngineState) -> Any:
    """(H, W) float32 sum over positions of the modal probe intensity sum_k |P_k|^2."""
    xp = state.xp
    p2 = xp.sum(xp.abs(state.probe) ** 2, axis=0)
    idx = state.window_idx()
    return patches.scatter_add_patches(xp, state.obj.shape, xp.broadcast_to(p2, idx.shape), idx)

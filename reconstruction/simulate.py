"""Simulated ptychography scans with a known truth: the test object, a defocused probe, a raster.

The forward model is exactly the engines' (integer window corners, orthonormal FFT), optionally with Poisson
noise at a given number of photons per pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .physics import subpixel
from .positions import object_shape_for, positions_px_from_parameters, window_corners
from .probes import defocused_pupil_probe
from .scan_data import ScanData
from .test_object import make_test_object

if TYPE_CHECKING:
    from .parameters import Parameters

DEFAULT_POWER = 1e6  # probe power (counts per pattern) used when the simulation is noise-free


@dataclass
class SimulatedScan:
    """Simulated data plus the truth it came from (object (H, W), probe (1, n, n), both complex64)."""

    data: ScanData
    object_truth: np.ndarray
    probe_truth: np.ndarray


def raster_px(scan_dims: tuple[int, int], step_px: float, margin_px: float = 1.0) -> np.ndarray:
    """(rows*cols, 2) float64 row-major raster in pixels with its minimum at ``margin_px``."""
    rows, cols = scan_dims
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([i, j], axis=-1).reshape(-1, 2).astype(np.float64) * step_px + margin_px


def simulate(
    *,
    size_px: int = 64,
    scan_dims: tuple[int, int] = (15, 15),
    step_px: float | None = None,
    beam_diameter_px: float | None = None,
    photons: float = 1e6,
    jitter_px: float = 0.0,
    positions_px: np.ndarray | None = None,
    pixel_size_m: float | None = None,
    seed: int = 0,
    subpixel: bool = False,
) -> SimulatedScan:
    """Simulate a scan. Defaults: 64 px patterns, 15x15 raster, step n/10 px, beam diameter n*0.4 px.

    photons: counts per pattern for Poisson noise; 0 = noise-free (probe power 1e6).
    subpixel: the windows follow the fractional positions (the probe moved by each fraction, the forward model
    of ``-subpixelWindows``); off, each window sits at its rounded corner.
    Returns intensities (N, n, n) float32 with zero frequency at [0, 0], and the truth.
    """
    rng = np.random.default_rng(seed)
    n = int(size_px)
    if positions_px is None:
        step = step_px if step_px is not None else n / 10.0
        positions_px = raster_px(scan_dims, step)
        if jitter_px > 0:
            positions_px = positions_px + rng.uniform(-jitter_px, jitter_px, positions_px.shape)
            positions_px = positions_px - positions_px.min(axis=0) + 1.0
    positions_px = np.asarray(positions_px, dtype=np.float64)
    truth = simulated_object(positions_px, n, seed)
    probe = simulated_probe(n, beam_diameter_px, photons)
    intensities = _far_field_intensities(truth, probe, positions_px, subpixel)
    if photons > 0:
        intensities = rng.poisson(intensities).astype(np.float32)
    data = ScanData(
        intensities=intensities, positions_px=positions_px, pixel_size_m=pixel_size_m,
        source={"simulated": True, "seed": seed, "photons": photons},
    )
    return SimulatedScan(data=data, object_truth=truth, probe_truth=probe[None])


def simulated_object(positions_px: np.ndarray, size_px: int, seed: int) -> np.ndarray:
    """The test object (H, W) complex64 :func:`simulate` lights, covering the (N, 2) pixel positions."""
    return make_test_object(object_shape_for(positions_px, int(size_px)), seed=seed)


def simulated_probe(size_px: int, beam_diameter_px: float | None, photons: float) -> np.ndarray:
    """The probe (n, n) complex64 :func:`simulate` uses: ``photons`` counts in all (``DEFAULT_POWER`` when 0), a
    beam ``beam_diameter_px`` across (0.4 n when None)."""
    n = int(size_px)
    beam = beam_diameter_px if beam_diameter_px else 0.4 * n
    power = photons if photons > 0 else DEFAULT_POWER
    return defocused_pupil_probe(n, beam) * np.float32(np.sqrt(power))


def noise_free_pattern(obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray, index: int,
                       subpixel_windows: bool = False) -> np.ndarray:
    """Position ``index``'s noise-free pattern (n, n) float32 counts of the (N, 2) pixel positions: the same
    arithmetic as :func:`simulate`'s whole scan, so the same numbers, bit for bit."""
    return _far_field_block(obj, probe, positions_px[index:index + 1], subpixel_windows)[0]


def _far_field_intensities(obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray,
                           subpixel_windows: bool = False) -> np.ndarray:
    n = probe.shape[-1]
    out = np.empty((len(positions_px), n, n), dtype=np.float32)
    chunk = 64
    for s in range(0, len(positions_px), chunk):
        out[s:s + chunk] = _far_field_block(obj, probe, positions_px[s:s + chunk], subpixel_windows)
    return out


def _far_field_block(obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray,
                     subpixel_windows: bool) -> np.ndarray:
    """|F(probe x window)|^2 (B, n, n) float32 of a block of (B, 2) pixel positions."""
    n = probe.shape[-1]
    block = window_corners(positions_px)
    lit = probe[None]
    if subpixel_windows:
        fractions = subpixel.fractions_px(np, positions_px, block[:, 0], block[:, 1])
        lit = subpixel.moved_probes(np, probe[None], fractions)[0][:, 0]
    waves = np.stack([obj[r:r + n, c:c + n] for r, c in block]) * lit
    far = np.fft.fft2(waves, norm="ortho")
    return (far.real**2 + far.imag**2).astype(np.float32)


def simulation_inputs(params: Parameters, seed: int | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`simulate` for the scan the parameters describe (size, scanDims/step or
    spiral, beamSize, photons, seed): ``size_px``, ``positions_px`` (N, 2), ``beam_diameter_px``, ``photons``,
    ``pixel_size_m``, ``seed``."""
    seed = params.reconstruction.seed if seed is None and params.reconstruction.seed >= 0 else seed
    seed = 0 if seed is None else seed
    pixel_m = params.pixel_size_m
    return {
        "size_px": params.preprocessing.size_px,
        "positions_px": positions_px_from_parameters(params, seed=seed),
        "beam_diameter_px": params.experiment.beam_size_m / pixel_m,
        "photons": params.data.photons,
        "pixel_size_m": pixel_m,
        "seed": seed,
    }


def simulate_from_parameters(params: Parameters, seed: int | None = None) -> SimulatedScan:
    """Simulate the scan the parameters describe (:func:`simulation_inputs`)."""
    return simulate(**simulation_inputs(params, seed))

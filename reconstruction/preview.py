"""Downsampled uint8 preview frames of a running reconstruction (the only host copy inside the loop)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PREVIEW_POSITIONS = 1000  # a preview carries at most this many scan positions (every k-th)


@dataclass(frozen=True)
class PositionsPreview:
    """Every k-th scan position of a run (the live view draws the scan for every run): (m, 2) float32
    (row, col) pixels at the start and now, with ``stride`` k
    (m <= MAX_PREVIEW_POSITIONS); ``refined`` whether they move; ``flux`` None or (m,) float32 fitted relative flux
    of each (the square of its amplitude factor); ``errors`` None or (m,) float32 each one's Fourier error
    (``reconstruction.position_errors``; NaN where not measured yet)."""

    start_px: np.ndarray
    current_px: np.ndarray
    stride: int
    refined: bool = True
    flux: np.ndarray | None = None
    errors: np.ndarray | None = None  # (m,) float32 each one's Fourier error (NaN: not measured yet), or None


def positions_stride(n_positions: int, limit: int | None = None) -> int:
    """k: a preview carries every k-th of ``n_positions`` positions, at most ``limit`` (default
    ``MAX_PREVIEW_POSITIONS``) of them."""
    return max(1, math.ceil(n_positions / (limit or MAX_PREVIEW_POSITIONS)))


def preview_positions(start_px: np.ndarray, current_px: Any, asnumpy: Any = np.asarray,
                      limit: int | None = None, *, refined: bool = True,
                      intensity_scale: Any = None) -> PositionsPreview:
    """Every k-th of the (N, 2) host ``start_px`` and (host or device) ``current_px`` positions, and of the (N,)
    amplitude factors ``intensity_scale`` when given, at most ``limit`` (default ``MAX_PREVIEW_POSITIONS``); only
    the subsample is copied from the device."""
    stride = positions_stride(start_px.shape[0], limit)
    flux = None
    if intensity_scale is not None:
        flux = np.asarray(asnumpy(intensity_scale[::stride]), dtype=np.float32) ** 2
    return PositionsPreview(np.asarray(start_px[::stride], dtype=np.float32),
                            np.asarray(asnumpy(current_px[::stride]), dtype=np.float32), stride, refined, flux)


@dataclass
class Preview:
    """Images at most ``max_px`` on a side, each uint8 (h, w) with the float range it was scaled from.

    ``object_stride`` / ``probe_stride``: reconstruction pixels per preview pixel (so a preview pixel of the object
    is ``object_stride`` object pixels wide); ``probe_power``: each mode's share of the probe's total power
    (sum |P_k|^2 / sum |P|^2, over the full-resolution probe)."""

    iteration: int
    object_amplitude: np.ndarray
    object_phase: np.ndarray
    probe_amplitude: list[np.ndarray]
    object_amplitude_range: tuple[float, float]
    object_phase_range: tuple[float, float]
    probe_amplitude_range: list[tuple[float, float]] = field(default_factory=list)
    positions: PositionsPreview | None = None  # every k-th scan position (all runs of one device)
    probe_phase: list[np.ndarray] = field(default_factory=list)
    probe_phase_range: list[tuple[float, float]] = field(default_factory=list)
    probe_power: list[float] = field(default_factory=list)
    object_stride: int = 1
    probe_stride: int = 1
    diffraction: Any = None  # reconstruction.diffraction_preview.DiffractionPreview of one position, or None

    def images(self) -> list[tuple[str, np.ndarray, tuple[float, float]]]:
        """(name, uint8 image, (vmin, vmax)) for every image: the object's amplitude and phase, then each probe
        mode's amplitude and phase."""
        out = [
            ("object_amplitude", self.object_amplitude, self.object_amplitude_range),
            ("object_phase", self.object_phase, self.object_phase_range),
        ]
        for k, (img, rng) in enumerate(zip(self.probe_amplitude, self.probe_amplitude_range, strict=True)):
            out.append((f"probe_amplitude_{k}", img, rng))
            if k < len(self.probe_phase):
                out.append((f"probe_phase_{k}", self.probe_phase[k], self.probe_phase_range[k]))
        if self.diffraction is not None:
            d = self.diffraction
            out.append(("diffraction_measured", d.measured, d.log_range))
            out.append(("diffraction_model", d.model, d.log_range))
        return out

    def stride_of(self, name: str) -> int:
        """Reconstruction pixels per pixel of the image ``name`` (0 for a pattern: it has no sample-plane size)."""
        if name.startswith("diffraction_"):
            return 0
        return self.probe_stride if name.startswith("probe_") else self.object_stride


def _stride(shape: tuple[int, ...], max_px: int) -> int:
    return max(1, math.ceil(max(shape[-2:]) / max_px))


def _to_uint8(xp: Any, img: Any, asnumpy: Any) -> tuple[np.ndarray, tuple[float, float]]:
    vmin = float(xp.min(img))
    vmax = float(xp.max(img))
    scale = 255.0 / (vmax - vmin) if vmax > vmin else 0.0
    q = xp.clip((img - vmin) * scale + 0.5, 0, 255).astype(xp.uint8)
    return np.ascontiguousarray(asnumpy(q)), (vmin, vmax)


def make_preview(xp: Any, obj: Any, probe: Any, iteration: int, max_px: int = 512, asnumpy: Any = np.asarray,
                 region: tuple[slice, slice] | None = None) -> Preview:
    """Preview of ``obj`` (H, W) and ``probe`` (M, n, n) on the device; copies only the small images.

    ``region`` crops the object (e.g. to the scanned area) before downsampling.
    """
    o = obj[region] if region is not None else obj
    s = _stride(o.shape, max_px)
    o_small = o[::s, ::s]
    amp, amp_rng = _to_uint8(xp, xp.abs(o_small), asnumpy)
    ph, ph_rng = _to_uint8(xp, xp.angle(o_small), asnumpy)
    sp = _stride(probe.shape, max_px)
    probes, ranges, phases, phase_ranges = [], [], [], []
    for k in range(probe.shape[0]):
        small = probe[k, ::sp, ::sp]
        img, rng = _to_uint8(xp, xp.abs(small), asnumpy)
        probes.append(img)
        ranges.append(rng)
        img, rng = _to_uint8(xp, xp.angle(small), asnumpy)
        phases.append(img)
        phase_ranges.append(rng)
    power = np.asarray(asnumpy(xp.sum(xp.abs(probe) ** 2, axis=(-2, -1))), dtype=np.float64)
    total = float(power.sum())
    shares = [float(p / total) if total > 0 else 0.0 for p in power]
    return Preview(iteration, amp, ph, probes, amp_rng, ph_rng, ranges, probe_phase=phases,
                   probe_phase_range=phase_ranges, probe_power=shares, object_stride=s, probe_stride=sp)

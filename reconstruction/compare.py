"""Comparing two reconstructions of one object: alignment (sub-pixel shift, global phase) and the Fourier ring
correlation with the resolution at a threshold.

Conventions: images are (H, W) complex (or real) arrays on the same pixel grid; shifts are (rows, cols) pixels that
move ``moving`` onto ``reference``; frequencies are cycles per metre; the resolution is the half period
``1 / (2 q)`` at the first ring whose FRC falls below the threshold (so a curve that never falls gives the pixel
size, the Nyquist limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .state import Result

#: The 1/7 threshold (van Heel & Schatz 2005's fixed threshold, used by ptychography papers).
FRC_THRESHOLD = 1.0 / 7.0
#: The 1/2-bit threshold curve (van Heel & Schatz 2005, eq. 17 with SNR 0.2071 per half), for two independent
#: half-data reconstructions: it depends on the number of Fourier pixels in each ring.
HALF_BIT = "1/2-bit"
SMOOTH_RINGS = 5


def half_bit_threshold(ring_pixels: np.ndarray) -> np.ndarray:
    """The 1/2-bit threshold of rings holding ``ring_pixels`` Fourier pixels each:
    (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n)); it falls towards 0.1716 for large rings."""
    root = np.sqrt(np.maximum(np.asarray(ring_pixels, dtype=np.float64), 1.0))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


@dataclass(frozen=True)
class Alignment:
    """``aligned`` = ``moving`` shifted by ``shift_px`` (rows, cols) and multiplied by exp(-i ``phase_rad``)."""

    shift_px: tuple[float, float]
    phase_rad: float
    aligned: np.ndarray


@dataclass(frozen=True)
class FrcCurve:
    """FRC per ring: ``frequency_per_m`` (n,) ring centres, ``frc`` (n,), ``resolution_m`` (half period at the
    first fall below the threshold), ``pixel_m``; ``criterion`` "1/7"-style number or "1/2-bit",
    ``threshold_curve`` (n,) the threshold of each ring, ``threshold`` its value where the curve fell (or at
    Nyquist)."""

    frequency_per_m: np.ndarray
    frc: np.ndarray
    threshold: float
    resolution_m: float
    pixel_m: float
    threshold_curve: np.ndarray | None = None
    criterion: str = "1/7"


def _peak_offset(values: np.ndarray) -> float:
    """Sub-sample position of a peak from three samples around it (parabola through them)."""
    left, centre, right = (float(v) for v in values)
    denom = left - 2 * centre + right
    return 0.0 if denom == 0 else 0.5 * (left - right) / denom


def fourier_shift(image: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """``image`` (H, W) moved by ``shift_px`` (rows, cols) pixels, periodically, by the Fourier shift theorem."""
    h, w = image.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    ramp = np.exp(-2j * np.pi * (fy * shift_px[0] + fx * shift_px[1]))
    out = np.fft.ifft2(np.fft.fft2(image) * ramp)
    return out if np.iscomplexobj(image) else out.real


def _refine(product: np.ndarray, centre: tuple[float, float], span: float, steps: int) -> tuple[float, float]:
    """The peak of |cross-correlation| on a (steps x steps) grid of shifts within ``span`` px of ``centre``,
    evaluated exactly from the cross-power spectrum ``product`` by two small matrix DFTs (no full upsampling)."""
    h, w = product.shape
    offsets = np.linspace(-span, span, steps)
    rows = np.exp(2j * np.pi * np.outer(centre[0] + offsets, np.fft.fftfreq(h)))  # (steps, H)
    cols = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(w), centre[1] + offsets))  # (W, steps)
    cc = np.abs(rows @ product @ cols)
    i, j = np.unravel_index(int(np.argmax(cc)), cc.shape)
    return centre[0] + offsets[i], centre[1] + offsets[j]


def align(reference: np.ndarray, moving: np.ndarray) -> Alignment:
    """The shift and the global phase that best put ``moving`` on ``reference`` (same shape, (H, W)): the peak of
    the cross-correlation of the two (Hann-tapered) images, refined twice on finer grids of shifts; about 0.01 px
    for periodic images, about 0.1 px for crops of a larger object (measured in the tests)."""
    if reference.shape != moving.shape:
        raise ValueError(f"align: shapes differ, {reference.shape} and {moving.shape}")
    taper = _taper(*reference.shape)  # crops of a larger object are not periodic: no edge may dominate
    product = (np.fft.fft2((reference - reference.mean()) * taper)
               * np.conj(np.fft.fft2((moving - moving.mean()) * taper)))
    xc = np.abs(np.fft.ifft2(product))
    h, w = xc.shape
    r, c = np.unravel_index(int(np.argmax(xc)), xc.shape)
    dr = _peak_offset(xc[[(r - 1) % h, r, (r + 1) % h], c])
    dc = _peak_offset(xc[r, [(c - 1) % w, c, (c + 1) % w]])
    shift = ((r + dr + h / 2) % h - h / 2, (c + dc + w / 2) % w - w / 2)
    shift = _refine(product, shift, 0.5, 21)
    shift = _refine(product, shift, 0.05, 21)
    moved = fourier_shift(moving, shift)
    phase = float(np.angle(np.vdot(reference, moved))) if np.iscomplexobj(moved) else 0.0
    aligned = moved * np.exp(-1j * phase) if np.iscomplexobj(moved) else moved
    return Alignment((float(shift[0]), float(shift[1])), phase, aligned)


def _taper(h: int, w: int) -> np.ndarray:
    """A Hann window (so the periodic FFT sees no edge)."""
    return np.outer(np.hanning(h), np.hanning(w))


def fourier_ring_correlation(a: np.ndarray, b: np.ndarray, pixel_m: float,
                             threshold: float | str = FRC_THRESHOLD) -> FrcCurve:
    """FRC of two aligned (H, W) images of pixel ``pixel_m`` metres: per ring of one Fourier pixel,
    Re sum(F_a conj F_b) / sqrt(sum |F_a|^2 sum |F_b|^2), after a Hann taper; rings up to Nyquist. The resolution
    is read where the curve averaged over ``SMOOTH_RINGS`` rings first falls below ``threshold``: a number, or
    ``HALF_BIT`` for the 1/2-bit curve of each ring's pixel count (:func:`half_bit_threshold`)."""
    if a.shape != b.shape:
        raise ValueError(f"FRC: shapes differ, {a.shape} and {b.shape}")
    if pixel_m <= 0:
        raise ValueError(f"FRC: pixel_m={pixel_m} must be > 0")
    if isinstance(threshold, str) and threshold != HALF_BIT:
        raise ValueError(f"FRC: threshold={threshold!r} must be a number or {HALF_BIT!r}")
    n = min(a.shape)
    a, b = a[:n, :n], b[:n, :n]
    window = _taper(n, n)
    fa = np.fft.fftshift(np.fft.fft2((a - a.mean()) * window))
    fb = np.fft.fftshift(np.fft.fft2((b - b.mean()) * window))
    y, x = np.indices((n, n)) - n // 2
    ring = np.rint(np.hypot(y, x)).astype(int).ravel()
    rings = n // 2
    keep = ring < rings
    cross = np.bincount(ring[keep], (fa * np.conj(fb)).real.ravel()[keep], rings)
    pa = np.bincount(ring[keep], (np.abs(fa) ** 2).ravel()[keep], rings)
    pb = np.bincount(ring[keep], (np.abs(fb) ** 2).ravel()[keep], rings)
    frc = cross / np.sqrt(np.maximum(pa * pb, 1e-300))
    freq = np.arange(rings) / (n * pixel_m)
    if threshold == HALF_BIT:
        curve, criterion = half_bit_threshold(np.bincount(ring[keep], minlength=rings)), HALF_BIT
    else:
        curve, criterion = np.full(rings, float(threshold)), f"{float(threshold):.4g}"
    # the crossing is read on the curve averaged over SMOOTH_RINGS rings: one ring of m pixels scatters by about
    # 1/sqrt(m), enough for a single ring to dip below the threshold well before the curve does
    smooth = np.convolve(frc, np.ones(SMOOTH_RINGS) / SMOOTH_RINGS, mode="same")
    below = np.nonzero(smooth[1:] < curve[1:])[0]
    at = below[0] + 1 if below.size else rings - 1
    q = freq[at] if below.size else 1.0 / (2 * pixel_m)
    return FrcCurve(freq, frc, float(curve[at]), float(1.0 / (2 * q)), pixel_m, curve, criterion)


@dataclass(frozen=True)
class Comparison:
    """Two results on one grid: ``alignment`` of B onto A, ``difference`` (A - aligned B, (h, w) complex) over the
    scanned area of A, and their ``frc``."""

    alignment: Alignment
    difference: np.ndarray
    frc: FrcCurve

    @property
    def relative_difference(self) -> float:
        """||A - aligned B|| / ||A|| over the compared area."""
        reference = self.difference + self.alignment.aligned
        return float(np.linalg.norm(self.difference) / max(float(np.linalg.norm(reference)), 1e-30))


def scanned_area(obj: np.ndarray, positions_px: np.ndarray, window_px: int) -> tuple[slice, slice]:
    """The object rows and columns any window covers (positions are window corners)."""
    lo = np.clip(np.floor(positions_px.min(axis=0)).astype(int), 0, None)
    hi = np.minimum(np.ceil(positions_px.max(axis=0)).astype(int) + window_px, obj.shape)
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def compare_results(a: Result, b: Result, threshold: float | str = FRC_THRESHOLD) -> Comparison:
    """Compare two :class:`reconstruction.Result` of one object: B's object aligned onto A's over A's scanned area
    (both cut to the same size), the difference and the FRC in A's pixel size. ValueError when the pixel sizes
    differ by more than 0.1 % or either is unknown."""
    pa, pb = a.pixel_size_m, b.pixel_size_m
    if not pa or not pb:
        raise ValueError(f"compare: a pixel size is unknown (A {pa}, B {pb}): the FRC needs it")
    if abs(pa / pb - 1) > 1e-3:
        raise ValueError(f"compare: the pixel sizes differ, A {pa:.5g} m and B {pb:.5g} m; resample one first")
    rows, cols = scanned_area(a.object, a.positions_px, a.probe.shape[-1])
    h = min(rows.stop - rows.start, b.object.shape[0] - rows.start)
    w = min(cols.stop - cols.start, b.object.shape[1] - cols.start)
    if h < 8 or w < 8:
        raise ValueError(f"compare: the objects share only {h} x {w} pixels of A's scanned area")
    return compare_objects(a.object[rows.start:rows.start + h, cols.start:cols.start + w],
                           b.object[rows.start:rows.start + h, cols.start:cols.start + w], pa, threshold)


def compare_objects(a: np.ndarray, b: np.ndarray, pixel_m: float,
                    threshold: float | str = FRC_THRESHOLD) -> Comparison:
    """Two complex images of one field on one grid, (h, w) each, ``pixel_m`` wide pixels: B aligned onto A (sub-pixel
    shift, global phase), the difference and the FRC. ValueError naming the shapes when they differ."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"compare: the images must be 2-D of one shape, got A {a.shape} and B {b.shape}")
    ref, mov = a.astype(np.complex128), b.astype(np.complex128)
    found = align(ref, mov)
    return Comparison(found, ref - found.aligned, fourier_ring_correlation(ref, found.aligned, pixel_m, threshold))

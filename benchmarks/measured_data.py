"""The measured scan of issue 17 (tike's Siemens star, APS Velociprobe; provenance and license in
``benchmarks/data/tike_siemens_star/README.md``), read through ptychopy's own CXI reader, and a data residual
that depends on neither ptychopy's nor tike's code.

- :func:`read_archive` unpacks the vendored archive -> :class:`MeasuredScan` (the frames, tike's fractional
  window corners, tike's probe guess).
- :func:`central_subset` keeps the positions nearest the scan's centre (a small crop for CI).
- :func:`write_cxi` writes a scan as a detector would: frames with the beam at the centre, translations in metres,
  energy, distance and pixel size; :func:`load_cxi` reads it back with ``reconstruction.io`` (metadata from the
  file, crop to ``size_px`` around the centre, fftshift) -> ``ScanData``. Cropping the far field to ``size_px``
  doubles the object pixel for half the size; the reader scales the positions itself.
- :func:`crop_probe` crops a probe guess's far field the same way.
- :func:`amplitude_residual`: sum_j sum_q (sqrt(sum_m |F(c_j P_m O(p_j + .))|^2) - sqrt(I_j))^2 / sum I over
  valid pixels, with an orthonormal FFT and the object sampled at the fractional corners p_j either by
  bilinear interpolation (tike's convention) or by a Fourier shift (ptychopy's), so one function judges both
  codes' final object, probe and positions.
"""

from __future__ import annotations

import bz2
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reconstruction.errors import InputDataError

ARCHIVE = Path(__file__).resolve().parent / "data" / "tike_siemens_star" / "siemens-star-small.npz.bz2"
ARCHIVE_SHA256 = "dbce7715c1d4a7c28a48f684dacc7d343fbc5d06fe993d6ea31714ffb5c68d3d"
# Nominal geometry (the archive records none): only the ratio matters, through the object pixel
# wavelength * distance / (size * pixel), which turns the metres written back into the archive's pixels.
ENERGY_EV = 8800.0
DISTANCE_M = 1.92
DETECTOR_PIXEL_M = 75e-6
HC_EV_M = 1.239841984e-6
J_PER_EV = 1.602176634e-19
INTERPOLATIONS = ("bilinear", "fourier")


@dataclass(frozen=True)
class MeasuredScan:
    """intensities (N, n, n) float32 photon counts, zero frequency at [0, 0]; positions_px (N, 2) float64 window
    corners (row, col) in object pixels, fractional, the smallest at 0; probe (1, n, n) complex64 guess."""

    intensities: np.ndarray
    positions_px: np.ndarray
    probe: np.ndarray

    @property
    def size_px(self) -> int:
        return int(self.intensities.shape[-1])


def object_pixel_m(size_px: int) -> float:
    """The sample-plane pixel of the nominal geometry for patterns cropped to ``size_px``."""
    return HC_EV_M / ENERGY_EV * DISTANCE_M / (size_px * DETECTOR_PIXEL_M)


def read_archive(path: Path | str = ARCHIVE, *, check_sha256: bool = True) -> MeasuredScan:
    """The archive's one scan as a :class:`MeasuredScan`; a wrong checksum, a missing key or a wrong shape raises
    :class:`InputDataError` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"file {path}: not found (the measured scan is vendored in benchmarks/data/)")
    packed = path.read_bytes()
    if check_sha256 and hashlib.sha256(packed).hexdigest() != ARCHIVE_SHA256:
        raise InputDataError(f"file {path}: sha256 {hashlib.sha256(packed).hexdigest()} is not the vendored "
                             f"archive's {ARCHIVE_SHA256}")
    try:
        archive = np.load(io.BytesIO(bz2.decompress(packed)))
    except (OSError, ValueError, EOFError) as exc:
        raise InputDataError(f"file {path}: not a bzip2-packed .npz archive ({exc})") from exc
    with archive:
        missing = [k for k in ("data", "scan", "probe") if k not in archive.files]
        if missing:
            raise InputDataError(f"file {path}: no {', '.join(missing)} in the archive (it holds "
                                 f"{', '.join(archive.files)})")
        data, scan, probe = archive["data"], archive["scan"], archive["probe"]
    frames = data.reshape(-1, *data.shape[-2:])
    corners = scan.reshape(-1, 2).astype(np.float64)
    guess = probe.reshape(-1, *probe.shape[-2:])[:1]
    n = frames.shape[-1]
    if frames.shape[-2] != n or corners.shape[0] != frames.shape[0] or guess.shape[-2:] != (n, n):
        raise InputDataError(f"file {path}: data {data.shape}, scan {scan.shape} and probe {probe.shape} do not "
                             f"describe one scan of square frames")
    corners -= corners.min(axis=0)
    return MeasuredScan(frames.astype(np.float32), corners, guess.astype(np.complex64))


def central_subset(scan: MeasuredScan, count: int) -> MeasuredScan:
    """The ``count`` positions nearest the centre of the scanned area (in scan order), corners re-based to 0."""
    if not 1 <= count <= scan.positions_px.shape[0]:
        raise ValueError(f"count={count}: must be 1..{scan.positions_px.shape[0]}")
    p = scan.positions_px
    centre = (p.min(axis=0) + p.max(axis=0)) / 2
    keep = np.sort(np.argsort(((p - centre) ** 2).sum(axis=1), kind="stable")[:count])
    sub = p[keep]
    return MeasuredScan(scan.intensities[keep], sub - sub.min(axis=0), scan.probe)


def crop_probe(probe: np.ndarray, size_px: int) -> np.ndarray:
    """(M, n, n) probe -> (M, size, size): its far field (orthonormal FFT) cropped to the central ``size_px``
    frequencies, as the reader crops the patterns; the real-space pixel grows by n / size."""
    n = probe.shape[-1]
    if size_px == n:
        return probe.astype(np.complex64)
    if not 0 < size_px < n:
        raise ValueError(f"size_px={size_px}: must be 1..{n}")
    far = np.fft.fftshift(np.fft.fft2(probe, norm="ortho"), axes=(-2, -1))
    lo = n // 2 - size_px // 2
    far = np.fft.ifftshift(far[..., lo:lo + size_px, lo:lo + size_px], axes=(-2, -1))
    return np.fft.ifft2(far, norm="ortho").astype(np.complex64)


def write_cxi(path: Path | str, scan: MeasuredScan) -> Path:
    """A CXI 1.6 file as a beamline writes one: frames (N, n, n) float32 counts with the beam at the centre
    (``/entry_1/instrument_1/detector_1/data``, linked from ``data_1``), sample translations (N, 3) in metres
    (x = col, y = row), energy in J, detector distance and pixel size in m."""
    import h5py

    path = Path(path)
    pixel = object_pixel_m(scan.size_px)
    with h5py.File(path, "w") as f:
        f.create_dataset("cxi_version", data=160)
        entry = f.create_group("entry_1")
        det = entry.create_group("instrument_1/detector_1")
        det.create_dataset("data", data=np.fft.fftshift(scan.intensities, axes=(-2, -1)),
                           chunks=(1, scan.size_px, scan.size_px))
        det.create_dataset("distance", data=DISTANCE_M)
        det.create_dataset("x_pixel_size", data=DETECTOR_PIXEL_M)
        det.create_dataset("y_pixel_size", data=DETECTOR_PIXEL_M)
        entry["instrument_1/source_1/energy"] = ENERGY_EV * J_PER_EV
        entry.create_group("data_1")["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        xyz = np.zeros((scan.positions_px.shape[0], 3))
        xyz[:, 0] = scan.positions_px[:, 1] * pixel
        xyz[:, 1] = scan.positions_px[:, 0] * pixel
        entry.create_dataset("sample_1/geometry_1/translation", data=xyz)
    return path


def load_cxi(path: Path | str, frames: int, size_px: int, *, device: str = "cpu") -> Any:
    """``ScanData`` of a file :func:`write_cxi` wrote, read by ``reconstruction.io``: the file's energy, distance,
    pixel size and translations; patterns cropped to ``size_px`` around the beam and fftshifted back."""
    import h5py

    from reconstruction.io.reader import read_scan
    from reconstruction.io.scan_metadata import apply_file_metadata, given_in_cmdstr
    from reconstruction.parameters import Parameters

    with h5py.File(path, "r") as f:
        n = int(f["entry_1/instrument_1/detector_1/data"].shape[-1])
    cmdstr = (f"./ptycho -fp={path} -scanDims={frames},1 -size={size_px} -qxy={n // 2},{n // 2} -sqrtData "
              f"-fftShiftData -device={device}")
    params, _ = apply_file_metadata(Parameters.from_cmdstr(cmdstr), given_in_cmdstr(cmdstr))
    return read_scan(params)


# ---------------------------------------------------------------------------------------------- the residual
def _windows_bilinear(obj: np.ndarray, corners: np.ndarray, n: int) -> np.ndarray:
    """(B, n, n) object windows O(p + y), bilinear between the four pixels around each sample."""
    base = np.floor(corners).astype(np.int64)
    t = (corners - base).astype(np.float32)
    r = base[:, 0, None, None] + np.arange(n)[None, :, None]
    c = base[:, 1, None, None] + np.arange(n)[None, None, :]
    tr, tc = t[:, 0, None, None], t[:, 1, None, None]
    return ((1 - tr) * (1 - tc) * obj[r, c] + (1 - tr) * tc * obj[r, c + 1]
            + tr * (1 - tc) * obj[r + 1, c] + tr * tc * obj[r + 1, c + 1]).astype(np.complex64)


def _windows_fourier(obj: np.ndarray, corners: np.ndarray, n: int) -> np.ndarray:
    """(B, n, n) object windows O(p + y) by a Fourier shift of an (n + 4)-wide window around each (circular over
    that window; the two-pixel border takes the wrap-around)."""
    pad = 2
    base = np.floor(corners).astype(np.int64)
    t = corners - base
    m = n + 2 * pad
    r = base[:, 0, None, None] - pad + np.arange(m)[None, :, None]
    c = base[:, 1, None, None] - pad + np.arange(m)[None, None, :]
    k = np.fft.fftfreq(m)
    ramp = (np.exp(2j * np.pi * t[:, 0, None] * k[None])[:, :, None]
            * np.exp(2j * np.pi * t[:, 1, None] * k[None])[:, None, :])
    moved = np.fft.ifft2(np.fft.fft2(obj[r, c]) * ramp)
    return moved[:, pad:pad + n, pad:pad + n].astype(np.complex64)


def amplitude_residual(intensities: np.ndarray, obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray,
                       *, interpolation: str = "bilinear", intensity_scale: np.ndarray | None = None,
                       valid: np.ndarray | None = None, chunk: int = 64) -> float:
    """sum over frames and valid pixels of (|model| - sqrt(I))^2, divided by sum of I over the same pixels.

    intensities (N, n, n) counts, zero frequency at [0, 0]; obj (H, W) complex; probe (M, n, n) or (n, n)
    complex (modes add incoherently); positions_px (N, 2) fractional window corners (row, col) in ``obj``'s
    pixels; intensity_scale (N,) amplitude factors c_j or None; valid None, (n, n) or (N, n, n) bool. Windows that
    leave the object raise ValueError naming the first.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r}: one of {', '.join(INTERPOLATIONS)}")
    probe = np.asarray(probe, dtype=np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    n_frames, n = intensities.shape[0], intensities.shape[-1]
    corners = np.asarray(positions_px, dtype=np.float64)
    if corners.shape != (n_frames, 2) or probe.shape[-2:] != (n, n):
        raise ValueError(f"positions {corners.shape} and probe {probe.shape} do not fit {n_frames} frames of {n}^2")
    before, after = (2, n + 2) if interpolation == "fourier" else (0, n + 1)  # pixels read around a corner
    base = np.floor(corners)
    outside = ((base - before < 0).any(axis=1) | (base[:, 0] + after > obj.shape[0])
               | (base[:, 1] + after > obj.shape[1]))
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise ValueError(f"position {bad} {corners[bad].tolist()}: its window ({interpolation}) leaves the "
                         f"{obj.shape} object")
    windows = _windows_fourier if interpolation == "fourier" else _windows_bilinear
    obj = np.asarray(obj, dtype=np.complex64)
    misfit = 0.0
    total = 0.0
    for s in range(0, n_frames, chunk):
        e = min(s + chunk, n_frames)
        waves = windows(obj, corners[s:e], n)[:, None] * probe[None]
        if intensity_scale is not None:
            waves = waves * np.asarray(intensity_scale[s:e], dtype=np.float32)[:, None, None, None]
        model = np.sqrt((np.abs(np.fft.fft2(waves, norm="ortho")) ** 2).sum(axis=1))
        measured = intensities[s:e].astype(np.float64)
        diff = (model - np.sqrt(measured)) ** 2
        if valid is not None:
            v = valid if valid.ndim == 2 else valid[s:e]
            diff, measured = diff * v, measured * v
        misfit += float(diff.sum())
        total += float(measured.sum())
    return misfit / total

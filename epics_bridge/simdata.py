"""Simulated scan data for ``ptychopy simioc``: deterministic far-field patterns in the original's file layout.

A fixed test object (smooth phase and amplitude features) is scanned by a Gaussian probe with a curved phase on
a row-major raster; each pattern is ``|FFT(probe * patch)|^2`` (orthonormal), scaled to about
``photons`` counts, rounded, and stored *centred* (zero frequency in the middle) as uint32, the way a
detector records it (the template reads it with ``-sqrtData -fftShiftData``). Files hold one scan row each:
``{name}_data_{index:06d}.h5`` with ``/entry/data/data`` of shape ``(cols, n, n)``; a small master file
``{name}.h5`` describes the scan and links the data files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASET = "/entry/data/data"


@dataclass(frozen=True)
class SimGeometry:
    """The simulated experiment."""

    rows: int = 4
    cols: int = 5
    size_px: int = 64
    energy_kev: float = 8.8
    detector_distance_m: float = 1.9
    detector_pixel_m: float = 75e-6
    step_m: tuple[float, float] = (0.5e-6, 0.5e-6)
    photons: float = 1e6

    @property
    def wavelength_m(self) -> float:
        return 12.398419843320026e-10 / self.energy_kev

    @property
    def pixel_size_m(self) -> float:
        return self.wavelength_m * self.detector_distance_m / (self.size_px * self.detector_pixel_m)

    @property
    def n_points(self) -> int:
        return self.rows * self.cols


def positions_px(geom: SimGeometry) -> np.ndarray:
    """``(rows*cols, 2)`` integer top-left corners, row-major."""
    step = np.array(geom.step_m) / geom.pixel_size_m
    r, c = np.meshgrid(np.arange(geom.rows), np.arange(geom.cols), indexing="ij")
    return np.rint(np.stack([r.ravel() * step[0], c.ravel() * step[1]], axis=1)).astype(int)


def sim_object(shape: tuple[int, int]) -> np.ndarray:
    """A deterministic complex object: smooth phase waves plus a few discs of lower transmission."""
    y, x = np.mgrid[0: shape[0], 0: shape[1]].astype(np.float64)
    phase = 0.6 * np.sin(2 * np.pi * x / 37.0) * np.cos(2 * np.pi * y / 29.0)
    amp = np.ones(shape)
    for cy, cx, rad in ((0.3, 0.3, 0.12), (0.6, 0.7, 0.08), (0.75, 0.25, 0.1)):
        disc = (y - cy * shape[0]) ** 2 + (x - cx * shape[1]) ** 2 < (rad * min(shape)) ** 2
        amp[disc] = 0.7
        phase[disc] += 0.8
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def sim_probe(n: int) -> np.ndarray:
    """A Gaussian probe (sigma n/8) with a quadratic phase."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) - n / 2
    r2 = (x**2 + y**2) / (n / 8) ** 2
    return (np.exp(-r2 / 2) * np.exp(1j * 0.3 * r2)).astype(np.complex64)


def simulate_patterns(geom: SimGeometry) -> np.ndarray:
    """``(rows*cols, n, n)`` uint32 centred intensities (counts)."""
    n = geom.size_px
    pos = positions_px(geom)
    obj = sim_object((int(pos[:, 0].max()) + n, int(pos[:, 1].max()) + n))
    probe = sim_probe(n)
    out = np.empty((len(pos), n, n), dtype=np.uint32)
    scale = geom.photons / float(np.sum(np.abs(probe) ** 2))
    for k, (r, c) in enumerate(pos):
        psi = probe * obj[r: r + n, c: c + n]
        far = np.fft.fftshift(np.fft.fft2(psi, norm="ortho"))
        out[k] = np.rint(np.abs(far) ** 2 * scale).astype(np.uint32)
    return out


def data_file(directory: str | Path, name: str, index: int) -> Path:
    return Path(directory) / f"{name}_data_{index:06d}.h5"


def write_master(directory: str | Path, name: str, geom: SimGeometry, scan_number: int, n_files: int,
                 first_index: int = 1) -> Path:
    """The scan's small master file (metadata + external links to the data files)."""
    import h5py

    path = Path(directory) / f"{name}.h5"
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        e = f.create_group("entry")
        e.attrs["scan_number"] = scan_number
        e.attrs["scan_dims"] = (geom.rows, geom.cols)
        e.attrs["energy_keV"] = geom.energy_kev
        e.attrs["step_m"] = geom.step_m
        e.attrs["detector_distance_m"] = geom.detector_distance_m
        d = e.create_group("data")
        for k in range(n_files):
            d[f"data_{first_index + k:06d}"] = h5py.ExternalLink(data_file(".", name, first_index + k).name, DATASET)
    os.replace(tmp, path)
    return path


def write_scan_files(directory: str | Path, name: str, geom: SimGeometry, first_index: int = 1,
                     patterns: np.ndarray | None = None) -> list[Path]:
    """Write a whole simulated scan at once (one file per row, each renamed into place when complete)."""
    import h5py

    data = simulate_patterns(geom) if patterns is None else patterns
    paths = []
    for row in range(geom.rows):
        path = data_file(directory, name, first_index + row)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.create_dataset(DATASET, data=data[row * geom.cols: (row + 1) * geom.cols])
        os.replace(tmp, path)
        paths.append(path)
    return paths

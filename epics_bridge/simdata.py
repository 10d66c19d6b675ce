"""Simulated scan data for ``ptychopy simioc``: ``reconstruction.simulate`` patterns in the original's file layout.

The intensities come from :func:`reconstruction.simulate.simulate_from_parameters` (the engines' own forward
model: the test object, a defocused probe, the raster the parameters describe, Poisson noise with a fixed seed),
and are stored *centred* (zero frequency in the middle) and rounded to uint32 counts, the way a detector records
them; the bridge's template reads them back with ``-sqrtData -fftShiftData``. Files hold one scan row each:
``{name}_data_{index:06d}.h5`` with ``/entry/data/data`` of shape ``(cols, n, n)``; a small master file
``{name}.h5`` describes the scan and links the data files. With ``nxmx`` (``ptychopy simioc --nxmx``) each data
file also records the geometry as an Eiger's NXmx file does (:func:`write_nxmx_metadata`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reconstruction import Parameters

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
    beam_size_m: float = 1.0e-6
    photons: float = 1e6
    seed: int = 0

    @property
    def wavelength_m(self) -> float:
        return 12.398419843320026e-10 / self.energy_kev

    @property
    def n_points(self) -> int:
        return self.rows * self.cols

    def parameters(self) -> Parameters:
        """The parameters that describe this experiment (what a correct bridge template reproduces)."""
        return Parameters().replace({
            "experiment.wavelength_m": self.wavelength_m, "experiment.detector_distance_m": self.detector_distance_m,
            "experiment.detector_pixel_m": self.detector_pixel_m, "experiment.beam_size_m": self.beam_size_m,
            "experiment.scan_dims": (self.rows, self.cols), "experiment.step_m": self.step_m,
            "preprocessing.size_px": self.size_px, "data.photons": self.photons, "reconstruction.seed": self.seed,
        })


def simulate_patterns(geom: SimGeometry) -> np.ndarray:
    """``(rows*cols, n, n)`` uint32 centred intensities (counts), row-major over the raster."""
    from reconstruction.simulate import simulate_from_parameters

    sim = simulate_from_parameters(geom.parameters(), seed=geom.seed)
    centred = np.fft.fftshift(sim.data.intensities, axes=(-2, -1))
    return np.rint(np.clip(centred, 0, None)).astype(np.uint32)


def write_nxmx_metadata(f: Any, geom: SimGeometry) -> None:
    """The detector geometry in an open data file, where NXmx puts it: wavelength (angstrom), detector distance,
    pixel size (m), beam centre (pixels: the centre of the centred patterns) and an all-good ``pixel_mask``."""
    import h5py

    def number(group: h5py.Group, name: str, value: float, units: str) -> None:
        group.create_dataset(name, data=value).attrs["units"] = units

    entry = f.require_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    instrument = entry.require_group("instrument")
    instrument.attrs["NX_class"] = "NXinstrument"
    beam = instrument.require_group("beam")
    beam.attrs["NX_class"] = "NXbeam"
    number(beam, "incident_wavelength", geom.wavelength_m * 1e10, "angstrom")
    det = instrument.require_group("detector")
    det.attrs["NX_class"] = "NXdetector"
    number(det, "detector_distance", geom.detector_distance_m, "m")
    number(det, "x_pixel_size", geom.detector_pixel_m, "m")
    number(det, "y_pixel_size", geom.detector_pixel_m, "m")
    number(det, "beam_center_x", geom.size_px // 2, "pixel")
    number(det, "beam_center_y", geom.size_px // 2, "pixel")
    det.create_dataset("pixel_mask", data=np.zeros((geom.size_px, geom.size_px), np.uint32))


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
                     patterns: np.ndarray | None = None, nxmx: bool = False) -> list[Path]:
    """Write a whole simulated scan at once (one file per row, each renamed into place when complete); with
    ``nxmx`` each file records the geometry (:func:`write_nxmx_metadata`)."""
    import h5py

    data = simulate_patterns(geom) if patterns is None else patterns
    paths = []
    for row in range(geom.rows):
        path = data_file(directory, name, first_index + row)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.create_dataset(DATASET, data=data[row * geom.cols: (row + 1) * geom.cols])
            if nxmx:
                write_nxmx_metadata(f, geom)
        os.replace(tmp, path)
        paths.append(path)
    return paths

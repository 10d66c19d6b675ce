"""What a scan file records about its geometry, each value marked as read from the file or left to the user.

Read from the first data file of a scan (read-only, no frames):

- NeXus/NXmx master files (Eiger/Dectris): ``/entry/instrument/detector/{detector_distance, x_pixel_size,
  beam_center_x, beam_center_y, pixel_mask}``, ``/entry/instrument/beam/incident_wavelength`` or
  ``incident_energy``, ``/entry/instrument/monochromator/{wavelength, energy}``,
  ``detectorSpecific/photon_energy``; frames in ``/entry/data/data`` or ``data_000001``...
- CXI (PyNX, ptychodus, cdtools): ``/entry_1/instrument_1/source_1/{energy, wavelength}``,
  ``/entry_1/instrument_1/detector_1/{distance, x_pixel_size, beam_center_x/y, mask}``, frames in
  ``/entry_1/data_1/data`` or ``detector_1/data``, positions in ``/entry_1/sample_1/geometry_1/translation``.

A ``units`` attribute is honoured (lengths: m, mm, um, nm, angstrom; energies: eV, keV, J; beam centre: pixel or a
length); without one, lengths are metres, a CXI energy is joules (CXI's unit) and a NeXus energy electronvolts.
Unknown units, non-numeric values and a position count that differs from the frame count raise
:class:`InputDataError` naming the file and dataset.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ..errors import InputDataError
from .errors import where
from .hdf5_reader import frame_datasets, opened
from .positions_file import POSITION_DATASETS

if TYPE_CHECKING:
    from ..parameters import Parameters

HC_EV_M = 1.239841984e-6  # h c in eV m: wavelength_m = HC_EV_M / energy_eV
EV_PER_J = 1.0 / 1.602176634e-19
LENGTH_M = {"m": 1.0, "meter": 1.0, "metre": 1.0, "meters": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6,
            "micron": 1e-6, "microns": 1e-6, "nm": 1e-9, "angstrom": 1e-10, "a": 1e-10, "å": 1e-10}
ENERGY_EV = {"ev": 1.0, "kev": 1e3, "j": EV_PER_J}
PIXEL_UNITS = ("pixel", "pixels", "px")

DETECTORS = ("/entry/instrument/detector", "/entry_1/instrument_1/detector_1")
FRAME_DATASETS = ("/entry/data/data", "/entry_1/data_1/data", "/entry_1/instrument_1/detector_1/data",
                  "/entry/instrument/detector/data")
WAVELENGTHS = ("/entry/instrument/beam/incident_wavelength", "/entry/instrument/monochromator/wavelength",
               "/entry_1/instrument_1/source_1/wavelength", "/entry_1/instrument_1/beam_1/incident_wavelength")
ENERGIES = ("/entry/instrument/beam/incident_energy", "/entry/instrument/monochromator/energy",
            "/entry/instrument/detector/detectorSpecific/photon_energy", "/entry/instrument/source/energy",
            "/entry_1/instrument_1/source_1/energy", "/entry_1/instrument_1/beam_1/incident_energy")
MASKS = ("/entry/instrument/detector/pixel_mask", "/entry/instrument/detector/detectorSpecific/pixel_mask",
         "/entry_1/instrument_1/detector_1/mask")


@dataclass(frozen=True)
class Known:
    """One value and where it came from: ``source`` is "file F, dataset D", or "" when the file does not
    record it (then ``value`` is None and the user must give it)."""

    value: Any = None
    source: str = ""

    @property
    def from_file(self) -> bool:
        return bool(self.source)


@dataclass(frozen=True)
class ScanMetadata:
    """What the first data file records. ``frames_dataset`` is where the frames are (None for TIFF/raw);
    ``beam_center_px`` is (row, col) = (beam_center_y, beam_center_x); ``mask`` and ``positions`` are
    ``file::/dataset`` references (read lazily by ``-mask`` and ``-lf``); ``frames`` is the first file's count."""

    layout: str
    frames_dataset: str | None = None
    frames: int = 0
    wavelength_m: Known = Known()
    energy_eV: Known = Known()
    detector_distance_m: Known = Known()
    detector_pixel_m: Known = Known()
    beam_center_px: Known = Known()
    mask: Known = Known()
    positions: Known = Known()
    scan_shape: Known = Known()
    positions_count: int = 0

    def fields(self) -> dict[str, Known]:
        """Every described quantity by name (the ``Known`` fields)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Known)}

    def left_to_user(self) -> list[str]:
        """Names of the quantities the file does not record."""
        return [name for name, known in self.fields().items() if not known.from_file]


def _units(ds: h5py.Dataset) -> str:
    units = ds.attrs.get("units", ds.attrs.get("unit", ""))
    if isinstance(units, bytes):
        units = units.decode(errors="replace")
    if isinstance(units, np.ndarray):
        units = str(units.reshape(-1)[0]) if units.size else ""
    return str(units).strip()


def _number(f: h5py.File, name: str, count: int = 1) -> tuple[np.ndarray, str] | None:
    """The dataset ``name`` as ``count`` float64 numbers and its units, None when absent."""
    ds = f.get(name)
    if ds is None:
        return None
    if not isinstance(ds, h5py.Dataset):
        raise InputDataError(f"{where(f.filename, name)}: is a group; expected a number")
    try:
        arr = np.asarray(ds[()], dtype=np.float64).reshape(-1)
    except (OSError, ValueError, TypeError) as exc:
        raise InputDataError(f"{where(f.filename, name)}: expected a number, got {ds.dtype} ({exc})") from exc
    if arr.size < count or not np.isfinite(arr[:count]).all():
        raise InputDataError(f"{where(f.filename, name)}: expected {count} finite number(s), got {arr[:4]}")
    return arr[:count], _units(ds)


def _scale(f: h5py.File, name: str, units: str, table: dict[str, float], default: str) -> float:
    key = (units or default).lower()
    if key not in table:
        raise InputDataError(f"{where(f.filename, name)}: unknown units {units!r}; expected one of "
                             f"{', '.join(table)}")
    return table[key]


def _length_m(f: h5py.File, names: Iterable[str]) -> Known:
    for name in names:
        found = _number(f, name)
        if found is not None:
            value = float(found[0][0]) * _scale(f, name, found[1], LENGTH_M, "m")
            if value <= 0:
                raise InputDataError(f"{where(f.filename, name)}: expected a positive length, got {value:g} m")
            return Known(value, where(f.filename, name))
    return Known()


def _energy(f: h5py.File) -> tuple[Known, Known]:
    """(wavelength_m, energy_eV) from the first wavelength or energy dataset found."""
    wavelength = _length_m(f, WAVELENGTHS)
    if wavelength.from_file:
        return wavelength, Known(HC_EV_M / wavelength.value, wavelength.source)
    for name in ENERGIES:
        found = _number(f, name)
        if found is not None:
            default = "j" if name.startswith("/entry_1/") else "ev"
            ev = float(found[0][0]) * _scale(f, name, found[1], ENERGY_EV, default)
            if ev <= 0:
                raise InputDataError(f"{where(f.filename, name)}: expected a positive energy, got {ev:g} eV")
            return Known(HC_EV_M / ev, where(f.filename, name)), Known(ev, where(f.filename, name))
    return Known(), Known()


def _beam_center(f: h5py.File, pixel_m: Known) -> Known:
    for detector in DETECTORS:
        cx, cy = f"{detector}/beam_center_x", f"{detector}/beam_center_y"
        x, y = _number(f, cx), _number(f, cy)
        if x is None or y is None:
            continue
        centre = []
        for name, (value, units) in ((cy, y), (cx, x)):
            if units.lower() in PIXEL_UNITS:
                centre.append(float(value[0]))
            elif units.lower() in LENGTH_M:
                if not pixel_m.from_file:
                    raise InputDataError(f"{where(f.filename, name)}: a beam centre in {units} needs the "
                                         f"detector pixel size ({detector}/x_pixel_size), which is missing")
                centre.append(float(value[0]) * LENGTH_M[units.lower()] / pixel_m.value)
            elif not units:
                centre.append(float(value[0]))  # NXmx: pixels when unstated
            else:
                raise InputDataError(f"{where(f.filename, name)}: unknown units {units!r}; expected pixel or "
                                     f"one of {', '.join(LENGTH_M)}")
        return Known((int(round(centre[0])), int(round(centre[1]))), where(f.filename, f"{cy}, {cx}"))
    return Known()


def _frames_dataset(f: h5py.File, dataset: str) -> tuple[str | None, int]:
    """The frames dataset: ``dataset`` when it (or its ``_NNNNNN`` parts) exists, else the first standard
    NeXus/CXI location that does; and the frame count (0 when none is found)."""
    for name in (dataset, *FRAME_DATASETS):
        try:
            parts = frame_datasets(f, name)
        except InputDataError:
            continue
        frames = sum(int(p.shape[0]) if p.ndim == 3 else 1 for p in parts)
        return name, frames
    return None, 0


def _positions(f: h5py.File, path: Path) -> tuple[Known, int]:
    """The first position dataset of :data:`POSITION_DATASETS` as an ``-lf`` reference, and its count."""
    for name in POSITION_DATASETS:
        ds = f.get(name)
        if isinstance(ds, h5py.Dataset):
            if ds.ndim != 2 or min(ds.shape) not in (2, 3):
                raise InputDataError(f"{where(path, name)}: positions have shape {ds.shape}; expected (N, 2), "
                                     f"(N, 3) or (3, N)")
            return Known(f"{path}::{name}", where(path, name)), int(max(ds.shape))
    return Known(), 0


def check_positions(meta: ScanMetadata, frames: int) -> None:
    """Raise :class:`InputDataError` when the file's positions do not number ``frames`` (the scan's frames)."""
    if meta.positions.from_file and meta.positions_count != frames:
        raise InputDataError(f"{meta.positions.source}: holds {meta.positions_count} positions but the scan has "
                             f"{frames} frames; they must match")


def read_hdf5_metadata(path: Path | str, dataset: str = "/entry/data/data") -> ScanMetadata:
    """Everything ``path`` (an HDF5, NeXus or CXI file) records about the scan; see the module docstring."""
    path = Path(path)
    with opened(path) as f:
        layout = "CXI" if "entry_1" in f else "NeXus" if "entry" in f else "HDF5"
        if layout == "NeXus" and "detector_distance" in f.get("entry/instrument/detector", {}):
            layout = "NXmx"
        frames_dataset, frames = _frames_dataset(f, dataset)
        wavelength, energy = _energy(f)
        pixel = _length_m(f, [f"{d}/x_pixel_size" for d in DETECTORS])
        pixel_y = _length_m(f, [f"{d}/y_pixel_size" for d in DETECTORS])
        if pixel.from_file and pixel_y.from_file and not np.isclose(pixel.value, pixel_y.value, rtol=1e-6):
            raise InputDataError(f"{pixel_y.source}: y pixel size {pixel_y.value:g} m differs from the x pixel "
                                 f"size {pixel.value:g} m; ptychopy needs square detector pixels (-dx_d)")
        distance = _length_m(f, [f"{d}/{n}" for d in DETECTORS for n in ("detector_distance", "distance")])
        mask = next((Known(f"{path}::{m}", where(path, m)) for m in MASKS if isinstance(f.get(m), h5py.Dataset)),
                    Known())
        positions, count = _positions(f, path)
        return ScanMetadata(layout, frames_dataset, frames, wavelength, energy, distance, pixel,
                            _beam_center(f, pixel), mask, positions, positions_count=count)


def read_scan_metadata(path: Path | str, dataset: str = "/entry/data/data") -> ScanMetadata:
    """The metadata of one data file: HDF5/NeXus/CXI as :func:`read_hdf5_metadata`; TIFF and the original's
    raw files record nothing but frames (every quantity is left to the user)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return ScanMetadata("TIFF")
    if suffix in (".bin", ".csv"):
        return ScanMetadata("raw")
    return read_hdf5_metadata(path, dataset)


_DECTRIS_DATA = re.compile(r"^(?P<series>.+)_data_\d{6}\.(?P<ext>h5|hdf5|nxs)$")


def master_of(data_file: Path | str) -> Path | None:
    """The Dectris/Eiger master file beside a data file of its series (``X_data_000001.h5`` -> ``X_master.h5``),
    None when the name is not of that form or no master is there."""
    path = Path(data_file)
    m = _DECTRIS_DATA.match(path.name)
    if m is None:
        return None
    master = path.with_name(f"{m['series']}_master.{m['ext']}")
    return master if master.is_file() else None


def read_series_metadata(first_file: Path | str, dataset: str = "/entry/data/data") -> ScanMetadata:
    """What a scan's first data file records or, when it records no geometry and is a data file of an Eiger
    series, what the series' master file records (the frames stay those of the data files: the master's
    ``frames_dataset`` is dropped)."""
    meta = read_scan_metadata(first_file, dataset)
    if any(k.from_file for k in meta.fields().values()):
        return meta
    master = master_of(first_file)
    if master is None:
        return meta
    found = read_hdf5_metadata(master, dataset)
    return dataclasses.replace(found, frames_dataset=None, frames=meta.frames)


#: parameter leaf each read quantity fills
PARAMETER_OF = {"wavelength_m": "experiment.wavelength_m", "detector_distance_m": "experiment.detector_distance_m",
                "detector_pixel_m": "experiment.detector_pixel_m", "beam_center_px": "preprocessing.crop_center_px",
                "mask": "preprocessing.bad_pixel_mask", "positions": "experiment.positions_file"}


def parameter_changes(meta: ScanMetadata, user_given: Iterable[str] = ()) -> dict[str, Any]:
    """``{"group.name": value}`` for every quantity the file records, except the parameters in ``user_given``
    (user-given values override the file's). The frames dataset fills ``data.hdf5_path``."""
    given = set(user_given)
    changes: dict[str, Any] = {}
    if meta.frames_dataset and "data.hdf5_path" not in given:
        changes["data.hdf5_path"] = meta.frames_dataset
    for name, known in meta.fields().items():
        leaf = PARAMETER_OF.get(name)
        if leaf and known.from_file and leaf not in given:
            changes[leaf] = known.value
    return changes


def describe_metadata(meta: ScanMetadata) -> list[str]:
    """One line per quantity: its value and where it was read, or "left to the user"."""
    lines = []
    for name, known in meta.fields().items():
        lines.append(f"{name}: {known.value} ({known.source})" if known.from_file else f"{name}: left to the user")
    return lines


def user_given(params: Parameters) -> set[str]:
    """The parameters that differ from the defaults (taken as given by the user)."""
    return set(params.changed())


def given_in_cmdstr(cmdstr: str) -> set[str]:
    """The parameter leaves a command string sets itself (``-energy`` counts as the wavelength)."""
    from ..parameters.cmdstr import parse_cmdstr
    from ..parameters.model import ENERGY_PATH, WAVELENGTH_PATH, spec_for_flag

    given = set()
    for flag, _ in parse_cmdstr(cmdstr):
        spec = spec_for_flag(str(flag))
        if spec is not None:
            given.add(WAVELENGTH_PATH if spec.path == ENERGY_PATH else spec.path)
    return given


def apply_file_metadata(params: Parameters, given: Iterable[str]) -> tuple[Parameters, ScanMetadata]:
    """``params`` with what the scan's first data file (or its Eiger master, :func:`read_series_metadata`) records
    (:func:`parameter_changes`), except the leaves
    in ``given``; file positions must number the scan's points (``scanDims`` rows*cols). Returns the new
    parameters and the metadata."""
    from .patterns import file_list

    d = params.data
    first = file_list(d.file_pattern, params.n_positions, d.frames_per_file, d.first_file_index)[0]
    meta = read_series_metadata(first, d.hdf5_path)
    changes = parameter_changes(meta, given)
    if "experiment.positions_file" in changes:
        check_positions(meta, params.n_positions)
    return params.replace(changes), meta

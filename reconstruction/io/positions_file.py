"""Scan positions from files: the original's ``-lf`` CSV and position datasets inside HDF5 files.

Both hold metres, (axis 0, axis 1) = (row/"y", col/"x") per point, in scan order. ``-lf`` selects the
source by its form:

- ``pos.csv`` (any name not below): one ``a, b`` line per point (commas or white space; ``#`` comments);
- ``pos.h5::/entry/positions`` (or ``.h5``/``.hdf5``/``.nxs``/``.cxi`` without ``::`` and one of
  :data:`POSITION_DATASETS`): an ``(N, 2)`` (or ``(2, N)``) dataset, or a CXI ``translation`` ``(N, 3)``
  (or PyNX's ``(3, N)``; x = axis 1, y = axis 0, z ignored; signs from the detector basis,
  :func:`cxi_axis_signs`); so ``-lf=result.h5`` reuses the positions of an earlier ptychopy result, refined ones
  included;
- ``::/entry/positions``: that dataset inside the first data file of the scan;
- ``scan.mda``: the positions an EPICS sscan MDA file recorded, measured readbacks where the scan had readback
  PVs (:func:`reconstruction.io.mda.read_positions_mda`: outer positioner = axis 0, inner = axis 1).

A dataset's ``units`` attribute (m, mm, um, nm) is honoured; without one, metres.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import InputDataError
from .errors import where
from .hdf5_reader import get_dataset, opened
from .mda import read_positions_mda
from .ptychodus_product import is_ptychodus_product, read_ptychodus_product

if TYPE_CHECKING:
    from ..parameters import Parameters

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".cxi")
POSITION_DATASETS = ("/positions", "/entry/positions", "/entry/data/positions", "/pos",
                     "/entry_1/sample_1/geometry_1/translation")
UNIT_M = {"m": 1.0, "meter": 1.0, "metre": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6,
          "microns": 1e-6, "nm": 1e-9}


def read_positions_csv(path: Path | str) -> np.ndarray:
    """The original's positions CSV -> ``(N, 2)`` float64 metres (axis 0, axis 1) per line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputDataError(f"{where(path)}: positions file (-lf) not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{where(path)}: positions file (-lf) cannot be read: {exc}") from exc
    rows: list[tuple[float, float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in re.split(r"[,\s;]+", line) if p]
        try:
            if len(parts) != 2:
                raise ValueError(f"{len(parts)} values")
            a, b = float(parts[0]), float(parts[1])
        except ValueError as exc:
            raise InputDataError(f"{where(path)}, line {number}: expected 'axis0, axis1' in metres, got "
                                 f"{line!r} ({exc})") from None
        rows.append((a, b))
    out = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    _check_finite(out, str(path))
    return out


def read_positions_hdf5(path: Path | str, dataset: str | None = None) -> np.ndarray:
    """An ``(N, 2)`` (or ``(2, N)``) position dataset, a CXI ``(N, 3)`` translation (x, y, z), or a ptychodus
    product's probe positions -> ``(N, 2)`` float64 metres (row, col)."""
    path = Path(path)
    with opened(path) as f:
        product = dataset is None and is_ptychodus_product(f)
    if product:
        return read_ptychodus_product(path).positions_m  # probe centres (row, col) in metres
    with opened(path) as f:
        if dataset is None:
            found = [d for d in POSITION_DATASETS if d in f]
            if not found:
                raise InputDataError(f"{where(path)}: no positions dataset; name it as {path}::/path "
                                     f"(looked for {', '.join(POSITION_DATASETS)})")
            dataset = found[0]
        ds = get_dataset(f, dataset)
        try:
            arr = np.asarray(ds[()], dtype=np.float64)
        except (OSError, ValueError, TypeError) as exc:
            raise InputDataError(f"{where(path, dataset)}: positions cannot be read: {exc}") from exc
        units = ds.attrs.get("units", ds.attrs.get("unit", "m"))
        signs = cxi_axis_signs(f) if dataset.rstrip("/").endswith("translation") else (1.0, 1.0)
    if isinstance(units, bytes):
        units = units.decode()
    scale = UNIT_M.get(str(units).strip().lower())
    if scale is None:
        raise InputDataError(f"{where(path, dataset)}: unknown position units {units!r}; "
                             f"expected one of {', '.join(UNIT_M)}")
    translation = dataset.rstrip("/").endswith("translation")
    if arr.ndim == 2 and arr.shape[0] == 2 and arr.shape[1] != 2:
        arr = arr.T
    elif arr.ndim == 2 and translation and arr.shape[0] == 3 and arr.shape[1] != 3:
        arr = arr.T  # PyNX writes the CXI translation as (3, N)
    if arr.ndim == 2 and arr.shape[1] == 3 and translation:
        # CXI sample translation: y -> row, x -> column, z along the beam; signs from the detector basis
        arr = arr[:, [1, 0]] * np.asarray(signs)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputDataError(f"{where(path, dataset)}: positions have shape {arr.shape}; expected (N, 2) or a "
                             f"CXI translation (N, 3) or (3, N)")
    _check_finite(arr, f"{path}, dataset {dataset}")
    return np.ascontiguousarray(arr * scale)


CXI_BASIS = "/entry_1/instrument_1/detector_1/basis_vectors"


def cxi_axis_signs(f: h5py.File) -> tuple[float, float]:
    """(row, column) signs that turn a CXI translation's (y, x) into ptychopy's probe position (docs/io.md,
    "CXI translation sign"). PyNX, cdtools and ptychodus agree on files with CXI's default detector basis
    (``basis_vectors`` absent, or rows along -y and columns along -x): no sign change. A detector basis with a
    row or column vector pointing the other way flips that axis, as cdtools' ``translations_to_pixel`` does;
    a basis that is not along x and y is refused."""
    ds = f.get(CXI_BASIS)
    if not isinstance(ds, h5py.Dataset):
        return 1.0, 1.0
    b = np.asarray(ds[()], dtype=np.float64)
    if b.shape == (2, 3):
        b = b.T  # PyNX and cdtools write (2, 3): one row per array axis; CXI's (3, 2) has one column each
    if b.shape != (3, 2) or not np.isfinite(b).all():
        raise InputDataError(f"{where(f.filename, CXI_BASIS)}: shape {b.shape}; expected (3, 2) or (2, 3)")
    row_vec, col_vec = b[:, 0], b[:, 1]
    tol = 1e-6 * max(np.abs(b).max(), 1e-30)
    if abs(row_vec[1]) <= tol or abs(col_vec[0]) <= tol or np.abs(row_vec[[0, 2]]).max() > tol \
            or np.abs(col_vec[1:]).max() > tol:
        raise InputDataError(f"{where(f.filename, CXI_BASIS)}: {b.T.tolist()} is not along y (rows) and x "
                             f"(columns); ptychopy reads translations only for an unrotated detector")
    return float(-np.sign(row_vec[1])), float(-np.sign(col_vec[0]))


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise InputDataError(f"file {name}: position {int(bad[0])} is not a finite number")


def describe_source(params: Parameters) -> str:
    """A short description of where the positions come from (for ``Scan`` and provenance)."""
    spec = params.experiment.positions_file
    if not spec:
        return "spiral" if params.experiment.spiral_scan else "raster"
    return spec


def read_positions_file(spec: str, first_data_file: Path | None = None) -> np.ndarray:
    """Positions in metres ``(N, 2)`` from an ``-lf`` value (CSV, MDA, HDF5 file[::dataset] or ``::dataset``)."""
    name, sep, dataset = spec.partition("::")
    if sep and not name:
        if first_data_file is None:
            raise InputDataError(f"-lf={spec}: positions inside the data file need a data file pattern (-fp)")
        return read_positions_hdf5(first_data_file, dataset or None)
    if sep or Path(name).suffix.lower() in HDF5_SUFFIXES:
        return read_positions_hdf5(name, dataset or None)
    if Path(name).suffix.lower() == ".mda":
        return read_positions_mda(name)
    return read_positions_csv(name)


def check_count(positions_m: np.ndarray, expected: int, spec: str) -> None:
    """Raise :class:`InputDataError` unless there are ``expected`` (= scanDims rows*cols) positions."""
    if positions_m.shape[0] != expected:
        raise InputDataError(
            f"-lf={spec}: holds {positions_m.shape[0]} positions but the scan has {expected} points "
            f"(-scanDims rows*cols); they must match"
        )

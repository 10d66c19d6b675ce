"""What goes where in a result file: CXI 1.6 paths, NeXus classes, units and the default plot.

The file opens in h5web, silx and NeXpy on the object's phase (``/`` -> ``entry_1`` -> ``data_1``, an NXdata
whose ``signal`` is ``phase``), in ptychodus' CXI reader (probe in ``image_1``, object in ``image_2``,
translations at probe centres), and in :func:`reconstruction.io.results.read_result`. Every group has an
``NX_class``; every number with a dimension has a ``units`` attribute (``""`` for dimensionless ones, as NeXus'
NX_DIMENSIONLESS). The full table is in ``docs/io.md``.

Positions: ``Result.positions_px`` are window corners (row, col) in object pixels, fractional. CXI's
``translation`` (and ptychodus) wants the probe centre in metres; with ptychodus' centred-pixel convention the
centre of an ``n``-pixel array is at index ``(n - 1) / 2``, so the probe centre sits at object pixel
``corner + (n - 1) / 2`` and, measured from the object array's centre ``(W - 1) / 2``,
``x_m = (col + (n - 1) / 2 - (W - 1) / 2) * pixel_size_m`` (likewise ``y_m`` from rows). CXI calls this the
sample translation; programs differ on its sign; ptychopy writes it as ptychodus reads and writes it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..state import Result

CXI_VERSION = 160
PLANCK_J_S = 6.62607015e-34
LIGHT_M_PER_S = 299792458.0
EV_J = 1.602176634e-19
NOT_HDF5_SUFFIXES = (".bin", ".csv", ".npy", ".tif", ".tiff")

ENTRY = "entry_1"
PROBE_IMAGE = "entry_1/image_1"
OBJECT_IMAGE = "entry_1/image_2"
PLOT = "entry_1/data_1"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"
OWN = "entry_1/ptychopy"


def photon_energy_j(wavelength_m: float) -> float:
    """Photon energy in joules of X-rays of wavelength ``wavelength_m`` (metres)."""
    return PLANCK_J_S * LIGHT_M_PER_S / wavelength_m


def probe_centres_m(positions_px: np.ndarray, probe_shape: Sequence[int], object_shape: Sequence[int],
                    pixel_size_m: float) -> np.ndarray:
    """``(N, 2)`` probe centres (x, y) in metres from the object array's centre, for window corners
    ``positions_px`` ``(N, 2)`` (row, col) in object pixels; ``probe_shape``/``object_shape`` end in (rows, cols)."""
    corners = np.asarray(positions_px, dtype=np.float64).reshape(-1, 2)
    n_rows, n_cols = probe_shape[-2], probe_shape[-1]
    h, w = object_shape[-2], object_shape[-1]
    x = (corners[:, 1] + (n_cols - 1) / 2 - (w - 1) / 2) * pixel_size_m
    y = (corners[:, 0] + (n_rows - 1) / 2 - (h - 1) / 2) * pixel_size_m
    return np.stack([x, y], axis=1)


def corners_from_centres_px(x_m: np.ndarray, y_m: np.ndarray, probe_shape: Sequence[int],
                            object_shape: Sequence[int], pixel_width_m: float, pixel_height_m: float,
                            centre_x_m: float = 0.0, centre_y_m: float = 0.0) -> np.ndarray:
    """The inverse of :func:`probe_centres_m`: ``(N, 2)`` window corners (row, col) in object pixels for probe
    centres ``x_m``, ``y_m`` (metres) about an object centred at (``centre_x_m``, ``centre_y_m``)."""
    n_rows, n_cols = probe_shape[-2], probe_shape[-1]
    h, w = object_shape[-2], object_shape[-1]
    col = (np.asarray(x_m, dtype=np.float64) - centre_x_m) / pixel_width_m + (w - 1) / 2 - (n_cols - 1) / 2
    row = (np.asarray(y_m, dtype=np.float64) - centre_y_m) / pixel_height_m + (h - 1) / 2 - (n_rows - 1) / 2
    return np.stack([row, col], axis=1)


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _quantity(group: h5py.Group, name: str, value: Any, units: str, **attrs: Any) -> h5py.Dataset:
    ds = group.create_dataset(name, data=value)
    ds.attrs["units"] = units
    ds.attrs.update(attrs)
    return ds


def _text(group: h5py.Group, name: str, text: str) -> None:
    group.create_dataset(name, data=text, dtype=h5py.string_dtype())


def _names(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=h5py.string_dtype())


def _axes(group: h5py.Group, rows: int, cols: int, pixel_size_m: float | None) -> list[str]:
    """x (cols) and y (rows) pixel-centre coordinates in metres about the array centre (pixels when the pixel
    size is unknown); the names for the NXdata ``axes`` attribute."""
    step, units = (pixel_size_m, "m") if pixel_size_m else (1.0, "pixel")
    _quantity(group, "x", (np.arange(cols) - (cols - 1) / 2) * step, units, long_name=f"x ({units})")
    _quantity(group, "y", (np.arange(rows) - (rows - 1) / 2) * step, units, long_name=f"y ({units})")
    return ["y", "x"]


def _image(entry: h5py.Group, name: str, data: np.ndarray, kind: str, units: str,
           pixel_size_m: float | None) -> h5py.Group:
    image = _group(entry, name, "NXdata")
    ds = image.create_dataset("data", data=data)
    ds.attrs.update({"data_type": kind, "data_space": "real", "units": units, "interpretation": "image"})
    _text(image, "data_type", kind)
    _text(image, "data_space", "real")
    axes = _axes(image, data.shape[-2], data.shape[-1], pixel_size_m)
    image.attrs.update({"signal": "data", "axes": _names(["."] * (data.ndim - 2) + axes)})
    if pixel_size_m:
        _quantity(image, "x_pixel_size", float(pixel_size_m), "m")
        _quantity(image, "y_pixel_size", float(pixel_size_m), "m")
        _quantity(image, "image_size", [data.shape[-1] * pixel_size_m, data.shape[-2] * pixel_size_m], "m")
    return image


def object_plot(parent: h5py.Group, name: str, obj: np.ndarray, pixel_size_m: float | None, title: str,
                amplitude: bool = True) -> h5py.Group:
    """The NXdata group h5web, silx and NeXpy show on opening: the object's phase (float32 ``(H, W)``, rad) as
    its ``signal``, the amplitude as an auxiliary signal (``amplitude``), and x/y axes (m, or pixels)."""
    plot = _group(parent, name, "NXdata")
    _quantity(plot, "phase", np.angle(obj).astype(np.float32), "rad", long_name="object phase (rad)")
    attrs: dict[str, Any] = {"signal": "phase", "title": title,
                             "axes": _names(_axes(plot, obj.shape[-2], obj.shape[-1], pixel_size_m))}
    if amplitude:
        _quantity(plot, "amplitude", np.abs(obj).astype(np.float32), "", long_name="object amplitude")
        attrs["auxiliary_signals"] = _names(["amplitude"])
    plot.attrs.update(attrs)
    return plot


def _raw_data_links(detector: h5py.Group, inputs: dict[str, Any]) -> list[str]:
    """External links ``data_000001``... to each raw HDF5 data file's dataset (in scan order); the file list."""
    files = [str(p) for p in inputs.get("files") or []]
    dataset = str(inputs.get("dataset") or "")
    for i, name in enumerate(files, start=1):
        if dataset and is_hdf5_name(name):
            detector[f"data_{i:06d}"] = h5py.ExternalLink(os.path.abspath(name), dataset)
    return files


def _attr_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        arr = np.asarray(v)
        return arr if arr.dtype.kind in "biuf" else json.dumps(v, default=str)
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    if isinstance(v, (str, bool, int, float, np.generic)):
        return v
    return str(v)


def _attrs_group(parent: h5py.Group, name: str, values: dict[str, Any]) -> None:
    group = _group(parent, name, "NXcollection")
    for key, value in values.items():
        group.attrs[str(key)] = _attr_value(value)


def params_dict(parameters: Any) -> dict[str, Any] | None:
    """The parameters as ``{"group": {"name": value}}`` (``Parameters.to_dict()``), a dict as given, or None."""
    if parameters is None:
        return None
    if hasattr(parameters, "to_dict"):
        return parameters.to_dict()
    if isinstance(parameters, dict):
        return parameters
    return None


def fill(f: h5py.File, result: Result, version: str) -> None:
    """Write ``result`` into the empty, open file ``f`` (``version``: the ptychopy version writing it)."""
    params = result.parameters
    pdict = params_dict(params)
    experiment = (pdict or {}).get("experiment", {})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    dx = float(result.pixel_size_m) if result.pixel_size_m else None
    f.attrs.update({"NX_class": "NXroot", "default": ENTRY, "creator": f"ptychopy {version}", "file_time": now,
                    "HDF5_Version": h5py.version.hdf5_version, "h5py_version": h5py.version.version})
    f.create_dataset("cxi_version", data=CXI_VERSION)
    entry = _group(f, ENTRY, "NXentry")
    entry.attrs["default"] = "data_1"
    job = str(experiment.get("job_id", "") or "")
    _text(entry, "title", job)
    _text(entry, "program_name", f"ptychopy {version}")
    _text(entry, "end_time", now)

    obj = np.asarray(result.object, dtype=np.complex64)
    probe = np.asarray(result.probe, dtype=np.complex64)
    probe = probe if probe.ndim == 3 else probe[None]
    probe_image = _image(entry, "image_1", probe, "probe", "a.u.", dx)
    probe_image.attrs["title"] = "probe modes (complex, arbitrary units)"
    obj_image = _image(entry, "image_2", obj, "object", "", dx)
    obj_image.attrs["title"] = "object transmission (complex, dimensionless)"
    process = _group(obj_image, "process_1", "NXprocess")
    _text(process, "program", "ptychopy")
    _text(process, "version", version)
    _text(process, "device", str(result.device))
    _text(process, "date", now)
    if params is not None and hasattr(params, "to_cmdstr"):
        _text(process, "command", params.to_cmdstr())

    plot = object_plot(entry, "data_1", obj, dx, f"{job or 'ptychopy'}: object phase")
    plot["data"] = h5py.SoftLink(f"/{OBJECT_IMAGE}/data")

    instrument = _group(entry, "instrument_1", "NXinstrument")
    source = _group(instrument, "source_1", "NXsource")
    source["probe"] = h5py.SoftLink(f"/{PROBE_IMAGE}/data")  # where files before CXI 1.6 kept it
    source["illumination"] = h5py.SoftLink(f"/{PROBE_IMAGE}/data")
    detector = _group(instrument, "detector_1", "NXdetector")
    if experiment:
        wavelength = float(experiment["wavelength_m"])
        energy = photon_energy_j(wavelength)
        _quantity(source, "energy", energy, "J", note="incident photon energy (CXI), not the source energy")
        _quantity(source, "wavelength", wavelength, "m")
        beam = _group(instrument, "beam_1", "NXbeam")
        _quantity(beam, "incident_energy", energy / EV_J, "eV")
        _quantity(beam, "incident_wavelength", wavelength, "m")
        _quantity(detector, "distance", float(experiment["detector_distance_m"]), "m")
        _quantity(detector, "x_pixel_size", float(experiment["detector_pixel_m"]), "m")
        _quantity(detector, "y_pixel_size", float(experiment["detector_pixel_m"]), "m")
    raw_files = _raw_data_links(detector, result.inputs or {})

    positions = np.asarray(result.positions_px, dtype=np.float64).reshape(-1, 2)
    sample = _group(entry, "sample_1", "NXsample")
    _text(sample, "name", job)
    if dx:
        xyz = np.zeros((positions.shape[0], 3))
        xyz[:, :2] = probe_centres_m(positions, probe.shape, obj.shape, dx)
        geometry = _group(sample, "geometry_1", "NXgeometry")
        _quantity(geometry, "translation", xyz, "m",
                  note="probe centre on the object from the object array's centre: x = columns, y = rows, z = 0")
        plot["translation"] = h5py.SoftLink(f"/{TRANSLATION}")
        extra = _group(entry, "ptychodus", "NXcollection")  # the names ptychodus' CXI reader looks for
        for name, value in (("object_center_x_m", 0.0), ("object_center_y_m", 0.0), ("object_pixel_width_m", dx),
                            ("object_pixel_height_m", dx), ("probe_pixel_width_m", dx),
                            ("probe_pixel_height_m", dx)):
            _quantity(extra, name, value, "m")
        _quantity(extra, "loss_values", np.asarray(result.errors, dtype=np.float64).reshape(-1), "")
        extra.create_dataset("loss_epochs", data=np.arange(len(result.errors), dtype=np.int64))
    _fill_own(entry, result, pdict, positions, raw_files, version)
    if dx and experiment:
        from .ptychodus_product import fill_product  # imports this module

        fill_product(f, result, job, f"ptychopy {version} result, {result.algorithm}",
                     links={"object": f"/{OBJECT_IMAGE}/data", "probe": f"/{PROBE_IMAGE}/data",
                            "loss_epochs": "/entry_1/ptychodus/loss_epochs",
                            "loss_values": "/entry_1/ptychodus/loss_values"})


def _fill_own(entry: h5py.Group, result: Result, pdict: dict[str, Any] | None, positions: np.ndarray,
              raw_files: list[str], version: str) -> None:
    own = _group(entry, "ptychopy", "NXcollection")
    _quantity(own, "positions_px", positions, "pixel",
              note="window top-left corners (row, col) in object pixels, fractional")
    if result.intensity_scale is not None:
        _quantity(own, "intensity_scale", np.asarray(result.intensity_scale, dtype=np.float32), "")
    for name, units in (("errors", ""), ("rms", ""), ("iteration_s", "s")):
        _quantity(own, name, np.asarray(getattr(result, name), dtype=np.float64).reshape(-1), units)
    own["errors"].attrs["measure"] = result.error_measure
    own.attrs.update({
        "algorithm": str(result.algorithm), "device": str(result.device), "ptychopy_version": version,
        "stopped_early": result.stopped_early or "", "pixel_size_m": float(result.pixel_size_m or 0.0),
        "iterations": int(result.iterations),
    })
    _text(own, "parameters_json", json.dumps(pdict, sort_keys=True) if pdict is not None else "null")
    _attrs_group(own, "parameters", {f"{g}.{n}": v for g, leaves in (pdict or {}).items()
                                     for n, v in leaves.items()})
    _text(own, "inputs_json", json.dumps(result.inputs or {}, sort_keys=True, default=str))
    _attrs_group(own, "inputs", dict(result.inputs or {}))
    own.create_dataset("raw_data_files", data=_names(raw_files))
    if result.run_plan is not None:
        _text(own, "run_plan_json", json.dumps(result.run_plan, sort_keys=True))
        _attrs_group(own, "run_plan", dict(result.run_plan))


def object_path(f: h5py.File) -> str:
    """Where the object is: the ``entry_1/image_N/data`` whose ``data_type`` is "object" (``image_2`` since CXI
    1.6 files, ``image_1`` before); KeyError naming what was looked for when none is."""
    entry = f[ENTRY]
    for name in sorted(k for k in entry if k.startswith("image_")):
        ds = entry[name].get("data")
        kind = ds.attrs.get("data_type", "") if isinstance(ds, h5py.Dataset) else ""
        if (kind.decode() if isinstance(kind, bytes) else str(kind)) == "object":
            return f"{ENTRY}/{name}/data"
    raise KeyError("an entry_1/image_N/data with data_type 'object'")


def is_hdf5_name(path: Path | str) -> bool:
    """Whether ``path`` is a raw-data file name that can be the target of an external link."""
    return not str(path).lower().endswith(NOT_HDF5_SUFFIXES)

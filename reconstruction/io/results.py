"""One HDF5 result file per run, CXI-style where CXI has a place, written atomically.

Layout (``docs/io.md``)::

    /cxi_version                                   150
    /entry_1/title                                 job id
    /entry_1/image_1/data                          object (H, W) complex64
    /entry_1/image_1/process_1/{program,version,command (original-style command string),device}
    /entry_1/instrument_1/source_1/probe           probe modes (modes, n, n) complex64
    /entry_1/instrument_1/source_1/{energy (J), wavelength (m)}
    /entry_1/instrument_1/detector_1/{distance, x_pixel_size, y_pixel_size} (m)
    /entry_1/sample_1/geometry_1/translation       (N, 3) metres (x = col, y = row, z = 0)
    /entry_1/ptychopy/positions_px                 (N, 2) float64 (row, col) window corners (the fractional ones
                                                   as given with -subpixelWindows, refined ones when the run
                                                   refined them)
    /entry_1/ptychopy/intensity_scale              (N,) float32 fitted amplitude factor per position (only with
                                                   -variableIntensity; the relative flux is its square)
    /entry_1/ptychopy/{errors, rms, iteration_s}   per-iteration history (float64)
    /entry_1/ptychopy/parameters_json, inputs_json JSON text; parameters/ and inputs/ groups as attributes
    /entry_1/ptychopy/run_plan_json, run_plan      the run plan (``RunPlan.to_dict()``) as JSON text and as the
                                                   attributes of a group (absent in files of runs without one)
    /entry_1/ptychopy attrs: algorithm, device, ptychopy_version, stopped_early, pixel_size_m, iterations

The file is written under a temporary name in the target directory and renamed on success, so a crash
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..state import Result
from .errors import ResultWriteError

CXI_VERSION = 150
PLANCK_EV_S = 4.135667696e-15
LIGHT_M_PER_S = 299792458.0
EV_J = 1.602176634e-19


def ptychopy_version() -> str:
    """The installed ptychopy version, or "unknown" when the package metadata is missing."""
    from importlib import metadata

    try:
        return metadata.version("ptychopy")
    except metadata.PackageNotFoundError:
        return "unknown"


def _str(f: h5py.Group, name: str, text: str) -> None:
    f.create_dataset(name, data=text, dtype=h5py.string_dtype())


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


def _params_dict(parameters: Any) -> dict[str, Any] | None:
    if parameters is None:
        return None
    if hasattr(parameters, "to_dict"):
        return parameters.to_dict()
    if isinstance(parameters, dict):
        return parameters
    return None


def _fill(f: h5py.File, result: Result) -> None:
    params = result.parameters
    pdict = _params_dict(params)
    f.create_dataset("cxi_version", data=CXI_VERSION)
    entry = f.create_group("entry_1")
    entry.attrs["NX_class"] = "NXentry"
    job = pdict.get("experiment", {}).get("job_id", "") if pdict else ""
    _str(entry, "title", str(job))
    image = entry.create_group("image_1")
    image.create_dataset("data", data=np.asarray(result.object, dtype=np.complex64))
    image["data"].attrs.update({"data_type": "object", "data_space": "real"})
    _str(image, "data_type", "object")
    _str(image, "data_space", "real")
    if result.pixel_size_m:
        image.create_dataset("x_pixel_size", data=float(result.pixel_size_m))
        image.create_dataset("y_pixel_size", data=float(result.pixel_size_m))
    process = image.create_group("process_1")
    _str(process, "program", "ptychopy")
    _str(process, "version", ptychopy_version())
    _str(process, "device", str(result.device))
    if params is not None and hasattr(params, "to_cmdstr"):
        _str(process, "command", params.to_cmdstr())
    source = entry.create_group("instrument_1").create_group("source_1")
    probe = np.asarray(result.probe, dtype=np.complex64)
    source.create_dataset("probe", data=probe if probe.ndim == 3 else probe[None])
    detector = entry["instrument_1"].create_group("detector_1")
    if pdict:
        e = pdict["experiment"]
        wavelength = float(e["wavelength_m"])
        source.create_dataset("wavelength", data=wavelength)
        source.create_dataset("energy", data=PLANCK_EV_S * LIGHT_M_PER_S / wavelength * EV_J)
        detector.create_dataset("distance", data=float(e["detector_distance_m"]))
        detector.create_dataset("x_pixel_size", data=float(e["detector_pixel_m"]))
        detector.create_dataset("y_pixel_size", data=float(e["detector_pixel_m"]))
    positions = np.asarray(result.positions_px, dtype=np.float64).reshape(-1, 2)
    if result.pixel_size_m:
        xyz = np.zeros((positions.shape[0], 3))
        xyz[:, 0], xyz[:, 1] = positions[:, 1] * result.pixel_size_m, positions[:, 0] * result.pixel_size_m
        entry.create_group("sample_1").create_group("geometry_1").create_dataset("translation", data=xyz)
    own = entry.create_group("ptychopy")
    own.create_dataset("positions_px", data=positions)
    if result.intensity_scale is not None:
        own.create_dataset("intensity_scale", data=np.asarray(result.intensity_scale, dtype=np.float32))
    for name in ("errors", "rms", "iteration_s"):
        own.create_dataset(name, data=np.asarray(getattr(result, name), dtype=np.float64).reshape(-1))
    own["errors"].attrs["measure"] = result.error_measure
    own.attrs.update({
        "algorithm": str(result.algorithm), "device": str(result.device), "ptychopy_version": ptychopy_version(),
        "stopped_early": result.stopped_early or "", "pixel_size_m": float(result.pixel_size_m or 0.0),
        "iterations": int(result.iterations),
    })
    _str(own, "parameters_json", json.dumps(pdict, sort_keys=True) if pdict is not None else "null")
    pgroup = own.create_group("parameters")
    for group, leaves in (pdict or {}).items():
        for name, value in leaves.items():
            pgroup.attrs[f"{group}.{name}"] = _attr_value(value)
    _str(own, "inputs_json", json.dumps(result.inputs or {}, sort_keys=True, default=str))
    igroup = own.create_group("inputs")
    for key, value in (result.inputs or {}).items():
        igroup.attrs[str(key)] = _attr_value(value)
    if result.run_plan is not None:
        _str(own, "run_plan_json", json.dumps(result.run_plan, sort_keys=True))
        plan_group = own.create_group("run_plan")
        for key, value in result.run_plan.items():
            plan_group.attrs[str(key)] = _attr_value(value)


def _reason(exc: OSError) -> str:
    code = exc.errno
    text = str(exc)
    if code == errno.ENOSPC or "space" in text.lower():
        return "no space left on the device"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "permission" in text.lower() or (
            "read-only" in text.lower()):
        return "the directory is not writable (read-only or no permission)"
    return exc.strerror or text


def _write_atomic(result: Result, path: Path, overwrite: bool) -> Path:
    if path.exists() and not overwrite:
        raise ResultWriteError(f"result file {path} already exists; choose another name or overwrite it "
                               f"explicitly (the result is still in memory)", path)
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultWriteError(f"cannot write result file {path}: cannot create {directory}: "
                               f"{_reason(exc)}", path) from exc
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with h5py.File(tmp, "w-") as f:
            _fill(f, result)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name appeared meanwhile: never clobbers
            except FileExistsError:
                raise ResultWriteError(f"result file {path} already exists; choose another name", path
                                       ) from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise ResultWriteError(f"result file {path} already exists", path) from None
                os.replace(tmp, path)
    except ResultWriteError:
        _remove(tmp)
        raise
    except BaseException as exc:  # HDF5 reports a full disk mid-write as RuntimeError; anything else: no debris
        _remove(tmp)
        if isinstance(exc, OSError | RuntimeError):
            raise ResultWriteError(_failure_message(result, path, exc), path) from exc
        raise
    _remove(tmp)
    return path


def _failure_message(result: Result, path: Path, exc: OSError | RuntimeError) -> str:
    """"disk full writing <path>: about N bytes needed, M free" when the device is full (HDF5 says so only in its
    error stack, so the free space decides), else the OS's reason."""
    needed = _result_bytes(result)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "space" in str(exc).lower() or (
        free is not None and free < needed + 2**20)
    if full:
        free_text = f", {free} bytes free" if free is not None else ""
        return (f"disk full writing result file {path}: about {needed} bytes needed{free_text}; no space left on "
                f"the device; the partial file was removed and the result is still in memory")
    reason = _reason(exc) if isinstance(exc, OSError) else f"HDF5 could not write it ({type(exc).__name__})"
    return (f"cannot write result file {path}: {reason} ({exc}); the partial file was removed and the result is "
            f"still in memory")


def _result_bytes(result: Result) -> int:
    """About how many bytes the result's arrays take in the file (uncompressed)."""
    total = 0
    for value in vars(result).values():
        total += int(getattr(value, "nbytes", 0) or 0)
    return total


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 10000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise ResultWriteError(f"no free file name beside {path}", path)


def write_result(result: Result, path: Path | str, *, overwrite: bool = False,
                 fallback_dir: Path | str | None = None) -> Path:
    """Write ``result`` to ``path`` (HDF5, layout in the module docstring); return where it was saved.

    A full disk, a read-only directory or an existing file raises :class:`ResultWriteError` naming the
    path, leaving ``result`` untouched and no partial file under ``path``. With ``fallback_dir`` the
    result is saved there instead (under a free name) and a :class:`RuntimeWarning` says why.
    """
    path = Path(path).expanduser()
    try:
        return _write_atomic(result, path, overwrite)
    except ResultWriteError as exc:
        if fallback_dir is None:
            raise
        alt = _free_name(Path(fallback_dir).expanduser() / path.name)
        try:
            saved = _write_atomic(result, alt, overwrite=False)
        except ResultWriteError as exc2:
            raise ResultWriteError(f"{exc}; the fallback {alt} failed too: {exc2}", path) from exc2
        warnings.warn(f"{exc}; saved the result to {saved} instead", RuntimeWarning, stacklevel=2)
        return saved


def _text(ds: Any) -> str:
    v = ds[()]
    return v.decode() if isinstance(v, bytes) else str(v)


def read_result(path: Path | str) -> Result:
    """Read a file written by :func:`write_result` back into a :class:`Result` (parameters as
    :class:`~reconstruction.parameters.Parameters` when they still validate, else the raw dict)."""
    from ..errors import InputDataError
    from ..parameters import ParameterError, Parameters

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputDataError(f"file {path}: result file not found") from None
    except OSError as exc:
        raise InputDataError(f"file {path}: not a readable HDF5 result file: {exc}") from exc
    with f:
        try:
            own = f["entry_1/ptychopy"]
            obj = np.asarray(f["entry_1/image_1/data"][()])
            probe = np.asarray(f["entry_1/instrument_1/source_1/probe"][()])
            pdict = json.loads(_text(own["parameters_json"]))
            inputs = json.loads(_text(own["inputs_json"]))
            attrs = dict(own.attrs)
            hist = {n: [float(x) for x in own[n][()]] for n in ("errors", "rms", "iteration_s")}
            positions = np.asarray(own["positions_px"][()], dtype=np.float64)
            scale = np.asarray(own["intensity_scale"][()], dtype=np.float32) if "intensity_scale" in own else None
            run_plan = json.loads(_text(own["run_plan_json"])) if "run_plan_json" in own else None
        except KeyError as exc:
            raise InputDataError(f"file {path}: not a ptychopy result file (missing {exc})") from None
    params: Any = pdict
    if pdict is not None:
        try:
            params = Parameters.from_dict(pdict)
        except ParameterError as exc:
            warnings.warn(f"{path}: stored parameters no longer validate ({exc}); kept as a dict",
                          RuntimeWarning, stacklevel=2)
    return Result(
        object=obj, probe=probe, positions_px=positions, errors=hist["errors"], rms=hist["rms"],
        iteration_s=hist["iteration_s"], algorithm=str(attrs.get("algorithm", "")),
        device=str(attrs.get("device", "")), pixel_size_m=float(attrs.get("pixel_size_m", 0.0)) or None,
        parameters=params, stopped_early=str(attrs.get("stopped_early", "")) or None, inputs=inputs,
        intensity_scale=scale, run_plan=run_plan,
    )


def result_version(path: Path | str) -> str:
    """The ptychopy version that wrote a result file."""
    with h5py.File(path, "r") as f:
        return str(f["entry_1/ptychopy"].attrs.get("ptychopy_version", "unknown"))

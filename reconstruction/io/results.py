"""One HDF5 result file per run (CXI 1.6 / NeXus, layout in :mod:`.result_layout` and ``docs/io.md``), written
atomically, and read back from files of any ptychopy version.

The file is written under a temporary name in the target directory and renamed on success, so a crash
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import io
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
from .result_layout import OWN, fill, object_path


def ptychopy_version() -> str:
    """The installed ptychopy version, or "unknown" when the package metadata is missing."""
    from importlib import metadata

    try:
        return metadata.version("ptychopy")
    except metadata.PackageNotFoundError:
        return "unknown"


def _reason(exc: OSError) -> str:
    code = exc.errno
    text = str(exc)
    if code == errno.ENOSPC or "space" in text.lower():
        return "no space left on the device"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "permission" in text.lower() or (
            "read-only" in text.lower()):
        return "the directory is not writable (read-only or no permission)"
    return exc.strerror or text


def _file_image(result: Result) -> bytes:
    """The whole result file, built in memory. Disk errors then reach Python's ``write``, never HDF5: a file
    HDF5 fails to flush (a full disk) stays open inside the library with its objects, and later HDF5 calls in the
    same process crashed on them (segmentation fault)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill(f, result, ptychopy_version())
    return buffer.getvalue()


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
        image = _file_image(result)
        with open(tmp, "xb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())
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
    except BaseException as exc:  # HDF5 errors arrive as RuntimeError; anything else: no debris
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


REQUIRED = ("parameters_json", "inputs_json", "errors", "rms", "iteration_s", "positions_px")


def _open_result(path: Path) -> h5py.File:
    """``path`` opened read-only, or :class:`InputDataError` saying why it is not a readable result file."""
    from ..errors import InputDataError

    if not path.exists():
        raise InputDataError(f"file {path}: result file not found")
    if path.is_dir():
        raise InputDataError(f"file {path}: is a directory, not a result file")
    try:
        hdf5 = h5py.is_hdf5(path)
    except OSError:
        hdf5 = False
    if not hdf5:
        raise InputDataError(f"file {path}: is not an HDF5 file; a ptychopy result is the .h5 file that "
                             f"'ptychopy run' or the web app wrote")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputDataError(f"file {path}: the HDF5 file cannot be opened (locked by a writer or damaged: "
                             f"{exc})") from exc


def _missing(f: h5py.File, path: Path) -> str | None:
    """None when ``f`` has what :func:`read_result` needs, else a sentence naming the first thing missing."""
    if OWN not in f:
        top = ", ".join(sorted(f.keys())[:8]) or "nothing"
        return (f"is an HDF5 file but not a ptychopy result: it has no /{OWN} group (its top level holds {top}); "
                f"export reads result files written by ptychopy")
    try:
        object_path(f)
    except KeyError as exc:
        return f"is a ptychopy result without an object: no {exc.args[0]}"
    for name in ("entry_1/instrument_1/source_1/probe",) + tuple(f"{OWN}/{n}" for n in REQUIRED):
        if f.get(name) is None:
            return f"is a ptychopy result missing /{name} (written incompletely or edited)"
    return None


def read_result(path: Path | str) -> Result:
    """Read a file written by :func:`write_result` (by any ptychopy version) back into a :class:`Result`
    (parameters as :class:`~reconstruction.parameters.Parameters` when they still validate, else the raw dict).
    A file that is missing, not HDF5, or not a ptychopy result raises :class:`InputDataError` saying which."""
    from ..errors import InputDataError
    from ..parameters import ParameterError, Parameters

    path = Path(path)
    with _open_result(path) as f:
        problem = _missing(f, path)
        if problem is not None:
            raise InputDataError(f"file {path}: {problem}")
        own = f[OWN]
        obj = np.asarray(f[object_path(f)][()])
        probe = np.asarray(f["entry_1/instrument_1/source_1/probe"][()])
        pdict = json.loads(_text(own["parameters_json"]))
        inputs = json.loads(_text(own["inputs_json"]))
        attrs = dict(own.attrs)
        hist = {n: [float(x) for x in own[n][()]] for n in ("errors", "rms", "iteration_s")}
        positions = np.asarray(own["positions_px"][()], dtype=np.float64)
        scale = np.asarray(own["intensity_scale"][()], dtype=np.float32) if "intensity_scale" in own else None
        run_plan = json.loads(_text(own["run_plan_json"])) if "run_plan_json" in own else None
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
        return str(f[OWN].attrs.get("ptychopy_version", "unknown"))

"""Exports of a result file that stand alone: TIFF, PNG, CSV and a ptychodus product.

``ptychopy export RESULT.h5 --format tiff|png|csv|ptychodus [--out DIR]`` runs :func:`main`. Every file is named
``<name>_<what>``: ``<name>`` is the run's ``-jobID`` (refused when it is not a plain file name) or, for results
without one, the result file's stem made safe (:mod:`reconstruction.safe_paths`).

- ``tiff``: ``_object_abs.tif``, ``_object_ph.tif`` (float32 amplitude, phase in radians),
  ``_object_ph_preview.tif`` (8-bit phase), ``_probe_abs.tif``, ``_probe_ph.tif`` (float32, one page per mode);
  ImageJ files whose resolution is the sample pixel size in micrometres.
- ``png``: ``_object_abs.png``, ``_object_ph.png`` (8-bit, full resolution), ``_probe.png`` (modes: amplitude
  above phase), ``_errors.png`` (error per iteration), ``_panels.png`` (object phase and amplitude, probe and
  error curve on one titled sheet).
- ``csv``: the original's ``_object_0.csv``/``_probes_0.csv``, ``_positions_0.csv`` (the run's positions in
  metres in the ``-lf`` format, when the pixel size is known), ``_errors.csv`` (iteration, error, seconds).
- ``ptychodus``: ``_ptychodus.h5``, a product ptychodus' ``load_product`` reads (:mod:`.ptychodus_product`).

Images are not flipped (row 0 on top).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputDataError
from ..safe_paths import UnsafePathError, check_file_name, path_inside, sanitised_name
from ..state import Result
from . import panels
from .errors import OutputWriteError
from .original_csv import write_original_outputs
from .panels import to_uint8
from .ptychodus_product import write_ptychodus_product
from .result_layout import params_dict
from .results import ptychopy_version, read_result
from .writers import write_positions_csv

FORMATS = ("tiff", "png", "csv", "ptychodus")
__all__ = ["FORMATS", "amplitude_phase", "export_name", "export_result", "main", "to_uint8"]


def amplitude_phase(obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|O|, angle O) as float32 arrays of ``obj``'s shape (phase in radians, [-pi, pi])."""
    obj = np.asarray(obj)
    return np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32)


def _guard(path: Path, write: Callable[[], Any]) -> Path:
    try:
        write()
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}", path) from exc
    return path


def export_name(result: Result, result_path: Path, default_name: str | None = None) -> str:
    """``-jobID`` of the run (checked as a plain file name), else ``default_name`` (checked too), else the result
    file's stem made safe."""
    job = str((params_dict(result.parameters) or {}).get("experiment", {}).get("job_id", "") or "")
    if job:
        return check_file_name(job, "-jobID")
    if default_name:
        return check_file_name(default_name, "export name")
    return sanitised_name(result_path.stem)


def _imagej(path: Path, data: np.ndarray, pixel_size_m: float | None, labels: list[str]) -> None:
    """An ImageJ TIFF of ``data`` ``(H, W)`` or ``(pages, H, W)``; resolution in pixels per micrometre."""
    metadata: dict[str, Any] = {"axes": "ZYX" if data.ndim == 3 else "YX", "Labels": labels}
    kwargs: dict[str, Any] = {}
    if pixel_size_m:
        per_um = 1.0 / (pixel_size_m * 1e6)
        metadata["unit"] = "um"
        kwargs["resolution"] = (per_um, per_um)
    tifffile.imwrite(path, data, imagej=True, metadata=metadata, **kwargs)


def export_tiff(result: Result, out_dir: Path, name: str) -> list[Path]:
    """Object amplitude and phase (float32), an 8-bit phase preview, probe amplitude and phase stacks."""
    amp, ph = amplitude_phase(result.object)
    probe = np.asarray(result.probe).reshape((-1,) + np.shape(result.probe)[-2:])
    p_amp, p_ph = amplitude_phase(probe)
    modes = [f"mode {k}" for k in range(len(probe))]
    files = []
    for suffix, img, labels in (("_object_abs.tif", amp, ["object amplitude"]),
                                ("_object_ph.tif", ph, ["object phase (rad)"]),
                                ("_probe_abs.tif", p_amp, [f"probe amplitude, {m}" for m in modes]),
                                ("_probe_ph.tif", p_ph, [f"probe phase (rad), {m}" for m in modes])):
        path = path_inside(out_dir, name, suffix)
        files.append(_guard(path, partial(_imagej, path, img, result.pixel_size_m, labels)))
    preview = path_inside(out_dir, name, "_object_ph_preview.tif")
    files.insert(2, _guard(preview, lambda: tifffile.imwrite(preview, to_uint8(ph), photometric="minisblack")))
    return files


def export_png(result: Result, out_dir: Path, name: str) -> list[Path]:
    """Object amplitude and phase (8-bit, each min..max), the probe modes, the error curve and a panel sheet."""
    amp, ph = amplitude_phase(result.object)
    probe_sheet = panels.probe_modes(result.probe)
    curve = panels.error_curve(result.errors, f"{result.algorithm} error")
    sheet = panels.panel_sheet([
        ("object phase (rad)", panels.grey(ph)), ("object amplitude", panels.grey(amp)),
        ("probe modes: amplitude / phase", probe_sheet), ("error per iteration", curve),
    ])
    pictures = (("_object_abs.png", panels.grey(amp)), ("_object_ph.png", panels.grey(ph)),
                ("_probe.png", probe_sheet), ("_errors.png", curve), ("_panels.png", sheet))
    files = []
    for suffix, picture in pictures:
        path = path_inside(out_dir, name, suffix)
        files.append(_guard(path, partial(picture.save, path)))
    return files


def _write_errors_csv(result: Result, path: Path) -> None:
    seconds = list(result.iteration_s) + [float("nan")] * (len(result.errors) - len(result.iteration_s))
    lines = ["# iteration, error, seconds", f"# error: {result.error_measure}"]
    lines += [f"{i + 1}, {e:.9g}, {s:.6g}" for i, (e, s) in enumerate(zip(result.errors, seconds, strict=False))]
    path.write_text("\n".join(lines) + "\n")


def export_csv(result: Result, out_dir: Path, name: str) -> list[Path]:
    """The original's object and probes CSV (``.bin`` with ``-binaryOutput``), positions and error history."""
    binary = bool(getattr(getattr(result.parameters, "output", None), "binary_output", False))
    files = write_original_outputs(result.object, result.probe, out_dir, name, 0, binary)
    if result.pixel_size_m:
        path = path_inside(out_dir, name, "_positions_0.csv")
        positions_m = np.asarray(result.positions_px, dtype=np.float64) * result.pixel_size_m
        files.append(_guard(path, lambda: write_positions_csv(positions_m, path)))
    errors = path_inside(out_dir, name, "_errors.csv")
    files.append(_guard(errors, lambda: _write_errors_csv(result, errors)))
    return files


def export_ptychodus(result: Result, out_dir: Path, name: str) -> list[Path]:
    """``<name>_ptychodus.h5``: a ptychodus product (object, probe, probe-centre positions, geometry, errors)."""
    path = path_inside(out_dir, name, "_ptychodus.h5")
    comments = f"ptychopy {ptychopy_version()}, {result.algorithm}, {result.iterations} iterations"
    return [write_ptychodus_product(result, path, name=name, comments=comments)]


EXPORTERS: dict[str, Callable[[Result, Path, str], list[Path]]] = {
    "tiff": export_tiff, "png": export_png, "csv": export_csv, "ptychodus": export_ptychodus,
}


def export_result(result_path: Path | str, fmt: str, out_dir: Path | str | None = None, *,
                  default_name: str | None = None) -> list[Path]:
    """Export a result file in ``fmt`` (tiff, png, csv, ptychodus) into ``out_dir`` (default: beside the file).
    ``default_name`` names the files of a run without a ``-jobID`` (default: the result file's stem).

    File names are ``<name>_<what>`` (:func:`export_name`), kept inside ``out_dir`` with symlinks resolved
    (:func:`~reconstruction.safe_paths.path_inside`); an unsafe ``-jobID`` raises
    :class:`~reconstruction.safe_paths.UnsafePathError` before anything is written. A file that is not a
    ptychopy result raises :class:`InputDataError` saying what it is.
    """
    result_path = Path(result_path)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    result = read_result(result_path)
    name = export_name(result, result_path, default_name)
    out = Path(out_dir) if out_dir is not None else result_path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create output directory {out}: {exc.strerror or exc}", out) from exc
    return EXPORTERS[fmt](result, out, name)


def build_parser(prog: str = "ptychopy export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Export a ptychopy result file.")
    parser.add_argument("result", help="result file (.h5) written by ptychopy run")
    parser.add_argument("--format", "-f", choices=FORMATS, default="tiff", help="output format")
    parser.add_argument("--out", "-o", default=None, help="output directory (default: beside the result)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``ptychopy export RESULT.h5 --format tiff|png|csv|ptychodus [--out DIR]``; prints written files.

    Returns 0 on success, 2 for a missing or unreadable result, a file that is not a ptychopy result, an
    unwritable output or an unsafe file name (one line on stderr, no traceback).
    """
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        files = export_result(args.result, args.format, args.out)
    except (InputDataError, OutputWriteError, UnsafePathError) as exc:
        print(f"ptychopy export: error: {exc}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Exports of a result file: TIFF (float32 amplitude and phase, 8-bit phase preview), PNG, original CSV.

``ptychopy export RESULT.h5 --format tiff|png|csv [--out DIR]`` runs :func:`main`. Files are named after
the result file's stem: ``<stem>_abs.tif`` and ``<stem>_ph.tif`` (float32, like the original GUI's
``_abs``/``_ph`` TIFFs), ``<stem>_ph_preview.tif`` (8-bit), ``<stem>_abs.png``/``<stem>_ph.png``, and the
original's ``<jobID>_object_0.csv``/``<jobID>_probes_0.csv`` with ``<jobID>_positions_0.csv`` (the run's
positions, refined ones included, in metres in the ``-lf`` format, when the pixel size is known). Images are not
flipped (row 0 on top).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import InputDataError
from ..safe_paths import UnsafePathError, path_inside, sanitised_name
from .errors import OutputWriteError
from .original_csv import write_original_outputs
from .results import read_result
from .writers import write_positions_csv

FORMATS = ("tiff", "png", "csv")


def to_uint8(image: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Scale a real ``(H, W)`` image linearly to uint8 (``lo`` -> 0, ``hi`` -> 255; NaN -> 0)."""
    img = np.asarray(image, dtype=np.float64)
    finite = img[np.isfinite(img)]
    lo = float(finite.min()) if lo is None and finite.size else (lo or 0.0)
    hi = float(finite.max()) if hi is None and finite.size else (hi if hi is not None else 1.0)
    span = hi - lo if hi > lo else 1.0
    out = np.clip((np.nan_to_num(img, nan=lo) - lo) / span * 255.0, 0, 255)
    return np.rint(out).astype(np.uint8)


def amplitude_phase(obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|O|, angle O) as float32 ``(H, W)`` arrays (phase in radians, [-pi, pi])."""
    obj = np.asarray(obj)
    return np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32)


def _guard(path: Path, write: object) -> Path:
    try:
        write()  # type: ignore[operator]
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}", path) from exc
    return path


def export_tiff(obj: np.ndarray, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>_abs.tif``, ``<stem>_ph.tif`` (float32) and ``<stem>_ph_preview.tif`` (uint8 phase)."""
    amp, ph = amplitude_phase(obj)
    files = []
    for suffix, img in (("_abs.tif", amp), ("_ph.tif", ph)):
        path = path_inside(out_dir, stem, suffix)
        files.append(_guard(path, lambda p=path, a=img: tifffile.imwrite(p, a, photometric="minisblack")))
    preview = path_inside(out_dir, stem, "_ph_preview.tif")
    files.append(_guard(preview, lambda: tifffile.imwrite(preview, to_uint8(ph), photometric="minisblack")))
    return files


def export_png(obj: np.ndarray, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>_abs.png`` and ``<stem>_ph.png``: 8-bit greyscale, each scaled to its own min..max."""
    amp, ph = amplitude_phase(obj)
    files = []
    for suffix, img in (("_abs.png", amp), ("_ph.png", ph)):
        path = path_inside(out_dir, stem, suffix)
        files.append(_guard(path, lambda p=path, a=img: Image.fromarray(to_uint8(a), mode="L").save(p)))
    return files


def export_result(result_path: Path | str, fmt: str, out_dir: Path | str | None = None) -> list[Path]:
    """Export a result file in ``fmt`` (tiff, png, csv) into ``out_dir`` (default: beside the file).

    Every file name comes from the result's stem or its ``-jobID``, checked as a plain file name and kept
    inside ``out_dir`` with symlinks resolved (:func:`~reconstruction.safe_paths.path_inside`); a name that is
    not raises :class:`~reconstruction.safe_paths.UnsafePathError` before anything is written.
    """
    result_path = Path(result_path)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    result = read_result(result_path)
    out = Path(out_dir) if out_dir is not None else result_path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create output directory {out}: {exc.strerror or exc}", out) from exc
    stem = sanitised_name(result_path.stem)
    if fmt == "tiff":
        return export_tiff(result.object, out, stem)
    if fmt == "png":
        return export_png(result.object, out, stem)
    params = result.parameters
    job = getattr(getattr(params, "experiment", None), "job_id", "") or stem
    binary = bool(getattr(getattr(params, "output", None), "binary_output", False))
    files = write_original_outputs(result.object, result.probe, out, job, 0, binary)
    if result.pixel_size_m:
        path = path_inside(out, job, "_positions_0.csv", what="-jobID")
        positions_m = np.asarray(result.positions_px, dtype=np.float64) * result.pixel_size_m
        files.append(_guard(path, lambda: write_positions_csv(positions_m, path)))
    return files


def build_parser(prog: str = "ptychopy export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Export a ptychopy result file.")
    parser.add_argument("result", help="result file (.h5) written by ptychopy run")
    parser.add_argument("--format", "-f", choices=FORMATS, default="tiff", help="output format")
    parser.add_argument("--out", "-o", default=None, help="output directory (default: beside the result)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``ptychopy export RESULT.h5 --format tiff|png|csv [--out DIR]``; prints written files.

    Returns 0 on success, 2 for a missing/unreadable result, an unwritable output or an unsafe file name.
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

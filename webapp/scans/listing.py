"""Start a job from a scan on disk: list scans under the data roots and derive the form's defaults from one.

For an HDF5, NeXus/NXmx, CXI or TIFF file the defaults are the data pattern (a numbered file of a multi-file
scan gives its ``#06d`` pattern, first index and file count), frames per file, raw frame size, a scan grid that
matches the frame count, the metadata the file records (wavelength, distance, detector pixel, beam centre, mask,
positions; the user's own values win) and else the pattern centre at the centre of mass of the summed frames
(``reconstruction.io`` reads at most 16 frames). An ``.mda`` file gives the grid, steps, wavelength and
positions (``-lf`` = the file: its positioners' measured readbacks) it records, and notes naming its positioners
and detectors.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reconstruction import Parameters

from .paths import confine, data_roots

SCAN_SUFFIXES = (".h5", ".hdf5", ".nxs", ".cxi", ".tif", ".tiff", ".mda")
MAX_DEPTH = 3
MAX_LISTED = 300
MAX_FOLDERS = 2000
MAX_WALK_S = 0.5


@dataclass(frozen=True)
class ScanChoice:
    path: str  # absolute
    label: str  # relative to its root


@dataclass(frozen=True)
class ScanDefaults:
    parameters: Parameters
    notes: list[str]


def list_scans(limit: int = MAX_LISTED, budget_s: float = MAX_WALK_S) -> list[ScanChoice]:
    """Scan files under the data roots (3 folders deep at most), newest first.

    The walk stops after ``MAX_FOLDERS`` folders or ``budget_s`` seconds: a big beamline file system must not
    slow the form down (a path can always be typed).
    """
    found: list[tuple[float, ScanChoice]] = []
    deadline = time.monotonic() + budget_s
    folders = 0
    for root in data_roots():
        if not root.is_dir():
            continue
        base_depth = len(root.parts)
        for folder, dirs, files in os.walk(root):
            folders += 1
            if folders > MAX_FOLDERS or time.monotonic() > deadline:
                break
            depth = len(Path(folder).parts) - base_depth
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))[:200] if depth < MAX_DEPTH else []
            for name in files:
                if name.lower().endswith(SCAN_SUFFIXES):
                    path = Path(folder) / name
                    try:
                        mtime = path.stat().st_mtime
                    except OSError:
                        continue
                    found.append((mtime, ScanChoice(str(path), str(path.relative_to(root)))))
            if len(found) > 10 * limit:
                break
    found.sort(key=lambda item: item[0], reverse=True)
    return [choice for _, choice in found[:limit]]


def defaults_from_scan(raw_path: str, base: Parameters | None = None) -> ScanDefaults:
    """Parameters filled from the scan at ``raw_path`` (confined to the data roots).

    Raises ``PathNotAllowed`` for a path outside the roots and ``ValueError``/``OSError`` (with the reason)
    for a file that cannot be read.
    """
    base = base or Parameters()
    path = Path(confine(raw_path))
    if not path.is_file():
        raise ValueError(f"{raw_path}: no such file")
    if path.suffix.lower() == ".mda":
        from reconstruction.io import apply_mda
        from reconstruction.io.mda import describe_mda, read_mda

        params = apply_mda(base, path)
        changed = sorted(k for k, v in params.changed().items() if base.get(k) != v)
        return ScanDefaults(params, [f"from {path.name}: " + (", ".join(changed) or "nothing new"),
                                     *describe_mda(read_mda(path))])
    return _hdf5_defaults(path, base)


def _hdf5_defaults(path: Path, base: Parameters) -> ScanDefaults:
    """Defaults from an HDF5/NeXus/CXI/TIFF file: its metadata (``reconstruction.io.scan_metadata``; values the
    user set in ``base`` win), the numbered series it belongs to (``#06d`` pattern, first index, file count),
    the frame count and grid, and the beam centre (from the file, else the centre of mass of <= 16 frames)."""
    from reconstruction.io import Scan, inspect
    from reconstruction.io.patterns import find_numbered_series, format_pattern
    from reconstruction.io.scan_metadata import (
        check_positions,
        describe_metadata,
        parameter_changes,
        read_series_metadata,
        user_given,
    )
    from reconstruction.io.sources import open_source

    given = user_given(base)
    meta = read_series_metadata(path, base.data.hdf5_path)
    from_file = parameter_changes(meta, given)
    dataset = from_file.get("data.hdf5_path", base.data.hdf5_path)
    with open_source(path, dataset, base.data.raw_frame_px) as src:
        per_file, shape = int(src.frames), (int(src.frame_shape[0]), int(src.frame_shape[1]))
    if per_file < 1:
        raise ValueError(f"{path}, dataset {dataset}: holds no frames")
    series = find_numbered_series(path)
    pattern, first, frames = str(path), 0, per_file
    if series is not None:
        last = Path(format_pattern(series.pattern, series.first_index + series.files - 1))
        with open_source(last, dataset, base.data.raw_frame_px) as src:
            frames = (series.files - 1) * per_file + min(int(src.frames), per_file)
        pattern, first = series.pattern, series.first_index
    check_positions(meta, frames)
    grid = _grid_for(frames, base.experiment.scan_dims)
    size = base.preprocessing.size_px
    if size > min(shape):
        size = 2 ** int(math.log2(min(shape)))
    changes: dict[str, Any] = {
        **from_file, "data.file_pattern": pattern, "data.simulate": False, "data.frames_per_file": per_file,
        "data.first_file_index": first, "data.raw_frame_px": shape, "experiment.scan_dims": grid,
        "preprocessing.size_px": size,
    }
    params = base.replace(changes)
    seen = inspect(Scan.from_parameters(params), max_frames=16)
    notes = [f"{path.name}: {per_file} frames of {shape[0]} x {shape[1]} px ({seen.dtype}) in {dataset}"]
    if series is not None:
        notes.append(f"multi-file scan: {series.files} files {Path(pattern).name} from number {first}, "
                     f"{frames} frames in all")
    if "preprocessing.crop_center_px" in from_file:
        centre = params.preprocessing.crop_center_px
        how = "the beam centre the file records"
    else:
        centre = _centre_of_mass(seen.summed, size)
        how = f"centre of mass of {seen.frames_read} summed frames"
    params = params.replace({"preprocessing.crop_center_px": centre})
    notes.append(f"scan grid {grid[0]} x {grid[1]}; pattern centre {centre[0]}, {centre[1]} ({how}); "
                 f"check the geometry and step")
    if meta.layout not in ("HDF5", "TIFF", "raw"):
        read = [line for line in describe_metadata(meta) if not line.endswith("left to the user")]
        notes.append(f"{meta.layout} metadata read: " + ("; ".join(read) or "none"))
        left = meta.left_to_user()
        if left:
            notes.append("not in the file, yours to give: " + ", ".join(left))
    kept = sorted(leaf for leaf in given if leaf in parameter_changes(meta))
    if kept:
        notes.append("your values kept over the file's: " + ", ".join(kept))
    return ScanDefaults(params, notes)


def _grid_for(frames: int, current: tuple[int, int]) -> tuple[int, int]:
    if current[0] * current[1] == frames:
        return current
    side = math.isqrt(frames)
    return (side, side) if side * side == frames else (frames, 1)


def _centre_of_mass(summed: np.ndarray, size: int) -> tuple[int, int]:
    """Centre of mass (row, col), moved inward so a size x size crop around it fits in the frame."""
    img = np.clip(np.nan_to_num(np.asarray(summed, dtype=np.float64)), 0, None)
    total = img.sum()
    h, w = img.shape
    if total <= 0:
        r, c = h // 2, w // 2
    else:
        r = int(round(float((img.sum(axis=1) * np.arange(h)).sum() / total)))
        c = int(round(float((img.sum(axis=0) * np.arange(w)).sum() / total)))
    half = size // 2
    r = min(max(r, half), h - (size - half))
    c = min(max(c, half), w - (size - half))
    return int(r), int(c)

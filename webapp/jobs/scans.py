"""Start a job from a scan on disk: list scans under the data roots and derive the form's defaults from one.

For an HDF5 file the defaults are the data pattern, frames per file, raw frame size, a scan grid that matches
the frame count, and the pattern centre at the centre of mass of the summed frames (``reconstruction.io``
reads at most 16 frames). An ``.mda`` file gives the grid, steps and wavelength it records.
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

        params = apply_mda(base, path)
        changed = sorted(k for k, v in params.changed().items() if base.get(k) != v)
        return ScanDefaults(params, [f"from {path.name}: " + (", ".join(changed) or "nothing new")])
    return _hdf5_defaults(path, base)


def _hdf5_defaults(path: Path, base: Parameters) -> ScanDefaults:
    from reconstruction.io import Scan, inspect
    from reconstruction.io.sources import open_source

    d = base.data
    with open_source(path, d.hdf5_path, d.raw_frame_px) as src:
        frames, shape = int(src.frames), (int(src.frame_shape[0]), int(src.frame_shape[1]))
    if frames < 1:
        raise ValueError(f"{path}, dataset {d.hdf5_path}: holds no frames")
    grid = _grid_for(frames, base.experiment.scan_dims)
    size = base.preprocessing.size_px
    if size > min(shape):
        size = 2 ** int(math.log2(min(shape)))
    changes: dict[str, Any] = {
        "data.file_pattern": str(path), "data.simulate": False, "data.frames_per_file": frames,
        "data.first_file_index": 0, "data.raw_frame_px": shape, "experiment.scan_dims": grid,
        "preprocessing.size_px": size,
    }
    params = base.replace(changes)
    seen = inspect(Scan.from_parameters(params), max_frames=16)
    centre = _centre_of_mass(seen.summed, size)
    params = params.replace({"preprocessing.crop_center_px": centre})
    notes = [
        f"{path.name}: {frames} frames of {shape[0]} x {shape[1]} px ({seen.dtype}) in {d.hdf5_path}",
        f"scan grid {grid[0]} x {grid[1]}; pattern centre {centre[0]}, {centre[1]} "
        f"(centre of mass of {seen.frames_read} summed frames); check the geometry and step",
    ]
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

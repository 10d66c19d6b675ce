"""Is a scan's data on disk complete? One look, no waiting (the worker retries with back-off).

The original's multi-file layout: ``file_pattern`` with ``#`` for printf's ``%`` (``scan7_data_#06d.h5``), files
``first_file_index, first_file_index + 1, ...`` of ``frames_per_file`` frames each at ``hdf5_path``
(the last file may hold fewer). A file counts as complete when its final name exists (areaDetector writes
``name + TempSuffix`` and renames it on close), it opens read-only, and its dataset holds all its frames.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")


@dataclass(frozen=True)
class FilesStatus:
    """Result of one look: ``complete``, or ``reason`` naming the file and dataset that is not ready."""

    complete: bool
    reason: str
    signature: tuple[tuple[str, int, int], ...] = ()  # (path, size, mtime_ns) of each file
    frames: int = 0


def expand_pattern(pattern: str, index: int) -> str:
    """``scan7_data_#06d.h5`` and 3 -> ``scan7_data_000003.h5`` (the original's ``#`` = printf ``%``)."""
    if "#" not in pattern:
        return pattern
    return pattern.replace("%", "%%").replace("#", "%") % index


def expected_files(pattern: str, first_index: int, n_frames: int, frames_per_file: int) -> list[tuple[str, int]]:
    """``[(path, frames)]`` the scan should produce."""
    if "#" not in pattern:
        return [(pattern, n_frames)]
    n_files = max(1, math.ceil(n_frames / frames_per_file))
    out = []
    for k in range(n_files):
        frames = min(frames_per_file, n_frames - k * frames_per_file)
        out.append((expand_pattern(pattern, first_index + k), frames))
    return out


def check_files(pattern: str, first_index: int, n_frames: int, frames_per_file: int, hdf5_path: str,
                temp_suffix: str = ".tmp") -> FilesStatus:
    """Look once at every file of the scan."""
    signature: list[tuple[str, int, int]] = []
    total = 0
    for path, frames in expected_files(pattern, first_index, n_frames, frames_per_file):
        status = check_file(path, frames, hdf5_path, temp_suffix)
        if not status.complete:
            return FilesStatus(False, status.reason, frames=total)
        signature.extend(status.signature)
        total += status.frames
    return FilesStatus(True, f"{len(signature)} file(s), {total} frames", tuple(signature), total)


def check_file(path: str, frames: int, hdf5_path: str, temp_suffix: str = ".tmp") -> FilesStatus:
    """One file: final name present, readable, and (for HDF5) ``hdf5_path`` holds at least ``frames`` frames."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if temp_suffix and os.path.exists(path + temp_suffix):
            return FilesStatus(False, f"{path}: still being written ({path + temp_suffix} exists)")
        return FilesStatus(False, f"{path}: does not exist yet")
    except OSError as exc:
        return FilesStatus(False, f"{path}: cannot stat: {exc.strerror or exc}")
    sig = ((path, st.st_size, st.st_mtime_ns),)
    if not path.lower().endswith(HDF5_SUFFIXES):
        if st.st_size == 0:
            return FilesStatus(False, f"{path}: empty")
        return FilesStatus(True, "present", sig, frames)
    import h5py  # imported here: the config and trigger modules stay light

    try:
        with h5py.File(path, "r") as f:
            if hdf5_path not in f:
                return FilesStatus(False, f"{path}: no dataset {hdf5_path}")
            dset = f[hdf5_path]
            if not isinstance(dset, h5py.Dataset) or dset.ndim not in (2, 3):
                shape = getattr(dset, "shape", None)
                return FilesStatus(False, f"{path}:{hdf5_path}: expected (frames, rows, cols), got shape {shape}")
            have = 1 if dset.ndim == 2 else int(dset.shape[0])
    except (OSError, BlockingIOError) as exc:  # locked by the writer, truncated, not HDF5 (yet)
        return FilesStatus(False, f"{path}: cannot open read-only yet: {exc}")
    if have < frames:
        return FilesStatus(False, f"{path}:{hdf5_path}: holds {have} of {frames} frames")
    return FilesStatus(True, "complete", sig, frames)

"""Write scans in the original's layouts (for tests, the simulated IOC and conversions).

``write_scan_files`` splits ``(N, H, W)`` frames into files of ``dpf`` frames named by the '#' pattern
(scan point k -> file k // dpf + fs, frame k % dpf), or one file when the pattern has no '#'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from .patterns import format_pattern, is_multi_file

COMPRESSIONS = (None, "gzip", "lzf", "lz4", "bitshuffle", "bitshuffle-lz4", "zstd")


def compression_options(compression: str | None) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords for a compression name in :data:`COMPRESSIONS`."""
    if compression is None or compression == "none":
        return {}
    if compression in ("gzip", "lzf"):
        return {"compression": compression}
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    if compression == "bitshuffle":
        return dict(hdf5plugin.Bitshuffle(cname="none"))
    if compression == "bitshuffle-lz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "zstd":
        return dict(hdf5plugin.Zstd())
    raise ValueError(f"compression={compression!r}: expected one of {COMPRESSIONS}")


def write_frames(path: Path | str, frames: np.ndarray, dataset: str = "/entry/data/data",
                 compression: str | None = None, rank2: bool = False) -> Path:
    """Write ``frames`` ``(k, H, W)`` to a new HDF5 file (chunked one frame per chunk); ``rank2`` writes a
    single frame as a ``(H, W)`` dataset. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    data = frames[0] if rank2 else frames
    chunks = data.shape if rank2 else (1, *frames.shape[1:])
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=data, chunks=chunks, **compression_options(compression))
    return path


def write_scan_files(intensities: np.ndarray, directory: Path | str, pattern: str, dpf: int = 1, *,
                     compression: str | None = None, first_file_index: int = 0,
                     dataset: str = "/entry/data/data", dtype: Any = None, rank2: bool = False,
                     ) -> list[Path]:
    """Write ``intensities`` ``(N, H, W)`` as the original's file set; returns the files in order.

    ``pattern`` is a file name with '#' for '%' (``scan_#06d.h5``) relative to ``directory``; without '#'
    one file holds all N frames. ``dtype`` converts (e.g. ``np.uint32`` for detector counts; values are
    rounded; values out of its range raise ValueError). ``rank2`` with ``dpf == 1`` writes each frame as
    a ``(H, W)`` dataset.
    """
    data = np.asarray(intensities)
    if dtype is not None and np.dtype(dtype).kind in "iu":
        data = np.rint(data)
        info = np.iinfo(dtype)
        if data.size and (data.min() < info.min or data.max() > info.max):
            raise ValueError(f"values {data.min():g}..{data.max():g} do not fit {np.dtype(dtype)}")
    if dtype is not None:
        data = data.astype(dtype)
    directory = Path(directory)
    if not is_multi_file(pattern):
        return [write_frames(directory / pattern, data, dataset, compression)]
    if rank2 and dpf != 1:
        raise ValueError("rank2 files hold one pattern each: dpf must be 1")
    paths = []
    for i, start in enumerate(range(0, data.shape[0], dpf)):
        path = directory / format_pattern(pattern, first_file_index + i)
        paths.append(write_frames(path, data[start:start + dpf], dataset, compression, rank2))
    return paths


def write_positions_csv(positions_m: Sequence[Sequence[float]] | np.ndarray, path: Path | str) -> Path:
    """The original's ``-lf`` file: one ``axis0, axis1`` line (metres) per point."""
    path = Path(path)
    arr = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
    path.write_text("".join(f"{a:.9e}, {b:.9e}\n" for a, b in arr))
    return path

"""One data file as a source of frames: HDF5 (``.h5``...), TIFF (``.tif``), the original's raw ``.bin`` and ``.csv``.

A source knows its frame count and frame shape and reads a crop window of a frame range as float32
(:meth:`FrameSource.read`). HDF5 is read lazily through hyperslabs; ``.bin`` through a read-only memory
map; ``.csv`` is parsed whole (the original's format has no random access).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import h5py
import numpy as np
import tifffile

from ..errors import InputDataError
from .errors import where
from .hdf5_reader import DEFAULT_LOCK_WAIT_S, describe, frame_datasets, open_file, read_window
from .preprocess import CropWindow, crop

RAW_SUFFIXES = (".bin", ".csv")
TIFF_SUFFIXES = (".tif", ".tiff")


class FrameSource(Protocol):
    path: Path
    dataset: str | None
    frames: int
    frame_shape: tuple[int, int]
    dtype: str
    compression: tuple[str, ...]

    def read(self, start: int, stop: int, window: CropWindow | None, out: np.ndarray | None = None
             ) -> np.ndarray: ...

    def close(self) -> None: ...


class Hdf5Source:
    """Frames of one HDF5 dataset, rank 3 ``(N, H, W)`` or rank 2 (one frame), or of the consecutive
    ``data_NNNNNN`` datasets of an Eiger master file (:func:`frame_datasets`); file opened read-only."""

    def __init__(self, path: Path, dataset: str, wait_s: float = DEFAULT_LOCK_WAIT_S):
        self.path = Path(path)
        self._file: h5py.File = open_file(self.path, wait_s)
        try:
            self._parts = frame_datasets(self._file, dataset)
            infos = [describe(ds) for ds in self._parts]
            for ds, info in zip(self._parts[1:], infos[1:], strict=True):
                if info.frame_shape != infos[0].frame_shape or ds.ndim != 3 or self._parts[0].ndim != 3:
                    raise InputDataError(f"{where(self.path, info.dataset)}: shape {ds.shape} does not continue "
                                         f"{infos[0].dataset} (shape {self._parts[0].shape})")
        except BaseException:
            self._file.close()
            raise
        self.dataset: str | None = dataset
        self._starts = np.cumsum([0] + [i.frames for i in infos])
        self.frames, self.frame_shape = int(self._starts[-1]), infos[0].frame_shape
        self.dtype, self.compression, self.chunks = infos[0].dtype, infos[0].compression, infos[0].chunks

    def read(self, start: int, stop: int, window: CropWindow | None, out: np.ndarray | None = None
             ) -> np.ndarray:
        """Frames ``start:stop`` cut to ``window`` -> float32 ``(k, n, n)`` (see :func:`read_window`)."""
        if len(self._parts) == 1:
            return read_window(self._parts[0], start, stop, window, out)
        if not 0 <= start <= stop <= self.frames:
            raise InputDataError(f"{where(self.path, self.dataset, stop - 1)}: missing; the datasets hold "
                                 f"{self.frames} frames")
        n_rows, n_cols = (window.size_px, window.size_px) if window is not None else self.frame_shape
        if out is None:
            out = np.zeros((stop - start, n_rows, n_cols), dtype=np.float32)
        for part, first in zip(self._parts, self._starts[:-1], strict=False):
            a, b = max(start, int(first)), min(stop, int(first) + int(part.shape[0]))
            if a < b:
                read_window(part, a - int(first), b - int(first), window, out[a - start:b - start])
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Hdf5Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawSource:
    """The original's ``.bin`` (raw float32, frame k at offset k*rows*cols) or ``.csv`` (comma floats)."""

    def __init__(self, path: Path, frame_shape: tuple[int, int]):
        self.path = Path(path)
        self.dataset: str | None = None
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.compression: tuple[str, ...] = ()
        self.dtype = "float32"
        per_frame = self.frame_shape[0] * self.frame_shape[1]
        if not self.path.exists():
            raise InputDataError(f"{where(self.path)}: no such file")
        try:
            flat: np.ndarray
            if self.path.suffix.lower() == ".bin":
                flat = np.memmap(self.path, dtype=np.float32, mode="r")
            else:
                text = self.path.read_text().replace("\n", ",")
                flat = np.array([float(v) for v in text.split(",") if v.strip()], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise InputDataError(f"{where(self.path)}: cannot be read as {self.path.suffix} data: {exc}"
                                 ) from exc
        if flat.size % per_frame:
            raise InputDataError(f"{where(self.path)}: holds {flat.size} values, not a whole number of "
                                 f"{self.frame_shape[0]}x{self.frame_shape[1]} frames (-nxy)")
        self._frames = flat.reshape(-1, *self.frame_shape)
        self.frames = int(self._frames.shape[0])

    def read(self, start: int, stop: int, window: CropWindow | None, out: np.ndarray | None = None
             ) -> np.ndarray:
        return _cut(np.asarray(self._frames[start:stop], dtype=np.float32), window, out)

    def close(self) -> None:
        self._frames = np.empty((0, *self.frame_shape), dtype=np.float32)

    def __enter__(self) -> RawSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut(block: np.ndarray, window: CropWindow | None, out: np.ndarray | None) -> np.ndarray:
    """float32 frames ``block`` cut to ``window`` (zero padded outside), into ``out`` when given."""
    data = block if window is None else crop(block, window)
    if out is None:
        return np.array(data, dtype=np.float32)
    out[...] = data
    return out


class TiffSource:
    """Frames of the first image series of a TIFF file (tifffile, plain or ImageJ), ``(N, H, W)`` or one
    ``(H, W)`` frame, decoded one page range at a time; ``dataset`` is None (TIFF has no paths)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.dataset: str | None = None
        self.compression: tuple[str, ...] = ()
        if not self.path.exists():
            raise InputDataError(f"{where(self.path)}: no such file")
        try:
            self._tif = tifffile.TiffFile(self.path)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise InputDataError(f"{where(self.path)}: not a readable TIFF file ({exc})") from exc
        try:
            series = self._tif.series[0]
            shape = tuple(int(s) for s in series.shape)
            if len(shape) not in (2, 3) or "S" in series.axes or not np.issubdtype(series.dtype, np.number):
                raise InputDataError(f"{where(self.path)}: first image series has shape {shape} (axes "
                                     f"{series.axes}) and type {series.dtype}; expected one numeric channel, "
                                     f"(frames, rows, cols) or (rows, cols)")
            page = series.keyframe
            name = getattr(page.compression, "name", str(page.compression)).lower()
            if name not in ("none", "1"):
                self.compression = (name,)
        except BaseException:
            self._tif.close()
            raise
        self.frames = 1 if len(shape) == 2 else shape[0]
        self.frame_shape = (shape[-2], shape[-1])
        self.dtype = str(series.dtype)

    def read(self, start: int, stop: int, window: CropWindow | None, out: np.ndarray | None = None
             ) -> np.ndarray:
        """Frames ``start:stop`` cut to ``window`` (zero padded outside) -> float32 ``(k, n, n)``."""
        if not 0 <= start <= stop <= self.frames:
            raise InputDataError(f"{where(self.path, None, stop - 1)}: missing; the file holds "
                                 f"{self.frames} frame(s)")
        try:
            block = self._tif.asarray(key=range(start, stop), series=0) if stop > start else \
                np.zeros((0, *self.frame_shape), dtype=np.float32)
        except (OSError, ValueError, tifffile.TiffFileError) as exc:
            raise InputDataError(f"{where(self.path, None, start)}: cannot be decoded ({exc})") from exc
        return _cut(np.asarray(block, dtype=np.float32).reshape(stop - start, *self.frame_shape), window, out)

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> TiffSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(path: Path, dataset: str, raw_frame_px: tuple[int, int],
                wait_s: float = DEFAULT_LOCK_WAIT_S) -> Hdf5Source | RawSource | TiffSource:
    """The frame source for ``path``, chosen by extension like the original (.bin, .csv, .tif/.tiff, else
    HDF5)."""
    suffix = Path(path).suffix.lower()
    if suffix in RAW_SUFFIXES:
        return RawSource(path, raw_frame_px)
    if suffix in TIFF_SUFFIXES:
        return TiffSource(path)
    return Hdf5Source(path, dataset, wait_s)

"""Read-only, lazy HDF5 access: open with retry, find the dataset, read crop windows of frame ranges.

``import hdf5plugin`` registers the LZ4, bitshuffle, Blosc and Zstd filters that Eiger/areaDetector files
use, so compressed datasets read transparently. Files are always opened with mode ``"r"``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters)
import numpy as np

from ..errors import InputDataError
from .errors import where
from .preprocess import CropWindow

DEFAULT_LOCK_WAIT_S = 5.0  # how long to retry a file another process holds locked (still being written)

# HDF5 filter ids -> short names (https://portal.hdfgroup.org registered filters).
FILTER_NAMES = {
    1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
    32000: "lzf", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32015: "zstd", 32026: "blosc2",
}


def _is_lock_error(exc: OSError) -> bool:
    # h5py raises BlockingIOError for "unable to lock file"; errno of other OSErrors may be stale.
    return isinstance(exc, BlockingIOError) or "unable to lock" in str(exc).lower()


def open_file(path: Path | str, wait_s: float = DEFAULT_LOCK_WAIT_S, first_delay_s: float = 0.05) -> h5py.File:
    """Open ``path`` read-only. A locked file (being written) is retried with doubling delays for
    ``wait_s`` seconds; a missing, truncated or corrupt file raises :class:`InputDataError`.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # HDF5 would block in open() on a FIFO, holding the GIL
        raise InputDataError(f"{where(path)}: is not a regular file (a FIFO, a device or a folder), so it cannot be "
                             "read as HDF5")
    deadline = time.monotonic() + max(wait_s, 0.0)
    delay = first_delay_s
    while True:
        try:
            # best-effort: file systems without locking (some NFS/GPFS mounts) still open; a writer's
            # lock on a file being written is still seen and waited for.
            return h5py.File(path, "r", locking="best-effort")
        except FileNotFoundError:
            raise InputDataError(f"{where(path)}: no such file") from None
        except OSError as exc:
            if not path.exists():
                raise InputDataError(f"{where(path)}: no such file") from None
            if _is_lock_error(exc):
                if time.monotonic() + delay > deadline:
                    raise InputDataError(
                        f"{where(path)}: still locked by another process (being written?) after waiting "
                        f"{wait_s:g} s; try again when the acquisition has finished ({exc})"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            raise InputDataError(f"{where(path)}: not a readable HDF5 file (truncated or corrupt?): {exc}"
                                 ) from exc


@contextlib.contextmanager
def opened(path: Path | str, wait_s: float = DEFAULT_LOCK_WAIT_S) -> Iterator[h5py.File]:
    """Context manager around :func:`open_file` that always closes the file."""
    f = open_file(path, wait_s)
    try:
        yield f
    finally:
        f.close()


def get_dataset(f: h5py.File, dataset_path: str) -> h5py.Dataset:
    """The dataset at ``dataset_path``; a missing path or a group raises :class:`InputDataError`."""
    try:
        obj = f.get(dataset_path)
    except (OSError, KeyError, ValueError) as exc:  # broken links, corrupt headers
        raise InputDataError(f"{where(f.filename, dataset_path)}: cannot be read: {exc}") from exc
    if obj is None:
        raise InputDataError(f"{where(f.filename, dataset_path)}: no such dataset (set -hdf5path; "
                             f"the file holds {_list_datasets(f)})")
    if not isinstance(obj, h5py.Dataset):
        raise InputDataError(f"{where(f.filename, dataset_path)}: is a group, not a dataset "
                             f"(the file holds {_list_datasets(f)})")
    return obj


_SPLIT_NAME = re.compile(r"^(?P<base>.*)_(?P<num>\d{6})$")


def frame_datasets(f: h5py.File, dataset_path: str) -> list[h5py.Dataset]:
    """The dataset(s) holding the frames at ``dataset_path``, in frame order.

    A dataset is itself. Eiger/areaDetector master files split the frames into ``data_000001``,
    ``data_000002``... (usually external links to data files): a group path lists its ``*_NNNNNN`` datasets,
    and a missing ``.../data`` falls back to its ``.../data_NNNNNN`` siblings.
    """
    try:
        obj = f.get(dataset_path)
    except (OSError, KeyError, ValueError) as exc:
        raise InputDataError(f"{where(f.filename, dataset_path)}: cannot be read: {exc}") from exc
    if isinstance(obj, h5py.Dataset):
        return [obj]
    if isinstance(obj, h5py.Group):
        group, prefix = obj, None
    else:
        parent, _, leaf = dataset_path.rstrip("/").rpartition("/")
        try:
            group = f.get(parent or "/")
        except (OSError, KeyError, ValueError):
            group = None
        prefix = leaf
    names: list[str] = []
    if isinstance(group, h5py.Group):
        for name in group:
            m = _SPLIT_NAME.match(name)
            if m and (prefix is None or m.group("base") == prefix):
                names.append(name)
    if not names:
        return [get_dataset(f, dataset_path)]  # raises the usual "no such dataset" / "is a group"
    out = []
    for name in sorted(names):
        full = f"{group.name.rstrip('/')}/{name}"
        try:
            ds = group.get(name)
        except (OSError, KeyError, ValueError) as exc:
            raise InputDataError(f"{where(f.filename, full)}: cannot be read (missing linked file?): {exc}"
                                 ) from exc
        if not isinstance(ds, h5py.Dataset):
            raise InputDataError(f"{where(f.filename, full)}: cannot be read (missing linked file?)")
        out.append(ds)
    return out


def _list_datasets(f: h5py.File, limit: int = 8) -> str:
    names: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and len(names) <= limit:
            names.append("/" + name)

    with contextlib.suppress(Exception):
        f.visititems(visit)
    if not names:
        return "no datasets"
    more = ", ..." if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def filter_names(ds: h5py.Dataset) -> tuple[str, ...]:
    """Names of the dataset's HDF5 filters in pipeline order, e.g. ``("bitshuffle",)`` or ``("gzip",)``."""
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code = int(plist.get_filter(i)[0])
        out.append(FILTER_NAMES.get(code, f"filter {code}"))
    return tuple(out)


@dataclass(frozen=True)
class DatasetInfo:
    """Shape facts of a frame dataset: ``frames`` patterns of ``frame_shape`` (rows, cols)."""

    path: Path
    dataset: str
    frames: int
    frame_shape: tuple[int, int]
    dtype: str
    compression: tuple[str, ...]
    chunks: tuple[int, ...] | None


def describe(ds: h5py.Dataset) -> DatasetInfo:
    """Frames and frame shape of a rank-3 ``(N, H, W)`` or rank-2 ``(H, W)`` (one frame) dataset."""
    path = Path(ds.file.filename)
    if ds.ndim == 3:
        frames, shape = int(ds.shape[0]), (int(ds.shape[1]), int(ds.shape[2]))
    elif ds.ndim == 2:
        frames, shape = 1, (int(ds.shape[0]), int(ds.shape[1]))
    else:
        raise InputDataError(f"{where(path, ds.name)}: has rank {ds.ndim} (shape {ds.shape}); expected "
                             f"(frames, rows, cols) or one (rows, cols) pattern")
    if ds.dtype.kind not in "biuf":
        raise InputDataError(f"{where(path, ds.name)}: holds {ds.dtype} values; expected real numbers")
    return DatasetInfo(path, ds.name, frames, shape, str(ds.dtype), filter_names(ds), ds.chunks)


def read_window(ds: h5py.Dataset, start: int, stop: int, window: CropWindow | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """Frames ``start:stop`` of ``ds``, cut to ``window`` (zero padded outside), as float32.

    Returns ``(stop - start, n, n)`` (or ``(k, H, W)`` without a window); reads only the window's
    hyperslab, converting to float32 inside HDF5 (no full-frame or native-dtype copy). ``out``, when given,
    is filled and returned. Read failures raise :class:`InputDataError` naming file, dataset and frames.
    """
    info_shape = ds.shape[-2:]
    k = stop - start
    if window is None:
        shape = (k, int(info_shape[0]), int(info_shape[1]))
        clip: tuple[slice, slice, slice, slice] | None = (
            slice(0, shape[1]), slice(0, shape[2]), slice(0, shape[1]), slice(0, shape[2]))
    else:
        shape = (k, window.size_px, window.size_px)
        clip = window.clip((int(info_shape[0]), int(info_shape[1])))
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        out[...] = 0
    if clip is None or k == 0:
        return out
    sr, sc, dr, dc = clip
    try:
        if ds.ndim == 3:
            ds.read_direct(out, source_sel=np.s_[start:stop, sr, sc], dest_sel=np.s_[:, dr, dc])
        else:
            if (start, stop) != (0, 1):
                raise InputDataError(f"{where(ds.file.filename, ds.name, start)}: the dataset holds one "
                                     f"(rows, cols) pattern; frame {start} does not exist")
            ds.read_direct(out, source_sel=np.s_[sr, sc], dest_sel=np.s_[0, dr, dc])
    except InputDataError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        frames = f"{start}" if k == 1 else f"{start}..{stop - 1}"
        raise InputDataError(f"{where(ds.file.filename, ds.name)}, frames {frames}: cannot be read "
                             f"(corrupt or truncated data?): {exc}") from exc
    return out

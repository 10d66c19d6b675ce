"""Detector masks: the bad-pixel mask (``-mask``, True = bad) and the original's ``beamstopMask.h5``.

Both are read in detector-frame coordinates and taken through the same crop/rotation/shift as the data
(:func:`reconstruction.io.preprocess.prepare_mask`). A mask file name may carry a dataset after ``::``
(``mask.h5::/entry/instrument/detector/pixel_mask``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputDataError
from .errors import where
from .hdf5_reader import get_dataset, opened

#: CXI's mask bit for "signal above the background": informative, not a bad pixel (cdtools reads it as good)
CXI_ABOVE_BACKGROUND = 0x00001000

# Where a bad-pixel mask usually lives when no dataset is named (NeXus/Eiger first).
MASK_DATASETS = ("/entry/instrument/detector/pixel_mask", "/entry/instrument/detector/detectorSpecific/"
                 "pixel_mask", "/mask", "/pixel_mask", "/bad_pixel_mask", "/data")


def split_dataset(spec: str) -> tuple[Path, str | None]:
    """``"file.h5::/path"`` -> (Path("file.h5"), "/path"); without ``::`` the dataset is None."""
    name, sep, ds = spec.partition("::")
    return Path(name), (ds or None) if sep else None


def _read_hdf5_array(path: Path, dataset: str | None, candidates: tuple[str, ...]) -> tuple[np.ndarray, str]:
    with opened(path) as f:
        if dataset is None:
            found = [c for c in candidates if c in f]
            if not found:
                names: list[str] = []
                f.visititems(lambda n, o: names.append("/" + n) if hasattr(o, "shape") else None)
                if len(names) != 1:
                    raise InputDataError(f"{where(path)}: name the mask dataset as {path}::/path "
                                         f"(found {', '.join(names) or 'no datasets'})")
                found = names
            dataset = found[0]
        ds = get_dataset(f, dataset)
        try:
            return np.asarray(ds[()]), dataset
        except OSError as exc:
            raise InputDataError(f"{where(path, dataset)}: cannot be read: {exc}") from exc


def read_bad_pixel_mask(spec: str) -> np.ndarray:
    """The bad-pixel mask as boolean ``(H, W)``, True where a pixel is bad (nonzero values are bad; in a CXI
    file's ``/entry_1/...`` mask the bit 0x1000, "signal above the background", alone is not bad).

    ``spec`` is a ``.npy`` file or an HDF5 file (``file.h5`` or ``file.h5::/dataset``). A stack
    ``(k, H, W)`` is reduced with "bad in any frame".
    """
    path, dataset = split_dataset(spec)
    if not path.exists():
        raise InputDataError(f"{where(path)}: bad-pixel mask file not found (-mask)")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputDataError(f"{where(path)}: not a readable .npy mask: {exc}") from exc
        dataset = None
    else:
        arr, dataset = _read_hdf5_array(path, dataset, MASK_DATASETS)
        if dataset.startswith("/entry_1/") and np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize > 1:
            arr = arr & ~arr.dtype.type(CXI_ABOVE_BACKGROUND)
    if arr.ndim == 3:
        arr = np.any(arr != 0, axis=0)
    if arr.ndim != 2:
        raise InputDataError(f"{where(path, dataset)}: mask has shape {arr.shape}; expected (rows, cols)")
    return np.asarray(arr != 0, dtype=bool)


def beamstop_path(file_pattern: str) -> Path:
    """The original's beamstop mask location: ``beamstopMask.h5`` beside the data files."""
    return Path(file_pattern).parent / "beamstopMask.h5"


def read_beamstop_mask(path: Path, dataset: str) -> np.ndarray:
    """Frame 0 of ``dataset`` in the beamstop file as float64 ``(H, W)`` (transmission; < 0.99 floats)."""
    if not path.exists():
        raise InputDataError(f"{where(path)}: -beamstopMask=1 but the beamstop mask file does not exist")
    arr, dataset = _read_hdf5_array(path, dataset, ())
    if arr.ndim == 3:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputDataError(f"{where(path, dataset)}: beamstop mask has shape {arr.shape}; expected "
                             f"(rows, cols) or (frames, rows, cols)")
    return np.asarray(arr, dtype=np.float64)

"""``-probeGuess`` / ``-objectGuess`` from HDF5 files: a ptychopy result (any version), a ptychodus product, or
``file.h5::/dataset`` for any complex dataset. CSV and ``.bin`` guesses stay with :mod:`.original_csv`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from ..errors import InputDataError
from .errors import where
from .hdf5_reader import get_dataset, opened
from .ptychodus_product import is_ptychodus_product, read_ptychodus_product
from .result_layout import object_path

HDF5_GUESS_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".cxi")
RESULT_PROBE = "entry_1/instrument_1/source_1/probe"

Kind = Literal["probe", "object"]


def is_hdf5_guess(spec: str) -> bool:
    """Whether a ``-probeGuess``/``-objectGuess`` value names an HDF5 file (by suffix, or ``file::/dataset``)."""
    name, sep, _ = spec.partition("::")
    return bool(sep) or Path(name).suffix.lower() in HDF5_GUESS_SUFFIXES


def _complex(arr: np.ndarray, path: Path, dataset: str) -> np.ndarray:
    if not np.iscomplexobj(arr) and arr.dtype.kind not in "fiu":
        raise InputDataError(f"{where(path, dataset)}: {arr.dtype} values; a guess must be complex (or real)")
    return np.asarray(arr, dtype=np.complex64)


def read_hdf5_guess(spec: str, kind: Kind) -> np.ndarray:
    """The ``kind`` guess named by ``spec``: ``(modes, n, n)`` for a probe, ``(H, W)`` for an object, complex64.

    ``spec`` is ``file.h5`` (a ptychopy result or a ptychodus product: the file says where its probe and object
    are) or ``file.h5::/dataset``. Anything else raises :class:`InputDataError` naming the file and what was
    looked for."""
    name, sep, dataset = spec.partition("::")
    path = Path(name)
    if not path.is_file():
        raise InputDataError(f"file {path}: {kind} guess (-{kind}Guess) not found")
    if sep:
        with opened(path) as f:
            if not isinstance(f.get(dataset), h5py.Dataset):
                raise InputDataError(f"{where(path, dataset)}: no such dataset for the {kind} guess")
            arr = np.asarray(get_dataset(f, dataset)[()])
        return _shaped(_complex(arr, path, dataset), kind, path, dataset)
    with opened(path) as f:
        product = is_ptychodus_product(f)
        if not product and "entry_1" not in f:
            top = ", ".join(sorted(f.keys())[:8]) or "nothing"
            raise InputDataError(f"file {path}: holds no {kind} guess ptychopy knows (its top level holds {top}); "
                                 f"give a ptychopy result, a ptychodus product, or name the dataset as "
                                 f"{path}::/path/to/{kind}")
        if not product:
            try:
                found = RESULT_PROBE if kind == "probe" else object_path(f)
            except KeyError as exc:
                raise InputDataError(f"file {path}: no {kind} in it (looked for {exc.args[0]})") from None
            arr = np.asarray(get_dataset(f, found)[()])
            return _shaped(_complex(arr, path, found), kind, path, found)
    guess = read_ptychodus_product(path)
    return guess.probe if kind == "probe" else guess.object


def _shaped(arr: np.ndarray, kind: Kind, path: Path, dataset: str) -> np.ndarray:
    if kind == "object":
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise InputDataError(f"{where(path, dataset)}: an object guess must be (H, W); this is {arr.shape}")
        return arr
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != arr.shape[-2]:
        raise InputDataError(f"{where(path, dataset)}: a probe guess must be (n, n) or (modes, n, n); this is "
                             f"{arr.shape}")
    return arr

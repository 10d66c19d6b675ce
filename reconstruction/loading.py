"""From parameters to :class:`ScanData`: simulate, or read files through ``reconstruction.io``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputDataError

if TYPE_CHECKING:
    from .parameters import Parameters
    from .scan_data import ScanData


def load_scan(params: Parameters, progress: Callable[[int, int], None] | None = None) -> ScanData:
    """The scan the parameters describe: simulated (``-simulate=1``) or read and preprocessed from files."""
    if params.data.simulate:
        from .simulate import simulate_from_parameters

        return simulate_from_parameters(params).data
    if not params.data.file_pattern:
        raise InputDataError("no data: give a file pattern with -fp=... (or -simulate=1 for simulated data)")
    from .io import read_scan

    return read_scan(params, progress=progress)


def load_guesses(params: Parameters, data: ScanData) -> tuple[Any, Any]:
    """(probe, object) initial guesses: from the loader, else the -probeGuess/-objectGuess files (the original's CSV
    or ``.bin``, a ptychopy result, a ptychodus product, ``file.h5::/dataset``), else None."""
    probe, obj = data.probe_guess, data.object_guess
    r = params.reconstruction
    if probe is None and r.probe_guess:
        probe = _read_guess(r.probe_guess, "probeGuess")
        n = data.size_px
        if probe.ndim == 2 and probe.shape[0] == probe.shape[1] * (probe.shape[0] // max(probe.shape[1], 1)) \
                and probe.shape[1] == n and probe.shape[0] > n:
            probe = probe.reshape(-1, n, n)  # the original's stacked modes (modes*n, n)
    if obj is None and r.object_guess:
        obj = _read_guess(r.object_guess, "objectGuess")
    return probe, obj


def _read_guess(path: str, flag: str) -> np.ndarray:
    from .io.guesses import is_hdf5_guess, read_hdf5_guess
    from .io.original_csv import read_complex_csv

    if is_hdf5_guess(path):
        return read_hdf5_guess(path, "probe" if flag == "probeGuess" else "object")

    try:
        return read_complex_csv(path)
    except FileNotFoundError:
        raise InputDataError(f"-{flag}={path}: file not found") from None

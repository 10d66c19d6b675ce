"""From parameters to :class:`ScanData`: simulate, or read files through ``reconstruction.io``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputDataError

if TYPE_CHECKING:
    from .parameters import Parameters
    from .scan_data import ScanData


def load_scan(params: Parameters, progress: Callable[[int, int], None] | None = None) -> ScanData:
    """The scan the parameters describe: simulated (``-simulate=1``) or read and preprocessed from files; with
    ``-halfSet=1|2`` only every other position (:func:`half_set`)."""
    if params.data.simulate:
        from .simulate import simulate_from_parameters

        data = simulate_from_parameters(params).data
    elif not params.data.file_pattern:
        raise InputDataError("no data: give a file pattern with -fp=... (or -simulate=1 for simulated data)")
    else:
        from .io import read_scan

        data = read_scan(params, progress=progress)
    return half_set(data, params.data.half_set) if params.data.half_set else data


def scan_positions(params: Parameters) -> int:
    """How many positions :func:`load_scan` gives: the scan's, or with ``-halfSet`` its half's (positions
    which-1, which+1, ...)."""
    total, which = params.n_positions, params.data.half_set
    return (total - which + 2) // 2 if which else total


def load_pattern(params: Parameters, index: int, cache_dir: Path | None = None) -> np.ndarray:
    """Position ``index``'s pattern of the scan the parameters describe (``(n, n)`` float32 counts, zero frequency
    at [0, 0]), as :func:`load_scan` gives it, without loading the others: one frame read from the files, or of a
    simulated scan its window alone (noise-free) or the simulation made again with its seed, so the same noise
    (``reconstruction.simulated_patterns``: ``cache_dir`` keeps the object or the patterns for the next call).
    With ``-halfSet`` ``index`` counts the half's positions. ValueError for an index outside the scan (or the
    half); InputDataError when the data cannot be read; ``simulated_patterns.PatternsBeingPrepared`` when another
    request is making the simulated scan's cache file in ``cache_dir`` (ask again in a few seconds)."""
    which, count = params.data.half_set, scan_positions(params)
    if not 0 <= int(index) < count:
        raise ValueError(f"position {index}: this scan has positions 0..{count - 1}")
    raw = 2 * int(index) + which - 1 if which else int(index)
    if params.data.simulate:
        from .simulated_patterns import simulated_pattern

        return simulated_pattern(params, raw, cache_dir)
    if not params.data.file_pattern:
        raise InputDataError("no data: give a file pattern with -fp=... (or -simulate=1 for simulated data)")
    from .io import read_frame

    return read_frame(params, raw)


def half_set(data: ScanData, which: int) -> ScanData:
    """Half of ``data``'s positions, interleaved in scan order: ``which`` 1 keeps positions 0, 2, 4, ..., 2 keeps
    1, 3, 5, ... (the two halves of a half-set FRC: each covers the whole field, with independent noise). Positions
    keep the object's coordinate frame, so the two halves' objects lie on one grid."""
    if which not in (1, 2):
        raise ValueError(f"-halfSet={which}: must be 1 or 2 (or 0 for every position)")
    if data.n_positions < 4:
        raise InputDataError(f"-halfSet={which}: the scan has {data.n_positions} positions; a half needs at least 2")
    keep = np.arange(which - 1, data.n_positions, 2)
    mask = data.valid_mask
    if mask is not None and mask.ndim == 3:
        mask = mask[keep]
    return dataclasses.replace(data, intensities=np.ascontiguousarray(data.intensities[keep]),
                               positions_px=data.positions_px[keep].copy(), valid_mask=mask,
                               source={**data.source, "half_set": which})


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

"""Read an HDF5 file while a detector writes it in SWMR mode (areaDetector NDFileHDF5, stream mode).

Layout (the frames dataset is ``-hdf5path``; every other dataset is optional):

- ``<hdf5path>`` (k, rows, cols): frames, grown along axis 0;
- ``/entry/scan/frame_index`` (k,) int: the scan point of each row (without it, row j is scan point j);
- ``/entry/scan/positions_m`` (k, 2) float: the measured position of each row, metres (without it, the planned
  position of its scan point);
- ``/entry/scan/planned_positions_m`` (N, 2) float: the planned scan, written before the first frame
  (without it, the raster or spiral of the parameters);
- ``/entry/scan/status`` (1,) int: 0 acquiring, 1 ended, 2 aborted (without it, the scan ends when all N
  planned frames are there; a writer that stops early shows up as a stall).

A row counts as arrived once every growing dataset the file has holds it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .source import ABORTED, ACQUIRING, ENDED, FrameBatch, LiveSourceError, PlannedScan

SCAN_GROUP = "/entry/scan"
FRAME_INDEX = f"{SCAN_GROUP}/frame_index"
POSITIONS = f"{SCAN_GROUP}/positions_m"
PLANNED_POSITIONS = f"{SCAN_GROUP}/planned_positions_m"
STATUS = f"{SCAN_GROUP}/status"
STATUS_CODES = {0: ACQUIRING, 1: ENDED, 2: ABORTED}


def open_swmr(path: Path | str, wait_s: float, poll_s: float = 0.05,
              stop: Callable[[], bool] | None = None) -> h5py.File:
    """Open ``path`` for SWMR reading, waiting up to ``wait_s`` for the writer to create it and switch SWMR on;
    ``stop`` (asked at each look) True ends the wait at once."""
    deadline = time.monotonic() + wait_s
    last: Exception | None = None
    while True:
        if os.path.exists(path) and not os.path.isfile(path):  # HDF5 would block in open() on a FIFO, with the GIL
            raise LiveSourceError(f"file {path}: is not a regular file (a FIFO, a device or a folder), so it cannot "
                                  "be read as HDF5")
        try:
            return h5py.File(path, "r", libver="latest", swmr=True)
        except (OSError, FileNotFoundError) as exc:
            last = exc
        if stop is not None and stop():
            raise LiveSourceError(f"file {path}: the wait for it was stopped")
        if time.monotonic() >= deadline:
            raise LiveSourceError(f"file {path}: cannot be opened for SWMR reading within {wait_s:g} s "
                                  f"(-liveStall): {last}")
        time.sleep(poll_s)


class SwmrSource:
    """A :class:`~reconstruction.live.source.LiveSource` over a growing SWMR file (layout in the module docstring).

    ``fallback_plan``: the plan used when the file has no ``planned_positions_m`` (from the parameters);
    ``wait_s``/``stop``: how long to wait for the file, and what ends that wait early (:func:`open_swmr`).
    """

    def __init__(self, path: Path | str, dataset: str, fallback_plan: PlannedScan, *, wait_s: float = 10.0,
                 stop: Callable[[], bool] | None = None):
        self.path = Path(path)
        self.dataset = dataset
        self.name = f"file {self.path}, dataset {dataset}"
        self._file = open_swmr(self.path, wait_s, stop=stop)
        try:
            if dataset not in self._file:
                raise LiveSourceError(f"{self.name}: no such dataset in the file")
            self._frames: Any = self._file[dataset]
            if self._frames.ndim != 3:
                raise LiveSourceError(f"{self.name}: frames dataset has shape {self._frames.shape}; "
                                      "expected (frames, rows, cols)")
            self._index = self._file.get(FRAME_INDEX)
            self._positions = self._file.get(POSITIONS)
            self._status = self._file.get(STATUS)
            self._planned = self._plan(fallback_plan)
        except Exception:
            self._file.close()
            raise
        self._read = 0
        self._ended_by_count = False

    def _plan(self, fallback: PlannedScan) -> PlannedScan:
        shape = (int(self._frames.shape[1]), int(self._frames.shape[2]))
        if PLANNED_POSITIONS in self._file:
            planned = np.asarray(self._file[PLANNED_POSITIONS][()], dtype=np.float64)
            if planned.ndim != 2 or planned.shape[1] != 2 or not np.all(np.isfinite(planned)):
                raise LiveSourceError(f"file {self.path}, dataset {PLANNED_POSITIONS}: shape {planned.shape} or "
                                      "values unusable; expected finite (N, 2) metres")
            return PlannedScan(planned, shape, f"file {self.path}:{PLANNED_POSITIONS}")
        return PlannedScan(fallback.positions_m, shape, fallback.origin)

    @property
    def planned(self) -> PlannedScan:
        return self._planned

    def _available(self) -> int:
        self._frames.refresh()
        k = int(self._frames.shape[0])
        for ds in (self._index, self._positions):
            if ds is not None:
                ds.refresh()
                k = min(k, int(ds.shape[0]))
        return k

    def poll(self) -> FrameBatch | None:
        """The rows written (in every growing dataset) since the last call, raw float32."""
        k = self._available()
        if k <= self._read:
            return None
        start, stop = self._read, k
        frames = np.empty((stop - start,) + tuple(self._frames.shape[1:]), dtype=np.float32)
        self._frames.read_direct(frames, source_sel=np.s_[start:stop])
        indices = (np.asarray(self._index[start:stop], dtype=np.int64) if self._index is not None
                   else np.arange(start, stop, dtype=np.int64))
        positions = None if self._positions is None else np.asarray(self._positions[start:stop], dtype=np.float64)
        self._read = stop
        if self._status is None and stop >= self._planned.n_positions:
            self._ended_by_count = True
        return FrameBatch(frames, indices, positions)

    def state(self) -> str:
        """What the writer's status dataset says (or ENDED once all planned rows were read, without one)."""
        if self._status is None:
            return ENDED if self._ended_by_count else ACQUIRING
        self._status.refresh()
        code = int(self._status[0])
        if code not in STATUS_CODES:
            raise LiveSourceError(f"file {self.path}, dataset {STATUS}: status {code}; expected 0 (acquiring), "
                                  "1 (ended) or 2 (aborted)")
        return STATUS_CODES[code]

    @property
    def rows_read(self) -> int:
        return self._read

    def close(self) -> None:
        self._file.close()

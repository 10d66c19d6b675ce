"""Replay a finished scan file as if a detector were writing it, at a given frame rate (demos, benchmarks)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..io.hdf5_reader import get_dataset, open_file
from .source import ACQUIRING, ENDED, FrameBatch, LiveSourceError, PlannedScan


class ReplaySource:
    """Frames 0..N-1 of ``dataset`` in ``path``, released at ``rate_hz`` from the first :meth:`poll` on.

    The plan is ``plan`` (from the parameters); the file must hold at least its N frames, or with ``cycle`` any
    number K: scan point j is then frame j mod K (ingest benchmarks: a long scan from a short file).
    """

    def __init__(self, path: Path | str, dataset: str, plan: PlannedScan, rate_hz: float, *, cycle: bool = False):
        if rate_hz <= 0:
            raise LiveSourceError(f"replay of {path}: rate {rate_hz} frames/s; expected > 0")
        self.path = Path(path)
        self.name = f"file {self.path}, dataset {dataset} (replay at {rate_hz:g} frames/s)"
        self.rate_hz = float(rate_hz)
        self._file = open_file(self.path)
        try:
            self._frames = get_dataset(self._file, dataset)
            if self._frames.ndim != 3:
                raise LiveSourceError(f"{self.name}: frames dataset has shape {self._frames.shape}; "
                                      "expected (frames, rows, cols)")
            held = int(self._frames.shape[0])
            if held < plan.n_positions and not (cycle and held > 0):
                raise LiveSourceError(f"{self.name}: holds {held} frames; the planned scan has {plan.n_positions}")
        except Exception:
            self._file.close()
            raise
        self._planned = PlannedScan(plan.positions_m, (int(self._frames.shape[1]), int(self._frames.shape[2])),
                                    plan.origin)
        self._held = held
        self._t0: float | None = None
        self._sent = 0

    @property
    def planned(self) -> PlannedScan:
        return self._planned

    def poll(self) -> FrameBatch | None:
        """The frames whose time has come since the last call."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = min(self._planned.n_positions, int((now - self._t0) * self.rate_hz) + 1)
        if due <= self._sent:
            return None
        start, stop = self._sent, due
        frames = np.empty((stop - start,) + self._planned.frame_shape, dtype=np.float32)  # type: ignore[operator]
        j = start
        while j < stop:  # one read, or one per pass over a cycled file
            first = j % self._held
            m = min(stop - j, self._held - first)
            self._frames.read_direct(frames, source_sel=np.s_[first:first + m], dest_sel=np.s_[j - start:j - start + m])
            j += m
        self._sent = stop
        return FrameBatch(frames, np.arange(start, stop, dtype=np.int64))

    def state(self) -> str:
        return ENDED if self._sent >= self._planned.n_positions else ACQUIRING

    def close(self) -> None:
        self._file.close()

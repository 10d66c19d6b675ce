"""The one interface every live source (a growing SWMR file, a replay) offers the streaming run.

A source is polled: :meth:`LiveSource.poll` returns the frames that arrived since the last call (possibly none)
as a :class:`FrameBatch`; :attr:`LiveSource.planned` is the scan as planned (from the file's metadata or the
parameters); :meth:`LiveSource.state` says whether the writer is still acquiring, ended or aborted the scan.
Optional: ``dropped`` (frames a source knows it lost) and ``holding_back()`` (True while frames arrived that
``poll`` holds back for now: the feed does not count that time as a stall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import InputDataError

#: What a source says about its writer.
ACQUIRING, ENDED, ABORTED = "acquiring", "ended", "aborted"
#: What a feed adds: no frame for the stall time while the writer still says it is acquiring.
STALLED = "stalled"
#: What a run adds: a user cancelled it (the frames taken in so far are kept, labelled partial).
CANCELLED = "cancelled"
#: What a run adds: the process running it stopped it (a worker's restart: not the user's choice; kept, partial).
STOPPED = "stopped"


class LiveSourceError(InputDataError):
    """A live stream cannot go on: a frame index outside the plan, a changed frame shape, a full buffer...
    The message names the frame index and the file."""


@dataclass(frozen=True)
class PlannedScan:
    """The scan as planned before its first frame.

    positions_m: (N, 2) float64 metres (row axis, col axis) of every planned point, frame index order;
    frame_shape: (rows, cols) of a raw detector frame, or None until the first frame tells;
    origin: where the plan came from ("file <path>:<dataset>" or "parameters").
    """

    positions_m: np.ndarray
    frame_shape: tuple[int, int] | None
    origin: str

    @property
    def n_positions(self) -> int:
        return int(self.positions_m.shape[0])

    def extent_m(self) -> tuple[float, float]:
        """(rows, cols) span of the planned positions, metres."""
        span = self.positions_m.max(axis=0) - self.positions_m.min(axis=0)
        return float(span[0]), float(span[1])


@dataclass
class FrameBatch:
    """Frames that arrived together.

    frames: (B, rows, cols) float32 raw detector frames; indices: (B,) int64 frame (scan point) indices;
    positions_m: (B, 2) float64 metres measured with each frame, or None (the planned position is used).
    """

    frames: np.ndarray
    indices: np.ndarray
    positions_m: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class LiveSource(Protocol):
    """A stream of frames being acquired (see the module docstring)."""

    name: str  # where the frames come from, for messages: "file /x/scan.h5, dataset /entry/data/data"

    @property
    def planned(self) -> PlannedScan: ...

    def poll(self) -> FrameBatch | None:
        """The frames that arrived since the last call (None or an empty batch when none did)."""
        ...

    def state(self) -> str:
        """ACQUIRING, ENDED or ABORTED, as the writer says."""
        ...

    def close(self) -> None: ...

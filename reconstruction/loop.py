"""What every kind of run (one device, or split over several) offers around its ``step()``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .state import Progress, Result


class IterativeRun:
    """Iteration and whole mode built on ``step()``, ``done`` and ``result()``; the scan's sizes from
    ``positions_px`` (N, 2) and ``probe_size_px`` (n)."""

    positions_px: Any
    probe_size_px: int

    @property
    def n_positions(self) -> int:
        return len(self.positions_px)

    @property
    def size_px(self) -> int:
        """The probe window (and diffraction pattern) edge, pixels."""
        return self.probe_size_px

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def step(self) -> Progress:
        raise NotImplementedError

    def result(self) -> Result:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Progress]:
        while not self.done:
            yield self.step()

    def run(self, callback: Callable[[Progress], object] | None = None) -> Result:
        """Whole mode: iterate to the end, calling ``callback(progress)`` after each iteration."""
        for progress in self:
            if callback is not None:
                callback(progress)
        return self.result()

"""What every kind of run (one device, or split over several) offers around its ``step()``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .state import Progress, Result


class IterativeRun:
    """Iteration and whole mode built on ``step()``, ``done`` and ``result()``."""

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

"""The one loop every kind of run (one device, or split over several) goes through around its iterations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .errors import InputDataError, SessionStateError
from .state import Progress, Result


class IterativeRun:
    """Iteration, whole mode, the time limit and the per-iteration history, built on ``_iterate(it)``.

    A subclass calls :meth:`_start_loop` in its constructor and implements ``_iterate(it) -> (error, rms)``
    (one iteration, 1-based), ``_require_open()`` and ``result()``; it sets ``algorithm``, ``positions_px``
    (N, 2) and ``probe_size_px`` (n).
    """

    algorithm: str
    positions_px: Any
    probe_size_px: int
    iterations: int
    time_limit_s: float
    iteration: int
    errors: list[float]
    rms: list[float]
    iteration_s: list[float]
    elapsed_s: float
    stopped_early: str | None

    def _start_loop(self, iterations: int, time_limit_s: float) -> None:
        """Set up the loop's state: ``iterations`` planned, ``time_limit_s`` (0 = none) of iterating."""
        self.iterations = int(iterations)
        self.time_limit_s = float(time_limit_s or 0.0)
        self.iteration = 0
        self.errors = []
        self.rms = []
        self.iteration_s = []
        self.elapsed_s = 0.0
        self.stopped_early = None

    @property
    def n_positions(self) -> int:
        return len(self.positions_px)

    @property
    def size_px(self) -> int:
        """The probe window (and diffraction pattern) edge, pixels."""
        return self.probe_size_px

    @property
    def done(self) -> bool:
        """True once every planned iteration ran, or the time limit was reached."""
        if self.iteration >= self.iterations:
            return True
        return self.time_limit_s > 0 and self.elapsed_s >= self.time_limit_s

    def step(self) -> Progress:
        """Run exactly one iteration (epoch) and report it."""
        self._require_open()
        if self.done:
            why = "time limit reached" if self.iteration < self.iterations else f"all {self.iterations} ran"
            raise SessionStateError(f"no iteration left to run ({why}); iteration {self.iteration}")
        it = self.iteration + 1
        t0 = time.perf_counter()
        error, rms = self._iterate(it)
        if not np.isfinite(error):
            raise InputDataError(f"{self.algorithm} diverged at iteration {it}: the error is {error}")
        dt = time.perf_counter() - t0
        self.iteration = it
        self.elapsed_s += dt
        self.errors.append(error)
        if rms is not None:
            self.rms.append(rms)
        self.iteration_s.append(dt)
        if self.time_limit_s > 0 and self.elapsed_s >= self.time_limit_s and it < self.iterations:
            self.stopped_early = f"time limit of {self.time_limit_s:g} s reached"
        return Progress(it, self.iterations, error, rms, dt, self.elapsed_s)

    def _iterate(self, it: int) -> tuple[float, float | None]:
        """One iteration; (error, rms or None)."""
        raise NotImplementedError

    def _require_open(self) -> None:
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

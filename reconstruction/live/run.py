"""``StreamingRun``: reconstruct while the scan acquires, through the one ``driver.Reconstruction``.

The object is allocated from the planned scan's extent and the amplitudes buffer for all N planned frames, once.
Frames fill slots in arrival order; the engine state's amplitudes, rows and cols are views of the filled slots,
so every epoch of ePIE or LSQML visits the frames arrived so far (the engines are unchanged). When the stream
ends the slots are put in scan point order and ``finish_iterations`` epochs run over all frames; the result is
the batch run's :class:`~reconstruction.state.Result`, labelled partial (``stopped_early`` and
``inputs['live']``) when the scan was aborted, stalled or ended short of its plan.

DM is refused: it keeps an exit wave per position whose set cannot grow between epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..driver import Reconstruction, run_arguments
from ..errors import InputDataError
from ..io.preprocess import crop, preprocess_frames
from ..io.reader import preprocessing_of, static_valid_mask
from ..positions import object_shape_for
from ..probes import probe_guess_from_data
from ..scan_data import ScanData
from .feed import LiveFeed
from .source import ENDED, FrameBatch, LiveSource, LiveSourceError

if TYPE_CHECKING:
    from ..parameters import Parameters
    from ..state import Progress, Result

MARGIN_PX = 1.0  # as metres_to_pixels: the smallest planned position sits 1 px from the object's edge
STREAMING_ALGORITHMS = ("ePIE", "LSQML")


@dataclass
class LiveSummary:
    """What happened to the stream: outcome (ended/aborted/stalled), frames planned/received, duplicates
    dropped, epochs while acquiring and finishing, and times (monotonic seconds) of the last frame's arrival and of
    the end of the finishing iterations."""

    source: str
    outcome: str = ""
    planned: int = 0
    received: int = 0
    dropped: int = 0
    duplicates: list[int] = field(default_factory=list)
    out_of_order: int = 0
    live_iterations: int = 0
    finish_iterations: int = 0
    finish_s: float = 0.0
    last_frame_monotonic: float | None = None
    finished_monotonic: float | None = None

    @property
    def partial(self) -> bool:
        return self.outcome != ENDED or self.received < self.planned

    def label(self) -> str | None:
        """None for a complete scan, else 'partial: ...' (kept as the result's ``stopped_early``)."""
        if not self.partial:
            return None
        why = "ended early" if self.outcome == ENDED else self.outcome
        lost = f", {self.dropped} dropped" if self.dropped else ""
        return f"partial: scan {why} after {self.received} of {self.planned} frames{lost}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "outcome": self.outcome, "partial": self.partial,
                "frames_planned": self.planned, "frames_received": self.received,
                "frames_dropped": self.dropped, "duplicates_ignored": list(self.duplicates),
                "out_of_order": self.out_of_order, "live_iterations": self.live_iterations,
                "finish_iterations": self.finish_iterations, "finish_s": round(self.finish_s, 3)}


def check_streaming(params: Parameters) -> None:
    """Refuse what cannot take in frames as they arrive, naming the flag."""
    r = params.reconstruction
    if r.algorithm not in STREAMING_ALGORITHMS:
        raise InputDataError(f"-liveSource={params.data.live_source} with -algorithm={r.algorithm}: DM keeps an exit "
                             "wave per position and cannot take in frames as they arrive; use ePIE or LSQML")
    if r.refine_positions or r.variable_intensity:
        flag = "-refinePositions" if r.refine_positions else "-variableIntensity"
        raise InputDataError(f"-liveSource with {flag}: per-position fits are not available while streaming")
    if params.multigpu.gpus and len(params.multigpu.gpus) > 1:
        raise InputDataError("-liveSource with several -gpus: a live run uses one device")


class StreamingRun:
    """Reconstruct from ``source`` as its frames arrive (see the module docstring).

    ``params``: the run's parameters (algorithm, schedule, preprocessing, pixel size, -liveStall/-liveBuffer/
    -liveFinish); ``device`` overrides ``-device``.
    """

    def __init__(self, params: Parameters, source: LiveSource, *, device: str | None = None):
        check_streaming(params)
        self.params = params
        self.source = source
        self.device = device or params.reconstruction.device
        d = params.data
        self.finish_iterations = int(d.live_finish_iterations)
        self.feed = LiveFeed(source, stall_s=d.live_stall_s, max_frames=d.live_buffer_frames)
        self.summary = LiveSummary(source.name, planned=source.planned.n_positions)
        self.pixel_m = params.pixel_size_m
        planned_m = source.planned.positions_m
        self._origin_m = planned_m.min(axis=0)
        self.planned_px = self._to_px(planned_m)
        n = params.preprocessing.size_px
        self.object_shape = object_shape_for(self.planned_px, n)
        self.rec: Reconstruction | None = None
        self._indices = np.empty(source.planned.n_positions, dtype=np.int64)
        self._positions_px = np.empty((source.planned.n_positions, 2), dtype=np.float64)
        self._rows = np.empty(source.planned.n_positions, dtype=np.int64)
        self._cols = np.empty(source.planned.n_positions, dtype=np.int64)
        self._k = 0
        self._steps: Any = None

    def _to_px(self, positions_m: np.ndarray) -> np.ndarray:
        return (np.asarray(positions_m, dtype=np.float64) - self._origin_m) / self.pixel_m + MARGIN_PX

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self, callback: Callable[[Progress, LiveSummary], object] | None = None) -> Result:
        """Iterate while frames arrive, then the finishing iterations; returns the host result."""
        self.feed.start()
        try:
            while not self.feed.finished:
                self._ingest(self.feed.take())
                if self.rec is None:
                    self.feed.wait(0.05)
                    continue
                rec = self.rec
                rec.iterations = rec.iteration + 1 + self.finish_iterations
                progress = rec.step()
                self.summary.live_iterations += 1
                if callback is not None:
                    callback(progress, self.summary)
            while batches := self.feed.take():  # the frames read before the end; then the feed's error, if any
                self._ingest(batches)
        finally:
            self.feed.stop()
        return self._finish(callback)

    def _finish(self, callback: Callable[[Progress, LiveSummary], object] | None) -> Result:
        s = self.summary
        s.outcome = str(self.feed.outcome)
        s.received = self._k
        s.duplicates = list(self.feed.duplicates)
        s.dropped = int(getattr(self.source, "dropped", 0))  # a source that can lose frames counts them
        s.last_frame_monotonic = self.feed.last_frame_monotonic
        if self.rec is None:
            raise LiveSourceError(f"{self.source.name}: the stream {s.outcome} before any frame arrived")
        rec = self.rec
        self._scan_order()
        t0 = time.perf_counter()
        rec.iterations = rec.iteration + self.finish_iterations
        for progress in rec:
            s.finish_iterations += 1
            if callback is not None:
                callback(progress, s)
        s.finish_s = time.perf_counter() - t0
        result = rec.result()
        label = s.label()
        if label is not None:
            result.stopped_early = label
        result.inputs["live"] = s.to_dict()
        s.finished_monotonic = time.monotonic()
        return result

    # -- taking frames in ---------------------------------------------------------------------------------------
    def _ingest(self, batches: list[FrameBatch]) -> None:
        for batch in batches:
            if not len(batch):
                continue
            intensities = self._preprocess(batch)
            positions_px = (self.planned_px[batch.indices] if batch.positions_m is None
                            else self._to_px(batch.positions_m))
            if self.rec is None:
                self._start(intensities, positions_px)
            self._append(batch.indices, intensities, positions_px)

    def _preprocess(self, batch: FrameBatch) -> np.ndarray:
        """Raw frames -> (B, n, n) float32 intensities as a batch run reads them; values checked per frame."""
        shape = (int(batch.frames.shape[1]), int(batch.frames.shape[2]))
        if self._steps is None:
            self._steps = preprocessing_of(self.params, shape)
            self._valid = static_valid_mask(self.params, self._steps, shape)
        data, _ok = preprocess_frames(crop(batch.frames, self._steps.window), self._steps)
        bad = ~np.isfinite(data).all(axis=(1, 2)) | (data < 0).any(axis=(1, 2))
        empty = np.where(self._valid, data, 0).sum(axis=(1, 2)) <= 0
        for what, flags in (("NaN, infinite or negative values", bad), ("no photons", empty)):
            if flags.any():
                j = int(np.flatnonzero(flags)[0])
                raise LiveSourceError(f"{self.source.name}, frame index {int(batch.indices[j])}: {what}")
        return data

    def _start(self, first: np.ndarray, positions_px: np.ndarray) -> None:
        """Allocate the run: object from the planned extent, amplitudes for all N planned frames, the probe guessed
        from the first frames."""
        params = self.params
        n_planned = self.planned_px.shape[0]
        n = first.shape[-1]
        buffer = np.zeros((n_planned, n, n), dtype=np.float32)
        buffer[: first.shape[0]] = first
        valid = None if self._valid.all() else self._valid
        data = ScanData(intensities=buffer, positions_px=self.planned_px, valid_mask=valid,
                        pixel_size_m=self.pixel_m, source={"live_source": self.source.name,
                                                           "planned_from": self.source.planned.origin})
        args = run_arguments(params, data)
        if args["probe"] is None:
            args["probe"] = probe_guess_from_data(first, args["beam_diameter_px"], params.reconstruction.probe_modes)
        args["iterations"] = 1 + self.finish_iterations
        args["time_limit_s"] = 0.0
        self.rec = Reconstruction(buffer, self.planned_px, device=self.device, object_shape=self.object_shape,
                                  implementation="reference", _values_checked=True, **args)
        self._amplitudes = self.rec.state.amplitudes  # (N, n, n) on the device; slots filled in arrival order

    def _append(self, indices: np.ndarray, intensities: np.ndarray, positions_px: np.ndarray) -> None:
        rec = self.rec
        assert rec is not None
        k, b = self._k, len(indices)
        corners = np.floor(positions_px + 0.5).astype(np.int64)
        n = intensities.shape[-1]
        h, w = self.object_shape
        outside = (corners < 0).any(axis=1) | (corners[:, 0] + n > h) | (corners[:, 1] + n > w)
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            raise LiveSourceError(f"{self.source.name}, frame index {int(indices[j])}: position "
                                  f"{positions_px[j].round(1).tolist()} px puts the window outside the object "
                                  f"({h}x{w} px) allocated from the planned scan")
        if k and (indices[0] < self._indices[k - 1] or (np.diff(indices) < 0).any()):
            self.summary.out_of_order += int((np.diff(np.concatenate([self._indices[k - 1:k], indices])) < 0).sum())
        xp = rec.backend.xp
        self._amplitudes[k:k + b] = xp.sqrt(xp.asarray(intensities))
        self._indices[k:k + b] = indices
        self._positions_px[k:k + b] = positions_px
        self._rows[k:k + b] = corners[:, 0]
        self._cols[k:k + b] = corners[:, 1]
        self._k = k + b
        self._expose()

    def _expose(self) -> None:
        """Point the engine state (and the loop's positions) at the filled slots."""
        rec = self.rec
        assert rec is not None
        xp, k = rec.backend.xp, self._k
        st = rec.state
        st.amplitudes = self._amplitudes[:k]
        st.rows = xp.asarray(self._rows[:k])
        st.cols = xp.asarray(self._cols[:k])
        rec.positions_px = self._rows_cols_px()
        rec._start_positions_px = self._positions_px[:k].copy()

    def _rows_cols_px(self) -> np.ndarray:
        return np.stack([self._rows[: self._k], self._cols[: self._k]], axis=1).astype(np.float64)

    def _scan_order(self) -> None:
        """Put the filled slots in scan point order (the order a batch run and the result file use)."""
        k = self._k
        order = np.argsort(self._indices[:k], kind="stable")
        if np.array_equal(order, np.arange(k)):
            return
        xp = self.rec.backend.xp if self.rec is not None else np
        self._amplitudes[:k] = self._amplitudes[:k][xp.asarray(order)]
        for a in (self._indices, self._rows, self._cols):
            a[:k] = a[:k][order]
        self._positions_px[:k] = self._positions_px[:k][order]
        self._expose()

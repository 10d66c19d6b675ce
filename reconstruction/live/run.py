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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backend import get_backend
from ..diffraction_preview import central_position
from ..driver import Reconstruction, estimate_memory_bytes, run_arguments
from ..engines.lsqml import default_batch_size
from ..errors import DeviceMemoryError, InputDataError
from ..io.preprocess import crop, preprocess_frames, preprocess_into
from ..io.reader import preprocessing_of, static_valid_mask
from ..positions import object_shape_for, window_corners
from ..probes import probe_guess_from_data
from ..scan_data import ScanData
from .feed import LiveFeed
from .source import CANCELLED, ENDED, STOPPED, FrameBatch, LiveSource, LiveSourceError
from .upload import SlotUpload

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
    dropped_detail: str = ""  # the source's words on which frames were dropped and why (e.g. their uniqueIds)
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
        why = {ENDED: "scan ended early", STOPPED: "run stopped"}.get(self.outcome, f"scan {self.outcome}")
        lost = f", {self.dropped} dropped" if self.dropped else ""
        if lost and self.dropped_detail:
            lost += f" ({self.dropped_detail})"
        return f"partial: {why} after {self.received} of {self.planned} frames{lost}"

    def to_dict(self) -> dict[str, Any]:
        detail = {"dropped_detail": self.dropped_detail} if self.dropped and self.dropped_detail else {}
        return {"source": self.source, "outcome": self.outcome, "partial": self.partial,
                "frames_planned": self.planned, "frames_received": self.received,
                "frames_dropped": self.dropped, **detail, "duplicates_ignored": list(self.duplicates),
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
        self.window_frames = int(d.live_window_frames)
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
        self._upload: SlotUpload | None = None
        self._scratch: np.ndarray | None = None  # -fftShiftData: frames are shifted out of it into the staging
        self._exposed = -1  # slots the engine state shows (all filled slots, between epochs)
        #: monotonic arrival time of the newest frame the engine has taken in (None before the first)
        self.newest_taken_monotonic: float | None = None

    @property
    def frames_taken(self) -> int:
        """Frames the engine has taken in so far (the image is built from these)."""
        return self._k

    def cancel(self, outcome: str = CANCELLED) -> None:
        """Stop taking frames: the run ends after its current iteration (finishing iterations included: none
        more run), with the frames taken in so far. ``outcome``: CANCELLED (a user's cancel, labelled 'partial:
        scan cancelled after K of N frames') or STOPPED (the process running it stops: 'partial: run stopped
        after ...'); a stream that had already ended keeps its outcome."""
        self.finish_iterations = 0
        if self.rec is not None:
            self.rec.iterations = self.rec.iteration
        self.feed.cancel(outcome)

    def _to_px(self, positions_m: np.ndarray) -> np.ndarray:
        return (np.asarray(positions_m, dtype=np.float64) - self._origin_m) / self.pixel_m + MARGIN_PX

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self, callback: Callable[[Progress, LiveSummary], object] | None = None,
            idle: Callable[[], object] | None = None) -> Result:
        """Iterate while frames arrive, then the finishing iterations; returns the host result. ``callback``
        follows each iteration, ``idle`` each look (every 50 ms) for the first frames; either may :meth:`cancel`."""
        self.feed.start()
        try:
            while not self.feed.finished:
                newest = self.feed.last_frame_monotonic  # read first: every frame up to it is in take()
                self._ingest(self.feed.take())
                if self._k:
                    self.newest_taken_monotonic = newest
                if self.rec is None:
                    self.feed.wait(0.05)
                    if idle is not None:
                        idle()
                    continue
                rec = self.rec
                rec.iterations = rec.iteration + 1 + self.finish_iterations
                windowed = 0 < self.window_frames < self._k
                if windowed:
                    self._expose(self._k - self.window_frames)  # this epoch visits the newest frames only
                progress = rec.step()
                if windowed:
                    self._expose()
                self.summary.live_iterations += 1
                if callback is not None:
                    callback(progress, self.summary)
            newest = self.feed.last_frame_monotonic
            while batches := self.feed.take():  # the frames read before the end; then the feed's error, if any
                self._ingest(batches)
            self.newest_taken_monotonic = newest if self._k else None
        finally:
            self.feed.stop()
        return self._finish(callback)

    def _finish(self, callback: Callable[[Progress, LiveSummary], object] | None) -> Result:
        s = self.summary
        s.outcome = str(self.feed.outcome)
        s.received = self._k
        s.duplicates = list(self.feed.duplicates)
        s.dropped = int(getattr(self.source, "dropped", 0))  # a source that can lose frames counts them
        s.dropped_detail = str(getattr(self.source, "dropped_detail", ""))  # and may say which and why
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
        """Preprocess and check each batch into the staging buffer of its slots; then one upload of them all and
        the engine state pointed at the filled slots."""
        for batch in batches:
            if not len(batch):
                continue
            positions_px = (self.planned_px[batch.indices] if batch.positions_m is None
                            else self._to_px(batch.positions_m))
            if self.rec is None:
                self._start(self._preprocess(batch), positions_px)
            self._append(batch, positions_px)
        if self._upload is not None and self._upload.flush() != self._exposed:
            self._expose()

    def _preprocessing(self, frames: np.ndarray) -> Any:
        shape = (int(frames.shape[1]), int(frames.shape[2]))
        if self._steps is None:
            self._steps = preprocessing_of(self.params, shape)
            self._valid = static_valid_mask(self.params, self._steps, shape)
            self._invalid_flat = np.flatnonzero(~self._valid.reshape(-1))
        return self._steps

    def _preprocess(self, batch: FrameBatch) -> np.ndarray:
        """Raw frames -> (B, n, n) float32 intensities as a batch run reads them (the first batch: the probe guess
        and the run's allocation); values checked per frame."""
        data, _ok = preprocess_frames(crop(batch.frames, self._preprocessing(batch.frames).window), self._steps)
        self._check(data, batch.indices)
        return data

    def _check(self, data: np.ndarray, indices: np.ndarray) -> None:
        """Refuse a frame with no photons in the valid pixels (the threshold already zeroed NaN and negatives)."""
        flat = data.reshape(data.shape[0], -1)
        photons = flat.sum(axis=1) - flat[:, self._invalid_flat].sum(axis=1)  # no frame-sized temporary
        if (photons <= 0).any():
            j = int(np.flatnonzero(photons <= 0)[0])
            raise LiveSourceError(f"{self.source.name}, frame index {int(indices[j])}: no photons")

    def _start(self, first: np.ndarray, positions_px: np.ndarray) -> None:
        """Allocate the run: the engine set up over the first frames (the probe guessed from them) with the object
        of the planned extent, then given amplitude slots for all N planned frames, allocated on the device
        (no N-frame host buffer to fill and copy: a scan of 100,000 x 256^2 frames starts in a fraction of a
        second). LSQML's mini-batch is the whole scan's default, and the device memory is checked for N frames."""
        params = self.params
        n_planned = self.planned_px.shape[0]
        b, n = first.shape[0], first.shape[-1]
        valid = None if self._valid.all() else self._valid
        data = ScanData(intensities=first, positions_px=positions_px, valid_mask=valid,
                        pixel_size_m=self.pixel_m, source={"live_source": self.source.name,
                                                           "planned_from": self.source.planned.origin})
        args = run_arguments(params, data)
        if args["probe"] is None:
            args["probe"] = probe_guess_from_data(first, args["beam_diameter_px"], params.reconstruction.probe_modes,
                                                  valid)
        settings = args["settings"]
        if not settings.batch_size:
            args["settings"] = replace(settings, batch_size=default_batch_size(n_planned))
        args["iterations"] = 1 + self.finish_iterations
        args["time_limit_s"] = 0.0
        self._check_memory(n_planned, n, args)
        rec = Reconstruction(first, positions_px, device=self.device, object_shape=self.object_shape,
                             implementation="reference", _values_checked=True, **args)
        xp = rec.backend.xp
        slots = xp.zeros((n_planned, n, n), dtype=xp.float32)  # slots filled in arrival order
        slots[:b] = rec.state.amplitudes
        rec.state.amplitudes = slots
        self.rec = rec
        self._amplitudes = slots
        self._upload = SlotUpload(slots, xp, gpu=rec.backend.is_gpu)

    def _check_memory(self, n_planned: int, n: int, args: dict[str, Any]) -> None:
        """Refuse, before allocating, a run whose N planned frames do not fit the device (what the batch run's plan
        refuses)."""
        backend = get_backend(self.device)
        free = backend.free_memory_bytes()
        if free is None:
            return
        need = estimate_memory_bytes(n_planned, n, self.object_shape, algorithm=args["algorithm"],
                                     probe_modes=args["probe_modes"], batch_size=args["settings"].batch_size)
        cap = int(args.get("memory_cap_bytes") or 0)
        limit = min(free, cap) if cap else free
        if need > limit:
            raise DeviceMemoryError(f"{self.source.name}: {n_planned} planned frames of {n}x{n} px need "
                                    f"{need / 2**30:.1f} GiB on {backend.device}; {limit / 2**30:.1f} GiB "
                                    "available", need, limit)

    def _append(self, batch: FrameBatch, positions_px: np.ndarray) -> None:
        """Check the batch's positions, preprocess its frames into the staging buffer (no frame-sized allocation:
        ``preprocess_into``) and note its slots."""
        upload = self._upload
        assert self.rec is not None and upload is not None
        indices = batch.indices
        k, b = self._k, len(indices)
        corners = window_corners(positions_px)
        n = self.params.preprocessing.size_px
        h, w = self.object_shape
        outside = (corners < 0).any(axis=1) | (corners[:, 0] + n > h) | (corners[:, 1] + n > w)
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            raise LiveSourceError(f"{self.source.name}, frame index {int(indices[j])}: position "
                                  f"{positions_px[j].round(1).tolist()} px puts the window outside the object "
                                  f"({h}x{w} px) allocated from the planned scan")
        before = self._indices[k - 1:k] if k else indices[:0]  # the first batch may come out of order too
        self.summary.out_of_order += int((np.diff(np.concatenate([before, indices])) < 0).sum())
        steps = self._preprocessing(batch.frames)
        for j in range(0, b, upload.capacity):
            m = min(b - j, upload.capacity)
            if steps.fft_shift_data and (self._scratch is None or self._scratch.shape[0] < m):
                self._scratch = np.empty((upload.capacity, n, n), dtype=np.float32)
            staged = preprocess_into(batch.frames[j:j + m], steps, upload.stage(m), self._scratch)
            self._check(staged, indices[j:j + m])
            upload.commit(m)
        self._indices[k:k + b] = indices
        self._positions_px[k:k + b] = positions_px
        self._rows[k:k + b] = corners[:, 0]
        self._cols[k:k + b] = corners[:, 1]
        self._k = k + b

    def _expose(self, first: int = 0) -> None:
        """Point the engine state (and the loop's positions) at the filled slots, from slot ``first`` on."""
        rec = self.rec
        assert rec is not None and self._upload is not None and self._upload.filled == self._k
        xp, k = rec.backend.xp, self._k
        st = rec.state
        st.amplitudes = self._amplitudes[first:k]
        st.rows = xp.asarray(self._rows[first:k])
        st.cols = xp.asarray(self._cols[first:k])
        if st.positions_px is not None:  # -subpixelWindows: the windows follow the sub-pixel positions of the slots
            st.positions_px = xp.asarray(self._positions_px[first:k])
        rec.positions_px = np.stack([self._rows[first:k], self._cols[first:k]], axis=1).astype(np.float64)
        rec._start_positions_px = self._positions_px[first:k].copy()
        self._exposed = k if first == 0 else -1
        rec._diffraction_position = central_position(rec._start_positions_px)  # a frame that has arrived

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

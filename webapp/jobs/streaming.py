"""A streaming job on the worker: reconstruct while the scan acquires (``-liveSource``, docs/streaming.md).

The job runs ``reconstruction.live.run.StreamingRun`` over the source its parameters name (an SWMR HDF5 file
inside the data roots, or a ``pva://`` NTNDArray). Each published frame carries, besides the images and the
positions measured so far, a ``live`` header: the phase (``waiting``, ``acquiring``, ``finishing``, ``ended``),
the outcome once known, frames planned, received, in the image and dropped, duplicates ignored, frames out of
order, and the arrival time (Unix s) of the newest frame in the image, so a viewer can show how far the image lags
the detector. The same dictionary is kept on the row (``Job.live``). When the stream ends the finishing iterations
run and the batch job's ``result.h5`` is written; an aborted, stalled or cancelled scan keeps its partial result,
labelled partial (``Job.live['partial']``, the job's message ``partial: scan aborted after K of N frames``).

A worker that stops (SIGTERM, a deploy, an embedded stop) never hands a streaming job back to the queue: the
frames went past (over pvAccess a re-run would wait for them, or take the next scan's). The job stops taking
frames at once, writes the partial result of those that arrived (no finishing iterations) and ends ``failed``,
its message naming the frames: a stop is not the user's choice, so the EPICS bridge replaces the job (a
``#restream`` streaming job while a file-source scan acquires, else the scan's batch job: docs/streaming.md,
"Exactly once").
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

from reconstruction import Parameters
from reconstruction.live import CANCELLED, STOPPED, LiveSourceError
from webapp.dbretry import db_call

from .models import Job
from .reconciler import streaming_ended_by_worker_message

if TYPE_CHECKING:
    from reconstruction.live.run import LiveSummary, StreamingRun


log = logging.getLogger(__name__)


def live_header(stream: StreamingRun, phase: str) -> dict[str, Any]:
    """What a viewer shows of the stream now (JSON-ready)."""
    feed = stream.feed
    newest = stream.newest_taken_monotonic
    newest_unix = None if newest is None else round(time.time() - (time.monotonic() - newest), 3)
    s = stream.summary
    return {"phase": phase, "source": stream.source.name, "outcome": feed.outcome, "frames_planned": s.planned,
            "frames_received": int(feed.received), "frames_in_image": stream.frames_taken,
            "frames_dropped": int(getattr(stream.source, "dropped", 0)),
            "frames_from_buffer": int(getattr(stream.source, "frames_from_buffer", 0)),
            "duplicates_ignored": list(feed.duplicates), "out_of_order": s.out_of_order,
            "newest_frame_unix_s": newest_unix}


def execute_streaming(run: Any, params: Parameters) -> str:
    """Run the claimed job ``run`` (a ``runner.JobRun``, not imported: it imports this module) as a streaming
    reconstruction; returns its final status. Errors propagate: ``JobRun.execute`` fails the job with them. A
    stopping worker (``run.worker_stopping()``) ends it failed, with the partial result of
    the frames that arrived if any did; it is never handed back to the queue."""
    from ptychopy.live import open_source
    from reconstruction.live.run import StreamingRun, check_streaming

    check_streaming(params)
    watcher = _Watcher(run)
    try:  # an SWMR file (swmr, replay) or an NTNDArray over pvAccess (pva://), awaited up to -liveStall
        source = open_source(params, stop=watcher.wait_ends)
    except LiveSourceError:
        if watcher.stopped_in or watcher.cancelled:
            return watcher.end_before_any_frame()
        raise
    try:
        stream = watcher.stream = StreamingRun(params, source)
        db_call(lambda: run.update(device=str(params.reconstruction.device)[:100], iterations=0,
                                   live=live_header(stream, "waiting")), what=f"start job {run.job.pk}")
        try:
            result = stream.run(watcher.on_iteration, idle=watcher.on_idle)
        except LiveSourceError:
            if not stream.frames_taken and (watcher.stopped_in or watcher.cancelled):
                return watcher.end_before_any_frame()
            raise
        watcher.last_frame("ended")
        s = stream.summary
        db_call(lambda: run.update(iteration=len(run.errors)), what=f"confirm job {run.job.pk}")
        path = run.write(result)
        info = {**live_header(stream, "ended"), **s.to_dict()}
        if s.last_frame_monotonic is not None:
            after = time.monotonic() - s.last_frame_monotonic
            info.update(written_after_last_frame_s=round(after, 3), overhead_s=round(after - s.finish_s, 3))
        db_call(lambda: run.update(live=info), what=f"record the stream of job {run.job.pk}")
        log.info("job %s: stream %s, %d of %d frames, result written %.2f s after the last frame", run.job.pk,
                 s.outcome, s.received, s.planned, info.get("written_after_last_frame_s", float("nan")))
        if watcher.stopped_in:
            message = streaming_ended_by_worker_message(run.job.worker, {**info, "phase": watcher.stopped_in},
                                                        how="stopped", kept=True)
            log.warning("job %s: %s (%.2f s after the stop)", run.job.pk, message,
                        time.monotonic() - watcher.stopped_at)
            run.finish(Job.Status.FAILED, message=message, result_path=str(path))
            return str(Job.Status.FAILED)
        if watcher.cancelled:
            run.finish(Job.Status.CANCELLED, message=f"cancelled after {s.received} of {s.planned} frames; the "
                                                     "partial result was kept", result_path=str(path))
            return str(Job.Status.CANCELLED)
        run.finish(Job.Status.DONE, message=result.stopped_early or "", result_path=str(path))
        return str(Job.Status.DONE)
    finally:
        source.close()


class _Watcher:
    """The streaming run's per-iteration callback and its looks while no frame has come: frames for the viewers
    (at the frame rate), the cancel flag, a stopping worker."""

    def __init__(self, run: Any):
        self.run = run
        self.stream: StreamingRun | None = None  # once the source is open
        self.period_s = 1.0 / max(float(settings.PTYCHOPY_FRAME_RATE_HZ), 1e-3)
        self.cancelled = False
        self.stopped_in = ""  # the phase the stream was in when its worker stopped ("" while it has not)
        self.stopped_at = 0.0  # when (monotonic s)
        self.progress: Any = None
        self.planned = False

    def _worker_stops(self, phase: str) -> bool:
        if not self.stopped_in and self.run.worker_stopping():
            self.stopped_in, self.stopped_at = phase, time.monotonic()
            if self.stream is not None:
                self.stream.cancel(STOPPED)
        return bool(self.stopped_in)

    def wait_ends(self) -> bool:
        """No frame yet (the file or the PVs awaited, or the first frames): whether a stopping worker or a cancel
        ends the wait."""
        if self._worker_stops("waiting"):
            return True
        if not self.cancelled and self.run.cancel_due(time.monotonic()):
            self.cancelled = True
        return self.cancelled

    def on_idle(self) -> None:
        """The run's look while no frame has come: a stopping worker or a cancel ends the stream."""
        if self.wait_ends() and self.stream is not None:
            self.stream.cancel(STOPPED if self.stopped_in else CANCELLED)

    def end_before_any_frame(self) -> str:
        """The wait for the first frame ended by a stopping worker or a cancel: no result to keep."""
        run, stream = self.run, self.stream
        planned = stream.summary.planned if stream is not None else 0
        if self.stopped_in:
            message = streaming_ended_by_worker_message(run.job.worker, {"frames_planned": planned}, how="stopped")
            status = Job.Status.FAILED
            log.warning("job %s: %s", run.job.pk, message)
        else:
            message, status = "cancelled before any frame arrived", Job.Status.CANCELLED
        if stream is not None:
            db_call(lambda: run.update(live=live_header(stream, "ended")), what=f"record job {run.job.pk}")
        run.finish(status, message=message)
        return str(status)

    def on_iteration(self, progress: Any, summary: LiveSummary) -> None:
        run, stream = self.run, self.stream
        assert stream is not None
        rec = stream.rec
        self._worker_stops("finishing" if summary.outcome else "acquiring")
        self.progress = progress
        run.errors.append(float(progress.error))
        if not self.planned and rec is not None:  # the run is planned at its first frame
            self.planned = True
            run.note_plan(rec)
        now = time.monotonic()
        if now - run.last_frame_at >= self.period_s:
            run.last_frame_at = now
            self.last_frame("finishing" if summary.outcome else "acquiring")
        if not self.cancelled and not self.stopped_in and run.cancel_due(now):
            self.cancelled = True
            stream.cancel()

    def last_frame(self, phase: str) -> None:
        """Publish the current images with the stream's state."""
        stream = self.stream
        if stream is None or stream.rec is None or self.progress is None:
            return
        self.run.frame(stream.rec, self.progress, Job.Status.RUNNING, live=live_header(stream, phase))

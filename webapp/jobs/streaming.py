"""A streaming job on the worker: reconstruct while the scan acquires (``-liveSource``, docs/streaming.md).

The job runs ``reconstruction.live.run.StreamingRun`` over the source its parameters name (an SWMR HDF5 file
inside the data roots, or a ``pva://`` NTNDArray). Each published frame carries, besides the images and the
positions measured so far, a ``live`` header: the phase (``waiting``, ``acquiring``, ``finishing``, ``ended``),
the outcome once known, frames planned, received, in the image and dropped, duplicates ignored, frames out of
order, and the arrival time (Unix s) of the newest frame in the image, so a viewer can show how far the image lags
the detector. The same dictionary is kept on the row (``Job.live``). When the stream ends the finishing iterations
run and the batch job's ``result.h5`` is written; an aborted, stalled or cancelled scan keeps its partial result,
labelled partial (``Job.live['partial']``, the job's message ``partial: scan aborted after K of N frames``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

from reconstruction import Parameters
from webapp.dbretry import db_call

from .models import Job

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
            "duplicates_ignored": list(feed.duplicates), "out_of_order": s.out_of_order,
            "newest_frame_unix_s": newest_unix}


def execute_streaming(run: Any, params: Parameters) -> str:
    """Run the claimed job ``run`` (a ``runner.JobRun``, not imported: it imports this module) as a streaming
    reconstruction; returns its final status. Errors propagate: ``JobRun.execute`` fails the job with them (or
    hands it back when the worker stops)."""
    from ptychopy.live import open_source
    from reconstruction.live.run import StreamingRun, check_streaming

    check_streaming(params)
    source = open_source(params)  # an SWMR file (swmr, replay) or an NTNDArray over pvAccess (pva://)
    try:
        stream = StreamingRun(params, source)
        db_call(lambda: run.update(device=str(params.reconstruction.device)[:100], iterations=0,
                                   live=live_header(stream, "waiting")), what=f"start job {run.job.pk}")
        watcher = _Watcher(run, stream)
        result = stream.run(watcher.on_iteration)
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
        if watcher.cancelled:
            run.finish(Job.Status.CANCELLED, message=f"cancelled after {s.received} of {s.planned} frames; the "
                                                     "partial result was kept", result_path=str(path))
            return str(Job.Status.CANCELLED)
        run.finish(Job.Status.DONE, message=result.stopped_early or "", result_path=str(path))
        return str(Job.Status.DONE)
    finally:
        source.close()


class _Watcher:
    """The streaming run's per-iteration callback: frames for the viewers (at the frame rate), the cancel flag,
    a stopping worker."""

    def __init__(self, run: Any, stream: StreamingRun):
        self.run = run
        self.stream = stream
        self.period_s = 1.0 / max(float(settings.PTYCHOPY_FRAME_RATE_HZ), 1e-3)
        self.cancelled = False
        self.progress: Any = None
        self.planned = False

    def on_iteration(self, progress: Any, summary: LiveSummary) -> None:
        run, rec = self.run, self.stream.rec
        run.stop_if_worker_stops()
        self.progress = progress
        run.errors.append(float(progress.error))
        if not self.planned and rec is not None:  # the run is planned at its first frame
            self.planned = True
            run.note_plan(rec)
        now = time.monotonic()
        if now - run.last_frame_at >= self.period_s:
            run.last_frame_at = now
            self.last_frame("finishing" if summary.outcome else "acquiring")
        if not self.cancelled and run.cancel_due(now):
            self.cancelled = True
            self.stream.cancel()

    def last_frame(self, phase: str) -> None:
        """Publish the current images with the stream's state."""
        rec = self.stream.rec
        if rec is None or self.progress is None:
            return
        self.run.frame(rec, self.progress, Job.Status.RUNNING, live=live_header(self.stream, phase))

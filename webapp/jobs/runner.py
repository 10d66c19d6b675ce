"""Run one job on this worker: claim the row, iterate the driver, stream frames, write the result.

The row is the truth. A job is claimed with a conditional UPDATE that numbers the attempt, so two deliveries of
the same message (a broker re-delivery, a reconciler's re-send) never run it twice at the same time, and a worker
writes to the row only while it still carries its attempt; a job left ``running`` by a worker that died is claimed
again and re-run from the start (or failed once its workers died under it twice: see
:mod:`webapp.jobs.reconciler`).

The database may restart under a running job: per-iteration writes (frames, the cancel flag) that fail are
skipped and the run goes on; the writes that matter (claim, finish) wait for the database with backoff
(:mod:`webapp.dbretry`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from reconstruction import Parameters
from reconstruction.errors import DeviceMemoryError, HostMemoryError
from webapp.dbretry import db_call, forget_connection, is_db_unreachable
from webapp.live import frames, viewer_choice
from webapp.live.publish import publish_frame
from webapp.live.status import announce_status
from webapp.logs import add_log_context, log_context
from webapp.scans.paths import confine_parameters
from webapp.workers import heartbeat

from . import memory, notify
from .models import Job
from .queue import enqueue
from .reconciler import recover_abandoned, streaming_ended_by_worker_message
from .results import job_results_dir
from .services import cancelled_while_queued
from .snapshots import SnapshotWriter

log = logging.getLogger(__name__)

#: How often a running job's cancel flag is read (seconds); always between iterations.
CANCEL_POLL_S = 0.25
#: When another live worker holds the job, look again this much later (ms).
RECHECK_MS = 10_000


class JobVanished(Exception):
    """The job row was deleted while the job ran."""


class JobTakenOver(Exception):
    """The row no longer carries this worker's attempt (another worker claimed the job): stop, write nothing."""


class WorkerStopping(Exception):
    """This worker is shutting down: the running job stops between iterations and goes back to the queue."""


class DemoStepsAside(WorkerStopping):
    """The demo job (source ``demo``) gives the worker to a person's queued job: it goes back to the queue behind
    it and runs again from the start afterwards (embedded mode: one worker thread, a demo of minutes)."""


_stopping = threading.Event()  # an embedded stop: the running job stops after its current iteration
_shutting_down = threading.Event()  # this worker process is shutting down (SIGTERM, a deploy, an embedded stop)
_claimed_here: set[int] = set()  # jobs this process claimed (a row it left is not a dead worker's)


def request_stop() -> None:
    """Make the running job (if any) stop after its current iteration and hand itself back (embedded stop); a
    streaming job is never handed back (:meth:`JobRun.worker_stopping`)."""
    _stopping.set()


def clear_stop() -> None:
    _stopping.clear()
    _shutting_down.clear()


def shutting_down(on: bool = True) -> None:
    """This worker's shutdown began (Dramatiq's ``before_worker_shutdown``: SIGTERM, a deploy, an embedded stop;
    ``on=False`` once a worker boots): a running streaming job stops taking frames at once, keeps what arrived and
    ends failed (docs/streaming.md). A batch job is not affected: a production worker lets it finish within its
    stop timeout."""
    if on:
        _shutting_down.set()
    else:
        _shutting_down.clear()


def run_job(job_id: int) -> str:
    """Run job ``job_id`` if it is this worker's to run; returns what happened (for logs and tests).

    While the database is unreachable the claim waits (``PTYCHOPY_DB_OUTAGE_S``); past that it raises, and the
    actor's retries send the message again later, so the message is never dropped for a database outage.
    """
    with log_context(job_id=job_id):
        return _run_claimed(job_id)


def _run_claimed(job_id: int) -> str:
    job = db_call(lambda: claim(job_id), what=f"claim job {job_id}")
    if isinstance(job, str):
        return job
    heartbeat.set_current_job(job.pk)
    add_log_context(user=getattr(job.owner, "username", None), scan=job.dedup_key if job.source == "epics" else None)
    started = time.monotonic()
    log.info("job %s started (attempt %d)", job.pk, job.attempts)
    try:
        outcome = JobRun(job).execute()
        log.info("job %s ended: %s after %.1f s", job.pk, outcome, time.monotonic() - started)
        return outcome
    except JobVanished:
        log.info("job %s was deleted while running", job_id)
        shutil.rmtree(job_results_dir(job_id), ignore_errors=True)
        return "deleted"
    except JobTakenOver:
        log.warning("job %s: attempt %d was taken over by another worker; this one stopped", job_id, job.attempts)
        return "taken over"
    except DemoStepsAside:
        moved = db_call(lambda: _hand_back(job, "stepped aside for a queued job; it runs again from the start after "
                                                "it"), what=f"hand back job {job_id}", outage_s=10)
        if moved:
            enqueue(job.pk)  # behind the job it stepped aside for
            announce_status(Job.objects.get(pk=job.pk))
        log.info("demo job %s stepped aside for a queued job", job_id)
        return "stepped aside"
    except WorkerStopping:
        moved = db_call(lambda: _hand_back(job, "its worker stopped; re-queued"), what=f"hand back job {job_id}",
                        outage_s=10)
        log.info("job %s handed back (%d): the worker is stopping; the next start re-queues it", job_id, moved)
        return "handed back"
    except BaseException:
        # Interrupted (worker shutdown, time limit): hand the job back so a worker start re-queues it.
        with contextlib.suppress(Exception):
            db_call(lambda: _hand_back(job, "interrupted; re-queued when a worker starts"),
                    what=f"hand back job {job_id}", outage_s=10)
        raise
    finally:
        heartbeat.set_current_job(None)


def someone_waits() -> bool:
    """Whether a job that is not a demo is queued (one query; asked only while a demo runs, every 0.25 s)."""
    try:
        return Job.objects.filter(status=Job.Status.QUEUED).exclude(source=Job.Source.DEMO).exists()
    except Exception as exc:
        if not is_db_unreachable(exc):
            raise
        return False


def _hand_back(job: Job, message: str) -> int:
    """Put ``job``, running here, back in the queue with ``message``; a streaming job is failed instead, naming the
    frames it had received: its frames went past, and the EPICS bridge is the one owner of a replacement
    (docs/streaming.md, "Exactly once")."""
    mine = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker=job.worker, attempts=job.attempts)
    if not job.is_streaming:
        return mine.update(status=Job.Status.QUEUED, message=message)
    live = mine.values_list("live", flat=True).first()
    return mine.update(status=Job.Status.FAILED, finished=timezone.now(),
                       message=streaming_ended_by_worker_message(job.worker, live, how="stopped"))


def claim(job_id: int) -> Job | str:
    """The job, now marked running by this worker, or a word saying why this worker does not run it."""
    if _stopping.is_set():
        return "worker stopping"  # the row stays queued; the next start-up re-queue sends it again
    me = heartbeat.worker_id()
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return "missing"
    if job.is_finished:
        return "already finished"
    if job.status == Job.Status.RUNNING:
        if job.worker == me:  # this process runs it, or left it, or a restarted container got the same id
            holder = "alive" if heartbeat.current_job() == job.pk else "dead"
        else:
            holder = heartbeat.worker_state(job.worker)
        if holder == "alive":
            return "running elsewhere"  # the reconciler takes it back if that worker stops running it
        if holder == "unsure":
            enqueue(job.pk, delay_ms=RECHECK_MS)  # its heartbeat is late: look again once it is stale
            return "running elsewhere (checking again later)"
        # its worker died under it: count that, maybe fail it (not when this process itself left it: a claim
        # retried after the database dropped its answer)
        outcome = recover_abandoned(job, send=False, worker_died=job.pk not in _claimed_here)
        if outcome != "requeued":
            return "failed: its workers died under it" if outcome == "failed" else "claimed by another worker"
        job.refresh_from_db()
    still_as_seen = Q(status=Job.Status.QUEUED, attempts=job.attempts)
    if not job.cancel_requested:
        # this worker's heartbeat row exists before any row names it: a reconciler on another host must never
        # read "no heartbeat" for a job claimed a moment ago (a worker that just booted has not beaten yet)
        heartbeat.beat()
    now = timezone.now()
    if job.cancel_requested:
        Job.objects.filter(still_as_seen, pk=job.pk).update(
            status=Job.Status.CANCELLED, finished=now, message=cancelled_while_queued(job))
        job.refresh_from_db()
        announce_status(job)
        return "cancelled"
    claimed = Job.objects.filter(still_as_seen, pk=job.pk).update(
        status=Job.Status.RUNNING, worker=me, started=now, finished=None, iteration=0, final_error=None,
        error_history=[], message="", result_path="", device="", run_plan={}, attempts=F("attempts") + 1,
    )
    if not claimed:
        return "claimed by another worker"
    _claimed_here.add(job.pk)
    return Job.objects.get(pk=job.pk)


@dataclass
class JobRun:
    """One attempt at a job, from the claimed row to a finished one."""

    job: Job
    errors: list[float] = field(default_factory=list)
    images: list[frames.FrameImage] = field(default_factory=list)
    seq: int = 0
    last_frame_at: float = float("-inf")
    last_cancel_check: float = 0.0
    db_down_since: float | None = None  # monotonic time the database stopped answering this run's writes
    snapshots: SnapshotWriter | None = None  # a few frames kept for the page's iteration scrubber

    def execute(self) -> str:
        self.seq = self.job.last_seq
        try:
            params = Parameters.from_dict(self.job.parameters)
            if self.job.source in (Job.Source.WEB, Job.Source.API):
                params = confine_parameters(params)  # again now: a symlink put in since submit is refused
            plan = memory.worker_plan(params)  # before any data are loaded or simulated
            if not plan.fits:
                raise HostMemoryError(plan.message, plan.needed_bytes, int(plan.limit_bytes or 0))
            if params.data.live_source != "none":  # reconstruct while the scan acquires (docs/streaming.md)
                from .streaming import execute_streaming

                return execute_streaming(self, params)
            from reconstruction.multigpu import from_parameters

            rec = from_parameters(params)  # split over -gpus when it lists several
        except (JobVanished, JobTakenOver, WorkerStopping):
            raise
        except Exception as exc:
            return self.fail(exc)
        try:
            self.note_plan(rec, iterations=rec.iterations)
            self.snapshots = SnapshotWriter(self.job.pk, rec.iterations)
            cancelled = self.iterate(rec)
            result = rec.result()
            # still this attempt's job? (raises JobTakenOver if another worker took it during an outage): only
            # then is the shared result file written
            db_call(lambda: self.update(iteration=len(self.errors)), what=f"confirm job {self.job.pk}")
            path = self.write(result)
            status = Job.Status.CANCELLED if cancelled else Job.Status.DONE
            message = (
                f"cancelled at iteration {rec.iteration}; the result so far was kept" if cancelled
                else (result.stopped_early or "")
            )
            self.finish(status, message=message, result_path=str(path))
            return str(status)
        except (JobVanished, JobTakenOver, WorkerStopping):
            raise
        except Exception as exc:
            return self.fail(exc)
        finally:
            rec.close()

    def iterate(self, rec: Any) -> bool:
        """Run the driver's loop; True when it was cancelled."""
        period = 1.0 / max(float(settings.PTYCHOPY_FRAME_RATE_HZ), 1e-3)
        progress = None
        for progress in rec:
            self.stop_if_worker_stops()
            self.errors.append(float(progress.error))
            now = time.monotonic()
            final = rec.done
            if final or now - self.last_frame_at >= period:
                self.last_frame_at = now
                self.frame(rec, progress, Job.Status.RUNNING)
            if now - self.last_cancel_check >= CANCEL_POLL_S or final:
                self.last_cancel_check = now
                if self.job.source == Job.Source.DEMO and not final and someone_waits():
                    raise DemoStepsAside()
                if self.cancel_requested():
                    if not final:
                        self.frame(rec, progress, Job.Status.RUNNING)
                    return True
        return progress is None and self.cancel_requested()

    def note_plan(self, rec: Any, **fields: Any) -> None:
        """Write the device and the run plan of ``rec`` (and ``fields``) to the row, once the run is planned."""
        db_call(lambda: self.update(device=device_description(rec)[:100], run_plan=rec.plan.to_dict(), **fields),
                what=f"start job {self.job.pk}")

    @staticmethod
    def stop_if_worker_stops() -> None:
        """Raise :class:`WorkerStopping` when this worker is shutting down (asked between iterations)."""
        if _stopping.is_set():
            raise WorkerStopping()

    @staticmethod
    def worker_stopping() -> bool:
        """Whether this worker is stopping (an embedded stop) or shutting down (:func:`shutting_down`): a running
        streaming job must stop now (docs/streaming.md)."""
        return _stopping.is_set() or _shutting_down.is_set()

    def cancel_due(self, now: float) -> bool:
        """At most every ``CANCEL_POLL_S``: whether the row asks to cancel."""
        if now - self.last_cancel_check < CANCEL_POLL_S:
            return False
        self.last_cancel_check = now
        return self.cancel_requested()

    def cancel_requested(self) -> bool:
        """The row's cancel flag; False while the database is unreachable (the next look reads it)."""
        try:
            rows = list(Job.objects.filter(pk=self.job.pk).values_list("cancel_requested", "attempts"))
        except Exception as exc:
            if not is_db_unreachable(exc):
                raise
            self.database_lost(exc)
            return False
        self.database_back()
        if not rows:
            raise JobVanished(self.job.pk)
        if rows[0][1] != self.job.attempts:
            raise JobTakenOver(self.job.pk)
        return bool(rows[0][0])

    def database_lost(self, exc: BaseException) -> None:
        forget_connection()
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
            log.warning("job %s: database unreachable (%s); iterating on, frames are not stored until it is back",
                        self.job.pk, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    def database_back(self) -> None:
        if self.db_down_since is not None:
            log.info("job %s: database back after %.1f s", self.job.pk, time.monotonic() - self.db_down_since)
            self.db_down_since = None

    def frame(self, rec: Any, progress: Any, status: str, *, live: dict[str, Any] | None = None) -> None:
        """Store the latest frame on the row and send it to the job's viewers; ``live`` (a streaming job's frames
        received/dropped, docs/streaming.md) goes into the frame's header and the row's ``live``."""
        n_positions = len(rec.positions_px)
        preview = rec.preview(max_px=512,  # the scan position a viewer chose for the diffraction panel, if any
                              diffraction_position=viewer_choice.chosen_position(self.job.pk, n_positions))
        pixel_m = getattr(rec, "pixel_size_m", None) or 0.0  # lambda z / (N dx_d), or the data file's own
        self.images = frames.limit_probe_images(  # patterns (stride 0) have no sample-plane size
            [frames.FrameImage(name, img, rng[0], rng[1], (pixel_m * preview.stride_of(name)) or None)
             for name, img, rng in preview.images()])
        self.seq += 1
        xs, errs = frames.downsample_errors(self.errors)
        header = {
            "job": self.job.pk, "seq": self.seq, "iteration": progress.iteration,
            "iterations": progress.iterations, "status": status, "error": _finite(progress.error),
            "errors": errs, "error_iterations": xs, "rate_per_s": _finite(progress.rate_per_s),
            "eta_s": _finite(progress.eta_s), "message": "", "t_produced": time.time(),
            "probe_power": [float(f"{p:.4g}") for p in preview.probe_power], "pixel_size_m": pixel_m or None,
            "diffraction_position": None if preview.diffraction is None else preview.diffraction.position,
            "diffraction_binning": None if preview.diffraction is None else preview.diffraction.binning,
            "n_positions": n_positions,
        }
        if preview.positions is not None:
            p = preview.positions
            header["positions"] = frames.positions_header(p.start_px, p.current_px, p.stride, refined=p.refined,
                                                          flux=p.flux, errors=p.errors)
        row: dict[str, Any] = {}
        if live is not None:
            header["live"] = live
            row = {"live": live, "iterations": progress.iterations}
        data = frames.encode_frame(header, self.images)
        heartbeat.note_rate(header["rate_per_s"])
        if self.snapshots is not None:
            try:
                self.snapshots.offer(progress.iteration, data, final=bool(rec.done))
            except OSError as exc:  # a full or read-only disk costs the history, not the run
                log.warning("job %s: no more snapshots after iteration %s (%s)", self.job.pk, progress.iteration, exc)
                self.snapshots = None
        try:
            self.update(last_preview=data, last_seq=self.seq, iteration=progress.iteration,
                        final_error=_finite(progress.error), error_history=self.errors, **row)
        except Exception as exc:
            if not is_db_unreachable(exc):
                raise
            self.database_lost(exc)  # the live view still gets the frame; the row catches up with the next
        else:
            self.database_back()
        publish_frame(self.job.pk, data)

    def write(self, result: Any) -> str:
        from reconstruction.io import write_result

        folder = job_results_dir(self.job.pk)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "result.h5"
        return str(write_result(result, path, overwrite=True))

    def finish(self, status: str, *, message: str = "", result_path: str = "") -> None:
        """Write the final state (waiting for the database if it is down), tell the viewers, mail the owner."""
        fields = dict(status=status, finished=timezone.now(), message=message, result_path=result_path,
                      error_history=self.errors, final_error=_finite(self.errors[-1]) if self.errors else None,
                      iteration=len(self.errors))

        def write() -> Job:
            self.update(**fields)
            job = Job.objects.filter(pk=self.job.pk).first()
            if job is None:
                raise JobVanished(self.job.pk)
            announce_status(job)
            return job

        job = db_call(write, what=f"finish job {self.job.pk}")
        try:
            notify.job_finished(job)
        except Exception:
            log.warning("job %s: the completion e-mail failed", self.job.pk, exc_info=True)

    def fail(self, exc: BaseException) -> str:
        message = failure_message(exc)
        if not isinstance(exc, DeviceMemoryError | HostMemoryError | ValueError):
            log.exception("job %s failed", self.job.pk)
        else:
            log.warning("job %s failed: %s", self.job.pk, message)
        self.finish(Job.Status.FAILED, message=message)
        return str(Job.Status.FAILED)

    def update(self, **fields: Any) -> None:
        """Write ``fields`` to the row while it still carries this attempt."""
        mine = Job.objects.filter(pk=self.job.pk, worker=self.job.worker, attempts=self.job.attempts)
        if not mine.update(**fields):
            if Job.objects.filter(pk=self.job.pk).exists():
                raise JobTakenOver(self.job.pk)
            raise JobVanished(self.job.pk)


def device_description(rec: Any) -> str:
    """The backend's device, with the pinned GPU when the worker has one (``CUDA_VISIBLE_DEVICES``)."""
    device = str(getattr(rec, "device", "") or "")
    pinned = heartbeat.gpu_label()
    return f"{device} [{pinned}]" if pinned.startswith("GPU") and pinned not in device else device


def failure_message(exc: BaseException) -> str:
    """A message a user can act on; out-of-memory errors say how much memory the run needed."""
    if isinstance(exc, DeviceMemoryError):
        needed = f"{exc.needed_bytes / 2**30:.2f} GiB"
        avail = (f"; {exc.available_bytes / 2**30:.2f} GiB was available" if exc.available_bytes is not None
                 else "")
        return f"GPU out of memory: this run needs about {needed}{avail}. {exc}"
    if isinstance(exc, HostMemoryError):
        return f"Refused before it started: {exc}"
    if type(exc).__name__ == "OutOfMemoryError":  # cupy.cuda.memory.OutOfMemoryError
        return f"GPU out of memory: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if x == x and x not in (float("inf"), float("-inf")) else None

"""The status frame: what a job's viewers are told when its state changes (the latest images with the row's
status), stored on the row for viewers that join later and published to those watching."""

from __future__ import annotations

from webapp.jobs.models import Job

from . import frames
from .publish import publish_frame


def status_frame(job: Job) -> bytes:
    """The frame that tells viewers the job's current state: the latest images with the row's status."""
    changes = {"status": job.status, "message": job.message, "iteration": job.iteration,
               "iterations": job.iterations, "error": job.final_error}
    if job.last_preview:
        return frames.with_header(bytes(job.last_preview), **changes)
    xs, errors = frames.downsample_errors(list(job.error_history or []))
    header = {"job": job.pk, "seq": job.last_seq, "rate_per_s": None, "eta_s": None, "errors": errors,
              "error_iterations": xs, **changes}
    return frames.encode_frame(header, [])


def announce_status(job: Job) -> None:
    """Store and send the frame that announces ``job``'s current status (after every status change)."""
    seq = job.last_seq + 1
    data = frames.with_header(status_frame(job), seq=seq)
    Job.objects.filter(pk=job.pk).update(last_preview=data, last_seq=seq)
    job.last_seq, job.last_preview = seq, data
    publish_frame(job.pk, data)

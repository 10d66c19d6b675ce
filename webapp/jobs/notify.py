"""Opt-in e-mail when a job finishes (console backend unless EMAIL_BACKEND says otherwise)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail

from .models import Job

log = logging.getLogger(__name__)


def job_finished(job: Job) -> bool:
    """Mail the owner about ``job`` when they asked for it and have an address; True when a mail went out."""
    owner = job.owner
    if not job.notify_email or owner is None or not owner.email:
        return False
    link = f"{settings.PTYCHOPY_SITE_URL.rstrip('/')}/jobs/{job.pk}/"
    lines = [
        f"Job {job.pk} ({job.scan_name or job.algorithm}) finished: {job.status}.",
        f"Iterations: {job.iteration} of {job.iterations}.",
    ]
    if job.final_error is not None:
        lines.append(f"Final error: {job.final_error:.4g}.")
    if job.message:
        lines.append(job.message)
    lines.append(link)
    try:
        send_mail(f"[ptychopy] job {job.pk} {job.status}", "\n".join(lines), None, [owner.email])
    except Exception:
        log.warning("could not send the completion e-mail for job %s", job.pk, exc_info=True)
        return False
    return True

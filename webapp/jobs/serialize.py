"""Jobs as JSON for the API (and the dashboard's refresh)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from reconstruction import Parameters

from .downloads import FORMATS
from .models import Job


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_summary(job: Job) -> dict[str, Any]:
    done = bool(job.result_path)
    return {
        "id": job.pk,
        "url": reverse("api:job", args=[job.pk]),
        "page": reverse("jobs:detail", args=[job.pk]),
        "websocket": f"/ws/jobs/{job.pk}/",
        "owner": job.owner.username if job.owner_id else None,
        "label": job.label,
        "scan": job.scan_name,
        "source": job.source,
        "algorithm": job.algorithm,
        "status": job.status,
        "cancel_requested": job.cancel_requested,
        "created": _iso(job.created),
        "started": _iso(job.started),
        "finished": _iso(job.finished),
        "duration_s": job.duration_s,
        "iteration": job.iteration,
        "iterations": job.iterations,
        "final_error": job.final_error,
        "device": job.device,
        "worker": job.worker,
        "message": job.message,
        "streaming": job.is_streaming,
        "partial": job.partial,
        "live": job.live or None,
        "downloads": {fmt: reverse("jobs:download", args=[job.pk, fmt]) for fmt in FORMATS} if done else {},
    }


def job_detail(job: Job) -> dict[str, Any]:
    out = job_summary(job)
    out["parameters"] = job.parameters
    try:
        out["cmdstr"] = Parameters.from_dict(job.parameters).to_cmdstr()
    except Exception:
        out["cmdstr"] = None
    out["error_history"] = job.error_history
    out["run_plan"] = job.run_plan or None
    out["provenance"] = job.provenance or None
    return out

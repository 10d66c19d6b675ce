"""Where a job's files live: one folder per job under ``PTYCHOPY_RESULTS_DIR``."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def job_results_dir(job_id: int) -> Path:
    """``PTYCHOPY_RESULTS_DIR/job_<id>``: the result file, the exports and the snapshots of job ``job_id``."""
    return Path(settings.PTYCHOPY_RESULTS_DIR) / f"job_{job_id}"

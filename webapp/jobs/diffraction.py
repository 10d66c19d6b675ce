"""A finished job's diffraction panel: one scan position's measured pattern next to the model of the result file
(its object, probe and positions), as the live frames draw them (reconstruction/diffraction_preview.py)."""

from __future__ import annotations

import base64
from typing import Any

from reconstruction import InputDataError, ParameterError, Parameters
from reconstruction.diffraction_preview import result_diffraction
from reconstruction.simulated_patterns import PatternsBeingPrepared
from webapp.scans.paths import confine_parameters

from .models import Job
from .results import job_results_dir


class NoPattern(Exception):
    """Why the patterns cannot be shown; ``status`` is the HTTP answer (400 a bad position, 404 no result file,
    409 the raw data cannot be read, 503 an earlier request is still simulating the scan: ``retry_after_s``)."""

    def __init__(self, message: str, status: int, retry_after_s: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


#: what a 503 asks the page to wait before it asks again (seconds): a noisy scan's first simulation takes 3-20 s
RETRY_AFTER_S = 3


def finished_diffraction(job: Job, position: int) -> dict[str, Any]:
    """``{"position", "n_positions", "binning", "log_range", "images": [measured, model]}`` for scan position
    ``position`` of ``job``'s result; each image is ``{"name", "shape", "vmin", "vmax", "bdata"}`` (base64 uint8,
    0..255 over log10(1 + counts) in ``vmin..vmax``, the live frame's ``diffraction_*`` images). NoPattern says
    why not."""
    from reconstruction.io import read_result
    from reconstruction.loading import load_pattern, scan_positions

    if not job.result_path:
        raise NoPattern(f"job {job.pk} has no result file ({job.status})", 404)
    try:
        result = read_result(job.result_path)
    except InputDataError as exc:
        raise NoPattern(f"job {job.pk}'s result file cannot be read: {exc}", 404) from None
    n_positions = len(result.positions_px)
    if not 0 <= position < n_positions:
        raise NoPattern(
            f"position {position} is not one of job {job.pk}'s scan positions (0 to {n_positions - 1})", 400
        )
    try:
        params = (
            result.parameters if isinstance(result.parameters, Parameters) else Parameters.from_dict(job.parameters)
        )
        if scan_positions(params) != n_positions:  # e.g. a stream that ended early: which frame is which?
            raise ValueError(
                f"the result holds {n_positions} positions, the scan {scan_positions(params)}, so "
                "which frame each position is is not known"
            )
        # a simulated scan keeps its object (noise-free) or its patterns (noisy) in the job's folder, deleted with
        # the job: a second click reads one pattern instead of simulating the scan again
        measured = load_pattern(confine_parameters(params), position, cache_dir=job_results_dir(job.pk))
    except PatternsBeingPrepared as exc:  # a bounded wait: a web worker is not held for the whole simulation
        raise NoPattern(f"job {job.pk}'s position {position} is being prepared: {exc}", 503, RETRY_AFTER_S) from None
    except (InputDataError, ParameterError, OSError, ValueError) as exc:
        raise NoPattern(
            f"job {job.pk}'s raw data cannot be read, so its measured pattern cannot be shown: {exc}", 409
        ) from None
    try:
        shown = result_diffraction(
            result.object, result.probe, result.positions_px, measured, position, result.intensity_scale
        )
    except ValueError as exc:  # a pattern of another size than the probe, a window outside the object
        raise NoPattern(f"job {job.pk}: {exc}", 409) from None
    lo, hi = shown.log_range
    return {
        "position": shown.position,
        "n_positions": n_positions,
        "binning": shown.binning,
        "log_range": [lo, hi],
        "images": [
            {
                "name": name,
                "shape": [int(s) for s in img.shape],
                "vmin": lo,
                "vmax": hi,
                "bdata": base64.b64encode(img.tobytes()).decode(),
            }
            for name, img in (("diffraction_measured", shown.measured), ("diffraction_model", shown.model))
        ],
    }

"""The comparison page's data: two jobs' results aligned (reconstruction.compare), as small images and a curve."""

from __future__ import annotations

import struct

import numpy as np

from reconstruction.compare import FRC_THRESHOLD, HALF_BIT, compare_objects, compare_results
from webapp.live.frames import decode_frame

from .comparison_page import ComparisonView
from .models import Job
from .snapshots import list_snapshots, snapshot_path


class NotComparable(ValueError):
    """Why two jobs cannot be compared (no result yet, other pixel sizes, ...), said to the user."""


def threshold_of(name: str) -> float | str:
    """The FRC threshold a page asks for: ``half-bit`` (two half-data reconstructions), else 1/7."""
    return HALF_BIT if name == "half-bit" else FRC_THRESHOLD


def compare_jobs(a: Job, b: Job, threshold: float | str = FRC_THRESHOLD) -> ComparisonView:
    """Job ``b``'s final object aligned onto job ``a``'s; NotComparable naming the job and the reason."""
    from reconstruction.io import read_result

    results = []
    for job in (a, b):
        if not job.result_path:
            raise NotComparable(f"job {job.pk} has no result file yet ({job.status})")
        try:
            results.append(read_result(job.result_path))
        except Exception as exc:  # a missing or unreadable file: say which
            raise NotComparable(f"job {job.pk}'s result file cannot be read: {exc}") from None
    try:
        found = compare_results(results[0], results[1], threshold)
    except ValueError as exc:
        raise NotComparable(f"jobs {a.pk} and {b.pk}: {exc}") from None
    return ComparisonView(found)


def snapshot_object(data: bytes, where: str) -> tuple[np.ndarray, float]:
    """The complex object of a stored frame (its 8-bit amplitude and phase previews mapped back to their value
    ranges) and the width of its pixels (m); NotComparable naming ``where`` when the frame has no object or no
    pixel size."""
    header, images = decode_frame(data)
    entries = {e["name"]: e for e in header.get("images", [])}
    if "object_amplitude" not in images or "object_phase" not in images:
        raise NotComparable(f"{where} holds no object image")
    pixel_m = entries["object_phase"].get("pixel_m")
    if not pixel_m:
        raise NotComparable(f"{where} has no pixel size: the FRC needs one")

    def values(name: str) -> np.ndarray:
        lo, hi = entries[name]["vmin"] or 0.0, entries[name]["vmax"] or 0.0
        return lo + (hi - lo) * images[name].astype(np.float64) / 255.0

    return values("object_amplitude") * np.exp(1j * values("object_phase")), float(pixel_m)


def compare_iterations(job: Job, first: int, second: int) -> ComparisonView:
    """Job ``job``'s object at stored iteration ``second`` aligned onto its object at ``first`` (the scrubber's
    snapshots: :mod:`webapp.jobs.snapshots`); NotComparable naming an iteration that is not stored."""
    stored = list_snapshots(job.pk)
    objects = []
    for iteration in (first, second):
        if iteration not in stored:
            listed = ", ".join(map(str, stored)) if stored else "none"
            raise NotComparable(f"job {job.pk} has no stored iteration {iteration} (stored: {listed})")
        try:
            data = snapshot_path(job.pk, iteration).read_bytes()
        except OSError as exc:
            raise NotComparable(f"job {job.pk}'s iteration {iteration} cannot be read: {exc}") from None
        where = f"job {job.pk}'s iteration {iteration}"
        try:
            objects.append(snapshot_object(data, where))
        except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:  # truncated, foreign, old format
            raise NotComparable(f"{where} is not a readable stored frame ({type(exc).__name__}: {exc})") from None
    (a, pa), (b, pb) = objects
    if abs(pa / pb - 1) > 1e-3 or a.shape != b.shape:
        raise NotComparable(f"job {job.pk}'s iterations {first} and {second} are on other grids "
                            f"({a.shape} of {pa:.4g} m, {b.shape} of {pb:.4g} m)")
    return ComparisonView(compare_objects(a, b, pa))

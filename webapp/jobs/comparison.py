"""The comparison page's data: two jobs' results aligned (reconstruction.compare), as small images and a curve."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from typing import Any

import numpy as np
from django.core.cache import cache

from reconstruction.compare import FRC_THRESHOLD, HALF_BIT, compare_objects, compare_results
from webapp.live.frames import decode_frame

from .comparison_page import ComparisonView
from .models import Job
from .snapshots import list_snapshots, snapshot_path

log = logging.getLogger(__name__)


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


#: How long a comparison's page data is kept (s); a rewritten result file is another key.
CACHE_S = 7 * 24 * 3600


def compared_jobs(a: Job, b: Job, threshold: float | str = FRC_THRESHOLD) -> dict[str, Any]:
    """``{"summary", "page_data"}`` of :func:`compare_jobs`, kept in Django's cache (Redis in production, shared by
    the web processes) by the two result files' identity (path, inode, size, mtime) and the threshold: aligning two
    2048^2 objects costs seconds and about 0.6 GB, and the page is reloaded. A cache outage costs the time, not the
    page."""
    key = _cache_key(a, b, threshold)
    found = _cache_get(key) if key else None
    if found is not None:
        return found
    view = compare_jobs(a, b, threshold)
    out = {"summary": view.summary(), "page_data": view.page_data()}
    if key:
        try:
            cache.set(key, out, timeout=CACHE_S)
        except Exception as exc:  # an unreachable cache: the answer still goes out
            log.warning("comparison of jobs %s and %s not cached (%s)", a.pk, b.pk, exc)
    return out


def _cache_key(a: Job, b: Job, threshold: float | str) -> str | None:
    """The cache key of comparing ``a``'s and ``b``'s result files now, or None when one cannot be stat'ed."""
    parts = [str(threshold)]
    for job in (a, b):
        try:
            st = os.stat(job.result_path)
        except (OSError, ValueError):
            return None  # compare_jobs says why
        parts.append(f"{job.result_path}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}")
    return "compare:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cache_get(key: str) -> dict[str, Any] | None:
    try:
        found = cache.get(key)
    except Exception as exc:
        log.warning("comparison cache unreadable (%s)", exc)
        return None
    return found if isinstance(found, dict) else None


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

"""The shared job history: filtering and searching, used by the history page and the JSON API."""

from __future__ import annotations

from collections.abc import Mapping

from django.db.models import Q, QuerySet

from webapp.text_numbers import whole_number

from .models import Job

FILTERS = ("status", "algorithm", "owner", "source", "q")


def filter_jobs(query: Mapping[str, str], jobs: QuerySet[Job] | None = None) -> QuerySet[Job]:
    """Jobs matching ``status``, ``algorithm``, ``owner`` (username), ``source`` and free text ``q``."""
    jobs = (jobs if jobs is not None else Job.objects.all()).select_related("owner").defer("last_preview")
    status = (query.get("status") or "").strip()
    if status:
        jobs = jobs.filter(status=status)
    algorithm = (query.get("algorithm") or "").strip()
    if algorithm:
        jobs = jobs.filter(algorithm__iexact=algorithm)
    owner = (query.get("owner") or "").strip()
    if owner:
        jobs = jobs.filter(owner__username=owner)
    source = (query.get("source") or "").strip()
    if source:
        jobs = jobs.filter(source=source)
    text = (query.get("q") or "").strip()
    if text:
        match = (Q(label__icontains=text) | Q(owner__username__icontains=text) | Q(message__icontains=text)
                 | Q(device__icontains=text) | Q(worker__icontains=text) | Q(dedup_key__icontains=text))
        if (number := whole_number(text)) is not None:
            match |= Q(pk=number)
        jobs = jobs.filter(match)
    return jobs

"""Idempotent job submission: an ``Idempotency-Key`` header makes a retried POST answer with the job it created.

A client (the EPICS bridge) that lost the answer to a submission (crash, timeout, network error) sends the same
request again with the same key. The key is stored with the job, unique per user, together with a fingerprint of
the normalised request; a repeat with the same fingerprint gets the original job (200), a repeat with another
body is refused (422), so one key never stands for two different jobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from webapp.jobs.models import Job

from .models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 200
MAX_DIFFERENCES_SHOWN = 5


class BadKey(ValueError):
    """The header's value cannot be a key (empty, too long, not printable ASCII)."""


@dataclass(frozen=True)
class KeyReused(Exception):
    """The key already stands for another request; :attr:`message` says which job and what differs."""

    job: Job
    message: str


def read_key(value: str | None) -> str | None:
    """The key in an ``Idempotency-Key`` header value (None when the header is absent); raises :class:`BadKey`."""
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > MAX_KEY_CHARS or any(not " " <= ch <= "~" for ch in key):
        raise BadKey(f"the {HEADER} header must be 1-{MAX_KEY_CHARS} printable ASCII characters, got "
                     f"{len(key)} character(s): {key[:40]!r}")
    return key


def fingerprint(request: dict[str, Any]) -> str:
    """SHA-256 (hex) of the normalised request (parameters as ``Parameters.to_dict()``, label, source, ...)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def submit_once(owner: Any, key: str, request: dict[str, Any], create: Callable[[], Job]) -> tuple[Job, bool]:
    """The job for ``key``: created by ``create()`` the first time (``(job, True)``), the stored one for a repeat
    of the same ``request`` (``(job, False)``). Raises :class:`KeyReused` when the key came with another request.

    The job row and its key are committed together; of two concurrent first requests one creates the job and the
    other finds it (the unique constraint on owner and key decides), and the job is sent to the workers only once
    its row is committed.
    """
    digest = fingerprint(request)
    existing = _lookup(owner, key, digest, request)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            job = create()
            IdempotencyKey.objects.create(owner=owner, key=key, request_sha256=digest, job=job)
    except IntegrityError:
        existing = _lookup(owner, key, digest, request)
        if existing is None:
            raise
        return existing, False
    return job, True


def _lookup(owner: Any, key: str, digest: str, request: dict[str, Any]) -> Job | None:
    row = IdempotencyKey.objects.select_related("job").filter(owner=owner, key=key).first()
    if row is None:
        return None
    if row.request_sha256 != digest:
        raise KeyReused(row.job, reused_message(key, row.job, request))
    return row.job


def reused_message(key: str, job: Job, request: dict[str, Any]) -> str:
    """What a client is told when ``key`` comes back with a different body: the job it names and what differs."""
    original = {"parameters": job.parameters, "label": job.label, "source": job.source,
                "notify_email": job.notify_email}
    diffs = _differences(original, request)
    shown = ", ".join(diffs[:MAX_DIFFERENCES_SHOWN]) + (f" and {len(diffs) - MAX_DIFFERENCES_SHOWN} more"
                                                       if len(diffs) > MAX_DIFFERENCES_SHOWN else "")
    return (f"{HEADER} {key!r} was already used for job {job.pk} with a different request"
            + (f" (differs in {shown})" if shown else "")
            + "; a retry must send the same body, a new job needs a new key")


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b or (isinstance(a, list | tuple) and list(a) == list(b or [])) else [prefix or "body"]

"""Which scan position a job's diffraction panel shows: a viewer chooses it on the live page (its websocket), the
worker running the job reads it before each frame.

The choice is kept in Django's cache (Redis at ``REDIS_URL``, shared by the web processes and the workers; the
process's memory in the embedded mode, where the worker is a thread of the server), one per job, shared by all its
viewers: the frame says which position it shows. A lost cache costs the choice (the panel goes back to the middle
of the scan), never the run.
"""

from __future__ import annotations

import logging

from django.core.cache import cache

log = logging.getLogger(__name__)

#: How long a choice is kept (s): longer than any run a viewer watches.
CHOICE_TTL_S = 7 * 24 * 3600


def _key(job_id: int) -> str:
    return f"job:{int(job_id)}:diffraction-position"


def parse_position(value: object) -> int:
    """A position index from a viewer's message: a whole number >= 0 (bool and float refused), else ValueError
    naming the value."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"diffraction_position must be a whole number >= 0, got {value!r}")
    try:
        position = int(value)
    except ValueError:
        raise ValueError(f"diffraction_position must be a whole number >= 0, got {value!r}") from None
    if position < 0:
        raise ValueError(f"diffraction_position must be a whole number >= 0, got {value!r}")
    return position


def choose_position(job_id: int, position: int) -> None:
    """Make job ``job_id``'s diffraction panel show scan position ``position`` from its next frame."""
    cache.set(_key(job_id), int(position), timeout=CHOICE_TTL_S)


def chosen_position(job_id: int, n_positions: int) -> int | None:
    """The position a viewer chose for job ``job_id`` if it is one of its ``n_positions``, else None (nothing
    chosen, out of range, or the cache unreachable)."""
    try:
        value = cache.get(_key(job_id))
    except Exception as exc:  # a cache outage must not stop the run
        log.warning("job %s: the chosen diffraction position is unreadable (%s)", job_id, exc)
        return None
    if isinstance(value, int) and 0 <= value < n_positions:
        return value
    return None

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

from webapp.text_numbers import whole_number

log = logging.getLogger(__name__)

#: How long a choice is kept (s): longer than any run a viewer watches.
CHOICE_TTL_S = 7 * 24 * 3600


def _key(job_id: int) -> str:
    return f"job:{int(job_id)}:diffraction-position"


#: The largest position a viewer may choose: more than any scan holds (a 10^4-digit number was kept and echoed).
MAX_POSITION = 10**9 - 1


def parse_position(value: object) -> int:
    """A position index from a viewer's message: a whole number 0..``MAX_POSITION`` (an int, or ASCII digits in a
    string; bool and float refused), else ValueError naming the value (at most 40 characters of it)."""
    refused = f"diffraction_position must be a whole number >= 0, got {_shown(value)}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(refused)
    if isinstance(value, str):
        number = whole_number(value, len(str(MAX_POSITION)))
        if number is None:
            raise ValueError(refused)
        value = number
    if value < 0:
        raise ValueError(refused)
    if value > MAX_POSITION:
        raise ValueError(f"{refused}: no scan has that many positions (at most {MAX_POSITION + 1})")
    return value


def _shown(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (a huge int is not even turned into digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**limit:
        return f"a number of about {value.bit_length() * 0.30103:.0f} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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

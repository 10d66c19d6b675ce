"""Asking the web side for a streaming job's state on a thread of its own, so the worker thread never waits on it.

The bridge follows each accepted streaming job (docs/streaming.md, "Exactly once"): while its scan acquires and
after the scan's end, once per back-off interval. Over HTTP each question is a ``GET`` that a hung server holds for
up to the submitter's state timeout; meanwhile the worker must keep journalling scan edges. :class:`Asker` calls
``submitter.job_state`` for one job at a time, in order, and reports each answer back to the worker's event queue
as a :class:`StateAnswer`; the worker decides what it means. The journal and the state are touched only by the
worker.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .sender import InOrder

JobState = Callable[[str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class StateAnswer:
    """What ``job_state(job_id)`` returned for the scan ``key`` (None: no such job), or the exception it raised."""

    key: str
    job_id: str
    state: dict[str, Any] | None = None
    error: Exception | None = None


class Asker(InOrder):
    """Calls ``job_state`` for each handed-over (key, job id), in order (a question cut short by :meth:`stop` is
    asked again after the next start: the journal row is still ``watching`` or ``following``)."""

    def __init__(self, job_state: JobState, results: queue.Queue[Any]):
        super().__init__(results, "epics-bridge-asker")
        self.job_state = job_state

    def ask(self, key: str, job_id: str) -> None:
        self._put((key, job_id))

    def _call(self, item: tuple[str, str]) -> dict[str, Any] | None:
        return self.job_state(item[1])

    def _outcome(self, item: tuple[str, str], value: Any, error: Exception | None) -> StateAnswer:
        return StateAnswer(item[0], item[1], state=value, error=error)

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
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JobState = Callable[[str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class StateAnswer:
    """What ``job_state(job_id)`` returned for the scan ``key`` (None: no such job), or the exception it raised."""

    key: str
    job_id: str
    state: dict[str, Any] | None = None
    error: Exception | None = None


class Asker:
    """One daemon thread that calls ``job_state`` for each handed-over (key, job id), in order."""

    def __init__(self, job_state: JobState, results: queue.Queue[Any]):
        self.job_state = job_state
        self.results = results
        self._pending: deque[tuple[str, str]] = deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="epics-bridge-asker", daemon=True)

    def start(self) -> Asker:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after the question in progress (a followed job is asked again after the next start)."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout_s)

    def ask(self, key: str, job_id: str) -> None:
        with self._wake:
            self._pending.append((key, job_id))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._pending:
                    self._wake.wait()
                if self._stop:
                    return
                key, job_id = self._pending.popleft()
            try:
                self.results.put(StateAnswer(key, job_id, state=self.job_state(job_id)))
            except Exception as exc:  # every answer goes back to the worker, which decides
                self.results.put(StateAnswer(key, job_id, error=exc))

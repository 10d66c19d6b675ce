"""Submissions on a thread of their own, so the worker thread never waits on the web side.

Over HTTP a submission takes a round trip to a busy server (tens of ms) and, with the server hung, up to
``[submit] timeout_s``; meanwhile the worker must keep journalling scan ends (a bridge killed while events wait in
memory would lose them). :class:`Sender` calls ``submitter.submit`` for one scan at a time, in order, and reports
each outcome back to the worker's event queue as a :class:`SubmitDone`; the worker journals it. (State reports
have their own thread: :mod:`epics_bridge.publisher`.) The journal and the state are touched only by the worker.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .submit import SubmitRequest, Submitter


@dataclass(frozen=True)
class SubmitDone:
    """The outcome of one submission: the job id, or the exception the submitter raised."""

    key: str
    job_id: str = ""
    error: Exception | None = None


class Sender:
    """One daemon thread that calls ``submitter.submit`` for each handed-over scan, in order."""

    def __init__(self, submitter: Submitter, results: queue.Queue[Any]):
        self.submitter = submitter
        self.results = results
        self._pending: deque[tuple[str, SubmitRequest]] = deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="epics-bridge-sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after the call in progress (a submission cut short stays ``submitting`` in the journal and is sent
        again, with the same idempotency key, at the next start)."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout_s)

    def submit(self, key: str, request: SubmitRequest) -> None:
        with self._wake:
            self._pending.append((key, request))
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._pending:
                    self._wake.wait()
                if self._stop:
                    return
                key, request = self._pending.popleft()
            try:
                self.results.put(SubmitDone(key, job_id=self.submitter.submit(request)))
            except Exception as exc:  # every outcome goes back to the worker, which decides
                self.results.put(SubmitDone(key, error=exc))

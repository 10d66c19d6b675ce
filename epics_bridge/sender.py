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
from typing import Any, Self

from .submit import SubmitRequest, Submitter


@dataclass(frozen=True)
class SubmitDone:
    """The outcome of one submission: the job id, or the exception the submitter raised."""

    key: str
    job_id: str = ""
    error: Exception | None = None


class InOrder:
    """One daemon thread that runs :meth:`_call` for each handed-over item, in order, and puts what
    :meth:`_outcome` makes of each result (or exception) on the ``results`` queue (the worker's events)."""

    def __init__(self, results: queue.Queue[Any], name: str):
        self.results = results
        self._pending: deque[Any] = deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop after the call in progress."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout_s)

    def _put(self, item: Any) -> None:
        with self._wake:
            self._pending.append(item)
            self._wake.notify()

    def _call(self, item: Any) -> Any:
        raise NotImplementedError

    def _outcome(self, item: Any, value: Any, error: Exception | None) -> Any:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._pending:
                    self._wake.wait()
                if self._stop:
                    return
                item = self._pending.popleft()
            try:
                outcome = self._outcome(item, self._call(item), None)
            except Exception as exc:  # every outcome goes back to the worker, which decides
                outcome = self._outcome(item, None, exc)
            self.results.put(outcome)


class Sender(InOrder):
    """Calls ``submitter.submit`` for each handed-over scan, in order (a submission cut short by :meth:`stop` stays
    ``submitting`` in the journal and is sent again, with the same idempotency key, at the next start)."""

    def __init__(self, submitter: Submitter, results: queue.Queue[Any]):
        super().__init__(results, "epics-bridge-sender")
        self.submitter = submitter

    def submit(self, key: str, request: SubmitRequest) -> None:
        self._put((key, request))

    def _call(self, item: tuple[str, SubmitRequest]) -> str:
        return self.submitter.submit(item[1])

    def _outcome(self, item: tuple[str, SubmitRequest], value: Any, error: Exception | None) -> SubmitDone:
        return SubmitDone(item[0], error=error) if error is not None else SubmitDone(item[0], job_id=str(value))

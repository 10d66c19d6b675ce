"""Publishing the bridge's state (its heartbeat, the dashboard's data) from a thread of its own, latest first.

The submitter's ``publish_state`` may be slow: the first call sets Django up (seconds on a loaded machine), a
database or web server that hangs holds it until its timeout. Run on the worker thread, that held up everything
else: connection warnings, scan ends, submissions. Here the worker only hands over its newest snapshot; the
publisher thread sends the newest one it has whenever it is free (snapshots in between are dropped: each is
complete). Before the thread starts (tests driving the worker by hand) a snapshot is published at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class StatePublisher:
    """Latest-wins hand-over of state snapshots to ``publish`` (best effort: the first failure of an outage is a
    WARNING, the rest DEBUG, the recovery INFO)."""

    def __init__(self, publish: Callable[[dict[str, Any]], None] | None):
        self.publish = publish
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._latest: dict[str, Any] | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self._failing = False  # the last publish failed (warned once until one succeeds)

    def start(self) -> None:
        if self.publish is None or self._thread is not None:
            return
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="epics-bridge-publish", daemon=True)
        self._thread.start()

    def offer(self, snapshot: dict[str, Any]) -> None:
        """Publish ``snapshot`` soon (at once when the thread is not running)."""
        if self.publish is None:
            return
        if self._thread is None:
            self._send(snapshot)
            return
        with self._lock:
            self._latest = snapshot
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is pending (e.g. the "stopped" state), then end the thread; waits at most ``timeout_s``."""
        thread = self._thread
        if thread is None:
            return
        self._closing = True
        self._wake.set()
        thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                snapshot, self._latest = self._latest, None
            if snapshot is not None:
                self._send(snapshot)
            if self._closing and self._latest is None:
                return

    def _send(self, snapshot: dict[str, Any]) -> None:
        assert self.publish is not None
        try:
            self.publish(snapshot)
        except Exception as exc:  # a database or web server that is down must not stop the bridge
            if not self._failing:  # once an outage: the dashboard shows an older state until it ends
                log.warning("could not publish the bridge state to the web dashboard (it shows an older state "
                            "until this works again; retried with each heartbeat): %s: %s",
                            type(exc).__name__, exc)
            else:
                log.debug("could not publish the bridge state: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("the bridge state reaches the web dashboard again")
            self._failing = False

"""pyepics monitors whose callbacks do one thing: put an event on a queue.

pyepics runs callbacks inside Channel Access calls, where no other CA call is safe; so the callbacks here
copy what they were given into a :class:`~epics_bridge.trigger.ValueEvent` or
:class:`~epics_bridge.trigger.ConnectionEvent` and return. ``epics`` is imported in :meth:`Monitor.start`, so
the CA environment (``EPICS_CA_ADDR_LIST``, ports) can be set before libca creates its context.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from .trigger import ConnectionEvent, Event, ValueEvent

log = logging.getLogger(__name__)


POLL_INTERVAL_S = 0.1


class Monitor:
    """One auto-monitored pyepics PV per name, feeding ``events``.

    pyepics creates a PV's subscription inside its connection callback, where libca only queues the request; a
    small thread flushes libca's queue every ``POLL_INTERVAL_S`` (``epics.ca.poll``) so a new subscription, and
    with it the PV's first value, goes out at once instead of at libca's next own flush.
    """

    def __init__(self, pvnames: Iterable[str], events: queue.Queue[Event]):
        self.pvnames = tuple(dict.fromkeys(pvnames))
        self.events = events
        self._pvs: list[Any] = []
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        import epics

        for name in self.pvnames:
            # callbacks given to the constructor exist before the channel connects: no first value is missed
            pv = epics.PV(name, form="time", auto_monitor=True, callback=self._on_value,
                          connection_callback=self._on_connection)
            self._pvs.append(pv)
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll, name="epics-bridge-ca-poll", daemon=True)
        self._poller.start()
        log.info("monitoring %d PVs", len(self._pvs))

    def _poll(self) -> None:
        import epics

        epics.ca.use_initial_context()
        while not self._stop.wait(POLL_INTERVAL_S):
            epics.ca.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(2.0)
            self._poller = None
        for pv in self._pvs:
            try:
                pv.clear_callbacks()
                pv.connection_callbacks = []
                pv.disconnect()
            except Exception:  # shutting down: nothing useful to do about it
                log.debug("error disconnecting %s", pv.pvname, exc_info=True)
        self._pvs = []

    def _on_connection(self, pvname: str = "", conn: bool = False, **_kw: Any) -> None:
        self.events.put(ConnectionEvent(pvname, bool(conn), time.monotonic()))

    def _on_value(self, pvname: str = "", value: Any = None, char_value: Any = None, timestamp: Any = None,
                  **_kw: Any) -> None:
        if hasattr(value, "copy"):
            value = value.copy()  # numpy buffers may be reused by the next update
        self.events.put(ValueEvent(pvname, value, "" if char_value is None else str(char_value),
                                   time.monotonic(), float(timestamp or 0.0)))

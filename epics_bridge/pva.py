"""pvAccess monitors through p4p, feeding the same events as the Channel Access monitor.

A PV named ``pva://NAME`` in the configuration (trigger, data or metadata) is monitored over pvAccess; every
other name over Channel Access. The events carry the configured name, so the triggers cannot tell the two
apart. p4p delivers the PV's current value after every (re)connect, as pyepics does, so the worker's replay
rule holds unchanged: the first value after a connect is a replay.

Values: NTScalar (number or text) -> the value and its text; NTEnum -> the index, with the choice as text;
NTScalarArray -> the array, a byte array (a char waveform served by QSRV) read as text. The IOC's time stamp
is kept. p4p reads ``EPICS_PVA_ADDR_LIST``, ``EPICS_PVA_AUTO_ADDR_LIST``, ``EPICS_PVA_SERVER_PORT`` and
``EPICS_PVA_BROADCAST_PORT`` when :meth:`PvaMonitor.start` creates its context.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Iterable
from functools import partial
from typing import Any

from .config import PVA_SCHEME
from .trigger import ConnectionEvent, Event, ValueEvent

log = logging.getLogger(__name__)

HOLD_S = 0.05  # how long a value waits for a sibling posted before it (see TimeOrder)
FLUSH_INTERVAL_S = 0.01


def is_pva(name: str) -> bool:
    """Whether a configured PV name is monitored over pvAccess."""
    return name.startswith(PVA_SCHEME)


def pva_value(v: Any) -> tuple[Any, str, float]:
    """``(value, text, IOC time stamp)`` of a p4p ``Value`` (an NT structure) or of a plain value."""
    stamp = 0.0
    if hasattr(v, "getID"):
        if "timeStamp" in v:
            stamp = float(v["timeStamp.secondsPastEpoch"]) + 1e-9 * float(v["timeStamp.nanoseconds"])
        if "value" in v:
            v = v["value"]
    if hasattr(v, "getID") and "index" in v:  # NTEnum's enum_t
        index = int(v["index"])
        choices = list(v["choices"])
        return index, choices[index] if 0 <= index < len(choices) else str(index), stamp
    dtype = getattr(v, "dtype", None)
    if dtype is not None and dtype.kind in "iu" and dtype.itemsize == 1 and getattr(v, "ndim", 0) == 1:
        return v.copy(), bytes(v.astype("uint8")).split(b"\0", 1)[0].decode("latin-1"), stamp
    if dtype is not None and getattr(v, "ndim", 0) >= 1:
        return v.copy(), " ".join(str(x) for x in v[:16]), stamp
    return v, str(v), stamp


def close_p4p(subs: Iterable[Any], ctx: Any) -> None:
    """Close the p4p monitors ``subs`` and then their client context ``ctx`` (None: none); shutting down, so an
    error closing a monitor is only logged (debug)."""
    for sub in subs:
        try:
            sub.close()
        except Exception:  # shutting down: nothing useful to do about it
            log.debug("error closing a pvAccess monitor", exc_info=True)
    if ctx is not None:
        ctx.close()


class TimeOrder:
    """Puts value events back in the IOC's order: held ``hold_s`` after receipt, released by IOC time stamp.

    p4p queues each subscription's updates separately and drains them in turns, so two PVs posted one after
    the other by the IOC (``CPT`` then ``BUSY``) can reach the callbacks in the other order; Channel Access
    keeps one circuit's order. The triggers need that order (the values at the edge describe the scan), so
    each value waits ``hold_s`` and leaves in time-stamp order: an update delayed by less than ``hold_s`` is
    back in its place. A connection event first releases everything held (values before a disconnect precede
    it).
    """

    def __init__(self, out: queue.Queue[Event], hold_s: float):
        self.out, self.hold_s = out, hold_s
        self._heap: list[tuple[float, int, ValueEvent]] = []
        self._seq = 0
        self._lock = threading.Lock()

    def value(self, event: ValueEvent) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (event.timestamp, self._seq, event))

    def connection(self, event: ConnectionEvent) -> None:
        with self._lock:
            self._release(float("inf"))
            self.out.put(event)

    def flush(self, now_s: float) -> None:
        """Release, in time-stamp order, the values received at least ``hold_s`` ago."""
        with self._lock:
            self._release(now_s - self.hold_s)

    def _release(self, received_by_s: float) -> None:
        while self._heap and self._heap[0][2].received_s <= received_by_s:
            self.out.put(heapq.heappop(self._heap)[2])


class PvaMonitor:
    """One p4p monitor per ``pva://`` name, feeding ``events`` in the IOC's order (:class:`TimeOrder`)."""

    def __init__(self, pvnames: Iterable[str], events: queue.Queue[Event], hold_s: float = HOLD_S):
        self.pvnames = tuple(dict.fromkeys(n for n in pvnames if is_pva(n)))
        self.events = events
        self.order = TimeOrder(events, hold_s)
        self._ctx: Any = None
        self._subs: list[Any] = []
        self._connected: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self) -> None:
        if not self.pvnames:
            return
        from p4p.client.thread import Context

        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush, name="epics-bridge-pva-order", daemon=True)
        self._flusher.start()
        self._ctx = Context("pva", nt=False)
        for name in self.pvnames:
            self._subs.append(self._ctx.monitor(name[len(PVA_SCHEME):], partial(self._on_update, name),
                                                notify_disconnect=True))
        log.info("monitoring %d PVs over pvAccess", len(self._subs))

    def _flush(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self.order.flush(time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(2.0)
            self._flusher = None
        close_p4p(self._subs, self._ctx)
        self._subs, self._ctx = [], None

    def _on_update(self, name: str, update: Any) -> None:
        from p4p.client.thread import Disconnected

        now = time.monotonic()
        if isinstance(update, Exception):
            with self._lock:
                was = self._connected.get(name, False)
                self._connected[name] = False
            if isinstance(update, Disconnected):
                if was:
                    self.order.connection(ConnectionEvent(name, False, now))
            else:
                log.warning("%s: pvAccess monitor: %s: %s", name, type(update).__name__, update)
            return
        with self._lock:
            first = not self._connected.get(name, False)
            self._connected[name] = True
        if first:
            self.order.connection(ConnectionEvent(name, True, now))
        try:
            value, text, stamp = pva_value(update)
        except Exception as exc:  # a structure this bridge does not know: say so, keep the others going
            log.warning("%s: cannot read the pvAccess value (%s: %s)", name, type(exc).__name__, exc)
            return
        self.order.value(ValueEvent(name, value, text, now, stamp))

"""The ``pva_frames`` trigger: a scan is the detector's frames over pvAccess, for a beamline with no BUSY/Capture
PV (a detector streaming NTNDArrays through NDPluginPva alone; docs/streaming.md, "The start").

:class:`FrameWatch` (started with the bridge) monitors the ``[trigger] source`` address's image PV, and its
``status=`` and ``planned=`` PVs when it names them, and :class:`FrameScans` turns what arrives into scans:

- **a scan starts** with the first frame that arrives while no scan is open (the value the image PV holds when the
  monitor (re)connects is not a frame: it may be the previous scan's last one);
- **a new scan** also starts when a uniqueId arrives again (areaDetector's ``ArrayCounter`` reset to 0 before the
  scan), or with the first frame after a status 0 that followed the scan's end (a counter that is never reset);
- **it ends** as its status PV says (1 ended, 2 aborted: once every planned frame arrived or no frame came for
  ``END_GRACE_S`` after it, since p4p delivers each PV's updates on its own queue), or, without a status PV (or
  with one that never says so), after ``[trigger] idle_s`` with no frame; or when the next scan starts.

Each change is posted on the worker's queue as the values of ``frames://IMAGE#FIELD`` (``scan``: the first
frame's time stamp, UTC, naming the scan when no ``[data] scan_number_pv`` does; ``planned``: the frames the plan
takes, from the ``planned=`` table or else the template's scan; ``frames``: the frames the detector counted, its
highest uniqueId - its lowest + 1 (a frame lost on the way to the bridge still counts); ``how``:
``ended``, ``aborted``, ``idle`` or ``next scan``; ``busy``: 1 at the first frame, 0 at the end), so
:class:`FramesTrigger` is a BUSY trigger like the sscan one: the worker opens the streaming job at the rise
(``[stream]``) and classifies the end at the fall, exactly once with it as for any trigger. The other PVs (data,
metadata) describe the scan as they were ``debounce_s`` after its first frame (Channel Access values set with the
scan's start may reach the bridge after its first frame over pvAccess), at the end too: both find the same dedup
key, even when the next scan changed them before this one's end was seen.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from ptychopy.pva_buffer import LIGHT_REQUEST, MONITOR_REQUEST
from ptychopy.pva_source import PvaAddress, parse_address, stamp_of, status_code, utc_text
from reconstruction import InputDataError, ParameterError, Parameters
from reconstruction.live import planned_from_parameters

from .config import FRAMES_FIELDS, PVA_SCHEME, TriggerConfig
from .pva import close_p4p
from .trigger import (
    ConnectionEvent,
    Event,
    Outcome,
    PendingEnd,
    ScanEnd,
    ValueEvent,
    _FallingEdgeTrigger,
    as_int,
    int_of,
)

log = logging.getLogger(__name__)

END_GRACE_S = 1.0  # a status ended/aborted ends the scan once every planned frame arrived or no frame came this long
TICK_S = 0.05  # how often FrameWatch looks at the clock (idle and grace ends)
FRAMES_EVERY_S = 0.25  # the ``frames`` count is posted at most this often while a scan acquires (and at its end)

Change = tuple[str, Any, float]  # (field of FRAMES_FIELDS, value, IOC time stamp in POSIX s)


class FrameScans:
    """Scans from frames alone (the module docstring), pure: :meth:`frame`, :meth:`status` and :meth:`tick` take
    what arrived (``now``: time.monotonic() s) and return the changes to post, in order. ``planned``: frames per
    scan when no planned PV says (0: unknown); ``idle_s``: no frame this long ends a scan."""

    def __init__(self, idle_s: float, planned: int = 0, end_grace_s: float = END_GRACE_S):
        self.idle_s = float(idle_s)
        self.planned = int(planned)
        self.end_grace_s = float(end_grace_s)
        self.open = False
        self.scans = 0
        self._seen: set[int] = set()
        self._last_frame_s = 0.0
        self._posted_s = 0.0
        self._posted_n = 0
        self._end_at: float | None = None  # the status said ended/aborted (monotonic s)
        self._how = ""

    def values(self) -> list[Change]:
        """The values now (posted after a (re)connect: a replay, never an edge)."""
        return [("scan", "", 0.0), ("planned", self.planned, 0.0), ("frames", self.span() if self.open else 0, 0.0),
                ("how", self._how, 0.0), ("busy", int(self.open), 0.0)]

    def span(self) -> int:
        """The frames the detector counted in the open scan: its highest uniqueId - its lowest + 1 (a frame lost on
        the way to the bridge, e.g. a monitor queue overrun, still counts: the scan's files have it)."""
        return max(self._seen) - min(self._seen) + 1 if self._seen else 0

    def frame(self, uid: int, stamp: float, now: float) -> list[Change]:
        """A frame of uniqueId ``uid`` stamped ``stamp`` arrived."""
        out: list[Change] = []
        if self.open and uid in self._seen:  # the counter began again: the next scan
            out += self._end("next scan", stamp)
        if not self.open:
            self.open, self.scans, self._seen = True, self.scans + 1, {uid}
            self._end_at, self._how = None, ""
            self._last_frame_s = self._posted_s = now
            self._posted_n = 1
            return out + [("scan", utc_text(stamp or time.time()), stamp), ("planned", self.planned, stamp),
                          ("frames", 1, stamp), ("how", "", stamp), ("busy", 1, stamp)]
        self._seen.add(uid)
        self._last_frame_s = now
        if now - self._posted_s >= FRAMES_EVERY_S:
            out += self._count(stamp, now)
        return out

    def status(self, code: int, stamp: float, now: float) -> list[Change]:
        """The status PV said ``code`` (0 acquiring, 1 ended, 2 aborted)."""
        if code in (1, 2):
            if self.open and self._end_at is None:
                self._end_at, self._how = now, "aborted" if code == 2 else "ended"
            return []
        if self.open and self._end_at is not None:  # the next scan began before this one's grace ran out
            return self._end(self._how, stamp)
        return []

    def tick(self, now: float) -> list[Change]:
        """The clock: a scan whose status said so and whose frames had time to arrive ends; so does one with no
        frame for ``idle_s``."""
        if not self.open:
            return []
        stamp = time.time()
        if self._end_at is not None and (
                (self.planned and len(self._seen) >= self.planned)
                or now - max(self._end_at, self._last_frame_s) >= self.end_grace_s):
            return self._end(self._how, stamp)
        if now - self._last_frame_s >= self.idle_s:
            return self._end("idle", stamp)
        return []

    def new_plan(self, planned: int) -> None:
        """The planned PV posted a plan of ``planned`` frames (the next scan's, or this one's)."""
        self.planned = int(planned)

    def _count(self, stamp: float, now: float) -> list[Change]:
        n = self.span()
        if n == self._posted_n:
            return []
        self._posted_s, self._posted_n = now, n
        return [("frames", n, stamp)]

    def _end(self, how: str, stamp: float) -> list[Change]:
        self.open, self._how = False, how
        out = [("frames", self.span(), stamp), ("how", how, stamp), ("busy", 0, stamp)]
        self._posted_n = 0
        return out


def template_frames(template: Parameters) -> int:
    """The frames the parameter template's scan takes (``-scanDims``...; 0 when it names no scan)."""
    try:
        return int(planned_from_parameters(template).n_positions)
    except (ParameterError, InputDataError, ValueError):
        return 0


class FrameWatch:
    """The bridge's monitor of ``config.frames_source`` feeding ``events`` with the values of
    :class:`FrameScans` (as ``frames://IMAGE#FIELD``; p4p reads the environment's EPICS_PVA_* variables).
    ``planned``: frames per scan when the address names no planned PV (the template's scan; 0: unknown)."""

    def __init__(self, config: TriggerConfig, events: queue.Queue[Event], planned: int = 0,
                 conf: Mapping[str, str] | None = None):
        self.config = config
        self.address: PvaAddress = parse_address(config.frames_source)
        self.events = events
        self.scans = FrameScans(config.idle_s, planned)
        self._conf = dict(conf) if conf is not None else None
        self._lock = threading.Lock()
        self._ctx: Any = None
        self._subs: list[Any] = []
        self._skip: dict[str, bool] = {}
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.frames_seen = 0
        self._errors = 0

    def start(self) -> None:
        from p4p.client.thread import Context

        a = self.address
        self._ctx = (Context("pva", nt=False) if self._conf is None else
                     Context("pva", nt=False, conf=self._conf, useenv=False))
        # the image PV: each frame's uniqueId and time stamp only, not its pixels (all a scan's start and end need;
        # the detector would send every frame of every scan to the bridge's host a second time)
        for pv, cb, request in ((a.planned, self._on_planned, MONITOR_REQUEST),
                                (a.status, self._on_status, MONITOR_REQUEST), (a.image, self._on_frame, LIGHT_REQUEST)):
            if pv:
                self._skip[pv] = True
                self._subs.append(self._ctx.monitor(pv, self._guard(pv, cb), request=request,
                                                    notify_disconnect=True))
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, name="epics-bridge-frames", daemon=True)
        self._ticker.start()
        log.info("pva_frames trigger: scans from the frames of %s%s (idle %.3g s)", a.image,
                 f", status {a.status}" if a.status else "", self.config.idle_s)

    def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2.0)
            self._ticker = None
        close_p4p(self._subs, self._ctx)
        self._subs, self._ctx = [], None

    def connected(self) -> bool:
        """Whether every PV watched (image, status, planned) is connected and delivered its first value."""
        with self._lock:
            return bool(self._skip) and not any(self._skip.values())

    # -- p4p callbacks (its threads) ---------------------------------------------------------------------------
    def _guard(self, pv: str, cb: Any) -> Any:
        def handle(update: Any) -> None:
            with self._lock:
                if isinstance(update, Exception):  # disconnected: the next value is a replay
                    self._skip[pv] = True
                    if pv == self.address.image:
                        self._connection(False)
                    return
                if self._skip.get(pv):
                    self._skip[pv] = False
                    if pv == self.address.image:
                        self._connection(True)
                    if pv != self.address.planned:  # the plan is read from its first value on
                        return
                try:
                    cb(update)
                except Exception as exc:  # one unreadable update: logged, the watch goes on
                    self._errors += 1
                    if self._errors <= 10 or self._errors % 1000 == 0:
                        log.warning("pva_frames trigger: %s: %s: %s (%d so far)", pv, type(exc).__name__, exc,
                                    self._errors)
        return handle

    def _on_frame(self, v: Any) -> None:
        uid = int(v["uniqueId"])
        self.frames_seen += 1
        self._post(self.scans.frame(uid, stamp_of(v), time.monotonic()))

    def _on_status(self, v: Any) -> None:
        self._post(self.scans.status(status_code(v), stamp_of(v), time.monotonic()))

    def _on_planned(self, v: Any) -> None:
        value = v["value"]
        rows = value["row_m"] if hasattr(value, "keys") and "row_m" in value else None
        self.scans.new_plan(0 if rows is None else len(rows))

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                self._post(self.scans.tick(time.monotonic()))

    # -- events (under the lock: in order) ---------------------------------------------------------------------
    def _connection(self, connected: bool) -> None:
        now = time.monotonic()
        for name in FRAMES_FIELDS:
            self.events.put(ConnectionEvent(self.config.frames_pv(name), connected, now))
        if connected:
            self._post(self.scans.values())  # the replay after the connect (never an edge)

    def _post(self, changes: list[Change]) -> None:
        now = time.monotonic()
        for name, value, stamp in changes:
            self.events.put(ValueEvent(self.config.frames_pv(name), value, str(value), now, stamp))


class FramesTrigger(_FallingEdgeTrigger):
    """The ``frames://IMAGE#busy`` value of :class:`FrameWatch` going 1 -> 0 ends a scan: aborted when its status
    PV said so, partial with fewer frames counted than planned, else complete. The values at the edge are final
    (nothing captured after it: the next scan's frames count anew), and every PV but the frames' is taken as it was
    when the scan's start was described (``debounce_s`` after its first frame)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._at_start: dict[str, ValueEvent] = {}  # the other PVs as the scan's start was described
        self._start_due: float | None = None  # when to take them: debounce_s after the first frame (monotonic s)

    @property
    def edge_pv(self) -> str:
        return self.config.frames_pv("busy")

    def handle(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
               latest: Mapping[str, ValueEvent]) -> None:
        edge = as_int(event.value) if event.pvname == self.edge_pv and live else None
        if edge == 1:  # the scan's first frame: its PVs are read debounce_s later, as the worker describes its start
            self._at_start, self._start_due = {}, event.received_s + self.debounce_s
        elif edge == 0:  # described from the values its start was (set before its first frame: the next scan's may
            self._take_start(latest)  # have changed them since)
            latest = {**latest, **self._at_start}
        super().handle(event, previous, live, latest)

    def poll(self, now_s: float, latest: Mapping[str, ValueEvent] | None = None) -> list[ScanEnd]:
        if self._start_due is not None and now_s >= self._start_due and latest is not None:
            self._take_start(latest)
        return super().poll(now_s, latest)

    def _take_start(self, latest: Mapping[str, ValueEvent]) -> None:
        if self._start_due is None:
            return
        prefix = self.config.frames_pv("")
        self._at_start = {pv: ev for pv, ev in latest.items() if not pv.startswith(prefix)}
        self._start_due = None

    def capture(self, pending: PendingEnd, event: ValueEvent) -> bool:
        return False  # final at the edge

    def classify(self, pending: PendingEnd) -> ScanEnd:
        c, values = self.config, pending.values
        got, planned = int_of(values, c.frames_pv("frames")), int_of(values, c.frames_pv("planned"))
        how = str(values[c.frames_pv("how")].value) if c.frames_pv("how") in values else ""
        counts = f"{got} of {planned or '?'} frames"
        if how == "aborted":
            return pending.end(Outcome.ABORTED, f"{c.frames_source.partition('?')[0][len(PVA_SCHEME):]}: status "
                                                f"aborted after {counts}")
        if got is None or (planned and got < planned):
            return pending.end(Outcome.PARTIAL, f"{counts} ({how or 'ended'})")
        return pending.end(Outcome.COMPLETE, f"{counts} ({how or 'ended'})")

"""Pure completion-trigger logic: replay suppression, edges, debounce and classification. No EPICS here.

The monitor turns pyepics callbacks into :class:`ValueEvent` / :class:`ConnectionEvent`; the worker feeds them to a
:class:`PvTracker` (which marks the first value after every (re)connect as a *replay*) and to a trigger
(:class:`SscanTrigger`, :class:`AreaDetectorTrigger`, :class:`FileNameTrigger`). A trigger acts on edges it saw
live, and on an end that happened while it was disconnected (busy 1 before the disconnect, 0 in the replay after it;
or a new file name in that replay): such an end is classified from the values replayed after the reconnect, like any
other, and marked ``after_disconnect``. Replays never start a scan, and the first value after the bridge starts is
never an end, unless the journal says the scan was running when the bridge stopped. At the edge a trigger captures
every PV's value (with the IOC's time stamp) into a :class:`PendingEnd`; while it waits ``debounce_s`` of quiet on
its own PVs (at most ``max_debounce_s``), its :meth:`Trigger.capture` hook updates the values that decide
completeness (a message posted just after the edge is still read) until the next scan shows (a counter reset, a new
scan number, the edge PV rising): from then on nothing changes them. A scan is classified from its own captured
values only, never from the latest ones, which may already be the next scan's. The other PVs (data file, scan
number, metadata) are taken as they were at the edge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .config import TriggerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValueEvent:
    """A monitor update: the value, its text form (char waveforms as text) and when it was received."""

    pvname: str
    value: Any
    text: str
    received_s: float  # time.monotonic() in the bridge
    timestamp: float = 0.0  # the IOC's time stamp (POSIX seconds)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready ``{"value", "text", "timestamp"}`` (arrays as lists) for the journal."""
        return dict(value=_jsonable(self.value), text=self.text, timestamp=self.timestamp)

    @classmethod
    def from_record(cls, pvname: str, record: Mapping[str, Any], received_s: float = 0.0) -> ValueEvent:
        """The event :meth:`to_record` stored."""
        return cls(pvname, record.get("value"), str(record.get("text", "")), received_s,
                   float(record.get("timestamp", 0.0)))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


@dataclass(frozen=True)
class ConnectionEvent:
    """A PV connected or disconnected."""

    pvname: str
    connected: bool
    received_s: float


Event = ValueEvent | ConnectionEvent


class Outcome(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"  # stopped before all points (CPT < NPTS, NumCaptured < NumCapture)
    ABORTED = "aborted"  # message says abort/abandon/error
    FAILED = "failed"  # the file writer reported an error


@dataclass(frozen=True)
class ScanEnd:
    """A classified end of scan."""

    outcome: Outcome
    reason: str
    ended_s: float  # monotonic time of the edge
    file: str = ""  # the file-name trigger's value
    values: Mapping[str, ValueEvent] = field(default_factory=dict)  # every PV's latest value at the edge
    after_disconnect: bool = False  # the end was seen only in the values replayed after a reconnect
    edge_id: int | None = None  # the journal row of the edge
    edge_timestamp: float = 0.0  # the IOC's time stamp of the edge (POSIX s)
    disconnected: tuple[str, ...] = ()  # PVs that were not connected at the edge


class PvTracker:
    """Latest value of each PV, and whether a value is live or the replay that follows a (re)connect."""

    def __init__(self) -> None:
        self.latest: dict[str, ValueEvent] = {}
        self.connected: dict[str, bool] = {}
        self._armed: dict[str, bool] = {}

    def seed(self, event: ValueEvent) -> None:
        """Start from a value a previous run saw (the next value, a replay, is compared with it)."""
        self.latest[event.pvname] = event

    def update(self, event: Event) -> tuple[ValueEvent | None, bool]:
        """Record ``event``; for a value, return (previous value, live). Connection events return (None, False)."""
        if isinstance(event, ConnectionEvent):
            self.connected[event.pvname] = event.connected
            self._armed[event.pvname] = False  # the next value is the current value replayed
            return None, False
        previous = self.latest.get(event.pvname)
        live = self._armed.get(event.pvname, False)
        self.latest[event.pvname] = event
        self._armed[event.pvname] = True
        return previous, live


def as_int(value: Any) -> int | None:
    """An integer from a PV value (number, one-element array, or numeric text); None when it is not one."""
    try:
        if hasattr(value, "__len__") and not isinstance(value, str):
            value = value[0] if len(value) else None
        if value is None:
            return None
        return int(float(value))
    except (TypeError, ValueError, IndexError):
        return None


def as_float(value: Any) -> float | None:
    """A finite float from a PV value (number, one-element array, numeric text); None otherwise."""
    try:
        if hasattr(value, "__len__") and not isinstance(value, str):
            value = value[0] if len(value) else None
        x = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return x if x == x and abs(x) != float("inf") else None


def text_of(latest: Mapping[str, ValueEvent], pvname: str) -> str:
    ev = latest.get(pvname) if pvname else None
    return "" if ev is None else str(ev.text if ev.text is not None else ev.value).strip()


def int_of(latest: Mapping[str, ValueEvent], pvname: str) -> int | None:
    ev = latest.get(pvname) if pvname else None
    return None if ev is None else as_int(ev.value)


@dataclass
class PendingEnd:
    """A scan end seen at its edge and not yet classified: the values that decide it, as they were at the edge
    and then as :meth:`Trigger.capture` updated them while the debounce ran.

    ``frozen`` means the next scan has begun (a counter reset, a new scan number, the edge PV rising again):
    nothing after that describes this scan, so it is classified at once from what was captured. ``edge_id`` is
    the journal row that holds these values durably (set by the worker; None in pure-logic use).
    """

    ended_s: float
    deadline_s: float
    hard_deadline_s: float
    values: dict[str, ValueEvent]
    file: str = ""
    after_disconnect: bool = False
    frozen: bool = False
    edge_id: int | None = None
    edge_timestamp: float = 0.0  # the IOC's time stamp of the edge (POSIX s; 0 when unknown)
    disconnected: tuple[str, ...] = ()  # PVs not connected at the edge (set by the worker)

    def end(self, outcome: Outcome, reason: str) -> ScanEnd:
        return ScanEnd(outcome, reason, self.ended_s, self.file, self.values, self.after_disconnect, self.edge_id,
                       self.edge_timestamp, self.disconnected)


EdgeHook = Callable[[PendingEnd], None]
#: Called when a scan starts (a live rising edge, a start document) with the edge's event and the values that
#: describe the scan beyond the PVs' latest ones (a start document's ``start:KEY``; {} for PV triggers).
StartHook = Callable[[ValueEvent, Mapping[str, ValueEvent]], None]


class Trigger:
    """Base: edges, the per-scan capture of the values that decide completeness, and the debounce.

    A kind defines :attr:`edge_pv`, :meth:`_on_edge_pv` (which calls :meth:`_start_pending` at an end) and
    :meth:`classify`; it may override :meth:`capture` to say how a value that arrives during the debounce
    changes the captured ones, and when it means that the next scan has begun. ``next_scan_pvs`` (the data
    PVs: scan number, file name) changing during the debounce also means that. ``on_capture`` is called with
    every new or changed :class:`PendingEnd`, so the worker can journal it before any debounce.
    """

    def __init__(self, config: TriggerConfig, debounce_s: float, max_debounce_s: float,
                 next_scan_pvs: tuple[str, ...] = (), on_capture: EdgeHook | None = None):
        self.config = config
        self.debounce_s = debounce_s
        self.max_debounce_s = max(max_debounce_s, debounce_s)
        self.next_scan_pvs = tuple(pv for pv in next_scan_pvs if pv and pv not in config.pvs)
        self.on_capture = on_capture
        self._pending: list[PendingEnd] = []
        self._ready: list[ScanEnd] = []
        self.missed_edges = 0  # ends seen only after a reconnect (each is then classified as usual)
        self.on_start: StartHook | None = None  # the worker's, when it opens streaming jobs at scan starts

    @property
    def watched(self) -> tuple[str, ...]:
        return self.config.pvs

    def handle(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
               latest: Mapping[str, ValueEvent]) -> None:
        """Feed one value event (already recorded in ``latest``)."""
        if event.pvname != self.edge_pv:
            for p in self._pending:
                self._capture_into(p, event, previous)
        if event.pvname == self.edge_pv:
            self._on_edge_pv(event, previous, live, latest)

    def _capture_into(self, p: PendingEnd, event: ValueEvent, previous: ValueEvent | None) -> None:
        if p.frozen:
            return
        if p.after_disconnect:  # every PV's replay after the reconnect describes the scan that ended
            p.values[event.pvname] = event
            p.deadline_s = min(max(p.deadline_s, event.received_s + self.debounce_s), p.hard_deadline_s)
            self._notify(p)
            return
        if event.pvname in self.next_scan_pvs:
            if p.values.get(event.pvname) is None or text_of(p.values, event.pvname) != str(event.text).strip():
                self._freeze(p, event.received_s)
            return
        if event.pvname not in self.watched:
            return
        if self.capture(p, event):
            self._freeze(p, event.received_s)
            return
        # a related PV moved: wait for quiet again
        p.deadline_s = min(max(p.deadline_s, event.received_s + self.debounce_s), p.hard_deadline_s)
        self._notify(p)

    def _freeze(self, p: PendingEnd, now_s: float) -> None:
        p.frozen = True
        p.deadline_s = min(p.deadline_s, now_s)
        self._notify(p)

    def _notify(self, p: PendingEnd) -> None:
        if self.on_capture is not None:
            self.on_capture(p)

    def capture(self, pending: PendingEnd, event: ValueEvent) -> bool:
        """A value of one of this trigger's PVs arrived during the debounce: update ``pending.values`` and
        return False, or return True (changing nothing) when it shows that the next scan has begun.

        The default takes every value. Kinds override it: a counter that goes down was reset by the next scan."""
        pending.values[event.pvname] = event
        return False

    def poll(self, now_s: float, latest: Mapping[str, ValueEvent] | None = None) -> list[ScanEnd]:
        """Scan ends whose debounce has passed (or whose next scan began), classified from their captured
        values. ``latest`` is not used (kept for callers that pass it)."""
        out, self._ready = self._ready, []
        keep = []
        for p in self._pending:
            if now_s >= p.deadline_s:
                out.append(self.classify(p))
            else:
                keep.append(p)
        self._pending = keep
        return out

    def next_deadline_s(self) -> float | None:
        if self._ready:
            return 0.0
        return min((p.deadline_s for p in self._pending), default=None)

    def restore(self, pending: PendingEnd) -> ScanEnd:
        """Classify an end that a previous run of the bridge journalled but did not finish."""
        return self.classify(pending)

    def _start_pending(self, event: ValueEvent, latest: Mapping[str, ValueEvent], file: str = "",
                       after_disconnect: bool = False) -> None:
        at_s = event.received_s
        p = PendingEnd(at_s, at_s + self.debounce_s, at_s + self.max_debounce_s, dict(latest), file,
                       after_disconnect, edge_timestamp=event.timestamp)
        self._pending.append(p)
        self._notify(p)

    def _ended_while_disconnected(self, event: ValueEvent, latest: Mapping[str, ValueEvent], file: str = "") -> None:
        """An end seen in the replay after a reconnect (or after a restart of the bridge, when the journal says
        the scan was running): classify it like a live one once the other PVs' replays have come in (the
        debounce), marked ``after_disconnect``. Of several scans that ended while disconnected, only the last is
        seen; the scan-number gap reports the others."""
        self.missed_edges += 1
        log.warning("%s: a scan ended while the bridge was disconnected; classifying it from the values after "
                    "the reconnect", event.pvname)
        self._start_pending(event, latest, file, after_disconnect=True)

    def _flush_now(self, now_s: float) -> None:
        """The next scan started: every pending end is over for sure; classify them from what they captured."""
        for p in self._pending:
            p.frozen = True
            self._ready.append(self.classify(p))
        self._pending = []

    # -- per kind ---------------------------------------------------------------------------------------------
    @property
    def edge_pv(self) -> str:
        """The PV whose change ends a scan."""
        raise NotImplementedError

    def _on_edge_pv(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
                    latest: Mapping[str, ValueEvent]) -> None:
        raise NotImplementedError

    def classify(self, pending: PendingEnd) -> ScanEnd:
        """The outcome of one scan end, from ``pending.values`` only."""
        raise NotImplementedError


def _counter_reset(pending: PendingEnd, event: ValueEvent) -> bool:
    """True when a count went down from what was captured (the next scan reset it)."""
    before, now = int_of(pending.values, event.pvname), as_int(event.value)
    return before is not None and now is not None and now < before


class _FallingEdgeTrigger(Trigger):
    """A busy flag going 1 -> 0 ends a scan; a replayed value never does."""

    def _on_edge_pv(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
                    latest: Mapping[str, ValueEvent]) -> None:
        now, before = as_int(event.value), as_int(previous.value) if previous else None
        if not live:
            if before == 1 and now == 0:
                self._ended_while_disconnected(event, latest)
            return
        if before == 1 and now == 0:
            self._start_pending(event, latest)
        elif now == 1:
            if self._pending:
                self._flush_now(event.received_s)
            if before == 0 and self.on_start is not None:  # seen live: a scan starts (never a replay)
                self.on_start(event, {})


class SscanTrigger(_FallingEdgeTrigger):
    """sscan record: BUSY 1 -> 0; SMSG tells an abort; CPT < NPTS (when configured) is partial.

    Captured after the edge: CPT while it does not go down (a reset is the next scan), SMSG unless an abort
    message was already captured (an abort stays an abort). NPTS is the value at the edge (the next scan may
    set its own)."""

    @property
    def edge_pv(self) -> str:
        return self.config.busy_pv

    def capture(self, pending: PendingEnd, event: ValueEvent) -> bool:
        c = self.config
        if event.pvname == c.current_point_pv:
            if _counter_reset(pending, event):
                return True
        elif event.pvname == c.message_pv:
            if self._is_abort(text_of(pending.values, c.message_pv)):
                return False
        elif event.pvname == c.points_pv:
            return False
        pending.values[event.pvname] = event
        return False

    def _is_abort(self, message: str) -> bool:
        lowered = message.lower()
        return any(p in lowered for p in self.config.abort_patterns)

    def classify(self, pending: PendingEnd) -> ScanEnd:
        c, values = self.config, pending.values
        message = text_of(values, c.message_pv)
        if self._is_abort(message):
            return pending.end(Outcome.ABORTED, f"{c.message_pv}: {message!r}")
        cpt, npts = int_of(values, c.current_point_pv), int_of(values, c.points_pv)
        if cpt is not None and npts is not None and cpt < npts:
            return pending.end(Outcome.PARTIAL, f"{c.current_point_pv}={cpt} < {c.points_pv}={npts}")
        points = f"{c.current_point_pv}={cpt} of {c.points_pv}={npts}" if cpt is not None and npts else ""
        return pending.end(Outcome.COMPLETE, ", ".join(x for x in (points, message) if x) or "BUSY 1 -> 0")


class AreaDetectorTrigger(_FallingEdgeTrigger):
    """areaDetector file plugin: Capture_RBV 1 -> 0 with WriteStatus ok and NumCaptured == NumCapture.

    ``NumCapture = 0`` asks the plugin for an unlimited capture (Stream mode until Capture is set to 0): every
    frame captured counts, so such a capture is complete when it holds at least one frame (the file check then
    asks for the frames the scan dimensions need). With ``full_file_name_pv`` (``FullFileName_RBV``, set when
    the plugin opens the file, so at the end it names this capture's file) the scan's ``{file}`` fields come
    from the file name as it was at the edge.

    Captured after the edge: NumCaptured while it does not go down, a WriteStatus error (it stays an error)
    with its message. NumCapture or FullFileName_RBV changing means the next acquisition was set up.
    """

    @property
    def edge_pv(self) -> str:
        return self.config.capture_pv

    def classify(self, pending: PendingEnd) -> ScanEnd:
        end = self._classify_counts(pending)
        if self.config.full_file_name_pv:
            end = replace(end, file=text_of(pending.values, self.config.full_file_name_pv))
        return end

    def capture(self, pending: PendingEnd, event: ValueEvent) -> bool:
        c = self.config
        if event.pvname == c.num_captured_pv:
            if _counter_reset(pending, event):
                return True
        elif event.pvname in (c.num_capture_pv, c.full_file_name_pv):  # set for (or opened by) the next capture
            return text_of(pending.values, event.pvname) != str(event.text).strip()
        elif (event.pvname in (c.write_status_pv, c.write_message_pv) and c.write_status_pv
              and int_of(pending.values, c.write_status_pv)):
            return False  # an error stays captured with its message
        pending.values[event.pvname] = event
        return False

    def _classify_counts(self, pending: PendingEnd) -> ScanEnd:
        c, values = self.config, pending.values
        status = int_of(values, c.write_status_pv) if c.write_status_pv else 0
        if status:
            msg = text_of(values, c.write_message_pv)
            return pending.end(Outcome.FAILED, f"{c.write_status_pv}={status} {msg!r}".strip())
        got, want = int_of(values, c.num_captured_pv), int_of(values, c.num_capture_pv)
        if got is None or want is None:
            return pending.end(Outcome.PARTIAL, f"no value for {c.num_captured_pv} or {c.num_capture_pv}")
        if want == 0:
            if got > 0:
                return pending.end(Outcome.COMPLETE, f"{c.num_capture_pv}=0 (unlimited): captured {got} frames")
            return pending.end(Outcome.PARTIAL, f"{c.num_capture_pv}=0 (unlimited) and no frame captured")
        if got != want:
            return pending.end(Outcome.PARTIAL, f"{c.num_captured_pv}={got} != {c.num_capture_pv}={want}")
        return pending.end(Outcome.COMPLETE, f"captured {got} frames")


class EigerTrigger(_FallingEdgeTrigger):
    """ADEiger with its FileWriter: ``Acquire_RBV`` 1 -> 0; complete when the FileWriter is enabled and
    ``NumImagesCounter_RBV`` reached ``NumImages`` x ``NumTriggers``. The detector's DCU names the files
    ``{FilePath}/{FWNamePattern with $id = SequenceId}_data_NNNNNN.h5`` (and ``..._master.h5``); ``SequenceId``
    is set when the detector is armed, so the values at the edge name this acquisition's files: ``{file}`` is
    that name without the ``_data_NNNNNN.h5`` ending."""

    @property
    def edge_pv(self) -> str:
        return self.config.acquire_pv

    def capture(self, pending: PendingEnd, event: ValueEvent) -> bool:
        """The image counter while it does not go down (a reset is the next acquisition); the other PVs are
        taken as they were at the edge (the next arm sets its own SequenceId and counts)."""
        if event.pvname == self.config.images_counter_pv:
            if _counter_reset(pending, event):
                return True
            pending.values[event.pvname] = event
        elif event.pvname == self.config.fw_enable_pv:
            pending.values[event.pvname] = event
        return False

    def classify(self, pending: PendingEnd) -> ScanEnd:
        c = self.config
        values = pending.values
        pattern, seq = text_of(values, c.fw_name_pattern_pv), text_of(values, c.sequence_id_pv)
        directory = text_of(values, c.file_path_pv).rstrip("/")
        pending.file = f"{directory}/{pattern.replace('$id', seq)}" if pattern and seq else ""
        if c.fw_enable_pv and int_of(values, c.fw_enable_pv) != 1:
            return pending.end(Outcome.FAILED, f"{c.fw_enable_pv}={text_of(values, c.fw_enable_pv)!r}: the "
                                               f"FileWriter is disabled, no files were written")
        if not pending.file:
            return pending.end(Outcome.FAILED, f"no value for {c.fw_name_pattern_pv} or {c.sequence_id_pv}")
        got, per_trigger = int_of(values, c.images_counter_pv), int_of(values, c.num_images_pv)
        triggers = int_of(values, c.num_triggers_pv) if c.num_triggers_pv else 1
        if got is None or per_trigger is None or triggers is None:
            return pending.end(Outcome.PARTIAL, f"no value for {c.images_counter_pv}, {c.num_images_pv} or "
                                                f"{c.num_triggers_pv}")
        want = per_trigger * max(triggers, 1)
        if got < want:
            return pending.end(Outcome.PARTIAL, f"{c.images_counter_pv}={got} < {c.num_images_pv} x "
                                                f"{c.num_triggers_pv or 'one trigger'} = {want}")
        return pending.end(Outcome.COMPLETE, f"{got} images, sequence {seq}")


class FileNameTrigger(Trigger):
    """A PV that takes the name of each completed file: every new live, non-empty value is one scan."""

    @property
    def edge_pv(self) -> str:
        return self.config.file_name_pv

    def _on_edge_pv(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
                    latest: Mapping[str, ValueEvent]) -> None:
        name = str(event.text).strip()
        old = str(previous.text).strip() if previous else ""
        if not name or name == old:
            return
        for p in self._pending:  # a new file: the previous one's values are final
            p.frozen = True
        if live:
            self._start_pending(event, latest, file=name)
        elif previous is not None:  # not the first value after the bridge started
            self._ended_while_disconnected(event, latest, file=name)

    def classify(self, pending: PendingEnd) -> ScanEnd:
        return pending.end(Outcome.COMPLETE, f"{self.config.file_name_pv} = {pending.file!r}")


TRIGGER_CLASSES: dict[str, type[Trigger]] = {
    "sscan": SscanTrigger, "areadetector": AreaDetectorTrigger, "eiger": EigerTrigger, "filename": FileNameTrigger}


def make_trigger(config: TriggerConfig, debounce_s: float, max_debounce_s: float,
                 next_scan_pvs: tuple[str, ...] = (), on_capture: EdgeHook | None = None) -> Trigger:
    """The trigger of ``config.kind`` (a new kind registers its class in :data:`TRIGGER_CLASSES`)."""
    if config.kind == "bluesky" and "bluesky" not in TRIGGER_CLASSES:
        from .bluesky import BlueskyTrigger  # imports this module

        TRIGGER_CLASSES["bluesky"] = BlueskyTrigger
    if config.kind == "pva_frames" and "pva_frames" not in TRIGGER_CLASSES:
        from .frames import FramesTrigger  # imports this module

        TRIGGER_CLASSES["pva_frames"] = FramesTrigger
    return TRIGGER_CLASSES[config.kind](config, debounce_s, max_debounce_s, next_scan_pvs, on_capture)

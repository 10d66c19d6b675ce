"""Pure completion-trigger logic: replay suppression, edges, debounce and classification. No EPICS here.

The monitor turns pyepics callbacks into :class:`ValueEvent` / :class:`ConnectionEvent`; the worker feeds them
to a :class:`PvTracker` (which marks the first value after every (re)connect as a *replay*) and to a trigger
(:class:`SscanTrigger`, :class:`AreaDetectorTrigger`, :class:`FileNameTrigger`). A trigger acts on edges it saw
live, and on an end that happened while it was disconnected (busy 1 before the disconnect, 0 in the replay after
it; or a new file name in that replay): such an end is classified from the values replayed after the reconnect,
like any other, and marked ``after_disconnect``. Replays never start a scan, and the first value after the bridge
starts is never an end. A trigger waits ``debounce_s`` of quiet on its PVs (at most ``max_debounce_s``) before it
classifies the scan, so a message PV posted just after the edge is still read. The other PVs (data file, scan number,
metadata) are taken as they were at the edge: they describe the scan that just ended even when the next scan
has already started to change them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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


class PvTracker:
    """Latest value of each PV, and whether a value is live or the replay that follows a (re)connect."""

    def __init__(self) -> None:
        self.latest: dict[str, ValueEvent] = {}
        self.connected: dict[str, bool] = {}
        self._armed: dict[str, bool] = {}

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
class _Pending:
    ended_s: float
    deadline_s: float
    hard_deadline_s: float
    values: dict[str, ValueEvent]
    file: str = ""
    after_disconnect: bool = False

    def end(self, outcome: Outcome, reason: str) -> ScanEnd:
        return ScanEnd(outcome, reason, self.ended_s, self.file, self.values, self.after_disconnect)


class Trigger:
    """Base: debounce bookkeeping shared by all trigger kinds."""

    def __init__(self, config: TriggerConfig, debounce_s: float, max_debounce_s: float):
        self.config = config
        self.debounce_s = debounce_s
        self.max_debounce_s = max(max_debounce_s, debounce_s)
        self._pending: list[_Pending] = []
        self._ready: list[ScanEnd] = []
        self.missed_edges = 0  # ends seen only after a reconnect (each is then classified as usual)

    @property
    def watched(self) -> tuple[str, ...]:
        return self.config.pvs

    def handle(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
               latest: Mapping[str, ValueEvent]) -> None:
        """Feed one value event (already recorded in ``latest``)."""
        if event.pvname in self.watched and event.pvname != self.edge_pv:
            for p in self._pending:  # a related PV moved: wait for quiet again
                p.deadline_s = min(max(p.deadline_s, event.received_s + self.debounce_s), p.hard_deadline_s)
        if event.pvname == self.edge_pv:
            self._on_edge_pv(event, previous, live, latest)

    def poll(self, now_s: float, latest: Mapping[str, ValueEvent]) -> list[ScanEnd]:
        """Scan ends whose debounce has passed, classified with the latest values."""
        out, self._ready = self._ready, []
        keep = []
        for p in self._pending:
            if now_s >= p.deadline_s:
                out.append(self.classify(p, latest))
            else:
                keep.append(p)
        self._pending = keep
        return out

    def next_deadline_s(self) -> float | None:
        if self._ready:
            return 0.0
        return min((p.deadline_s for p in self._pending), default=None)

    def _start_pending(self, at_s: float, latest: Mapping[str, ValueEvent], file: str = "",
                       after_disconnect: bool = False) -> None:
        self._pending.append(_Pending(at_s, at_s + self.debounce_s, at_s + self.max_debounce_s, dict(latest), file,
                                      after_disconnect))

    def _ended_while_disconnected(self, event: ValueEvent, latest: Mapping[str, ValueEvent], file: str = "") -> None:
        """An end seen in the replay after a reconnect: classify it like a live one once the other PVs' replays
        have come in (the debounce), marked ``after_disconnect``. The data PVs are taken as they are now, which
        is as they were before the disconnect unless their replays came first: either way they name the last
        scan that ended (of several that ended while disconnected, only the last is seen)."""
        self.missed_edges += 1
        log.warning("%s: a scan ended while the bridge was disconnected; classifying it from the values after "
                    "the reconnect", event.pvname)
        self._start_pending(event.received_s, latest, file, after_disconnect=True)

    def _flush_now(self, latest: Mapping[str, ValueEvent]) -> None:
        self._ready.extend(self.classify(p, latest) for p in self._pending)
        self._pending = []

    # -- per kind ---------------------------------------------------------------------------------------------
    @property
    def edge_pv(self) -> str:
        """The PV whose change ends a scan."""
        raise NotImplementedError

    def _on_edge_pv(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
                    latest: Mapping[str, ValueEvent]) -> None:
        raise NotImplementedError

    def classify(self, pending: _Pending, latest: Mapping[str, ValueEvent]) -> ScanEnd:
        raise NotImplementedError


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
            self._start_pending(event.received_s, latest)
        elif now == 1 and self._pending:
            self._flush_now(latest)  # the next scan started: the previous one is over for sure


class SscanTrigger(_FallingEdgeTrigger):
    """sscan record: BUSY 1 -> 0; SMSG tells an abort; CPT < NPTS (when configured) is partial."""

    @property
    def edge_pv(self) -> str:
        return self.config.busy_pv

    def classify(self, pending: _Pending, latest: Mapping[str, ValueEvent]) -> ScanEnd:
        c = self.config
        message = text_of(latest, c.message_pv)
        lowered = message.lower()
        if any(p in lowered for p in c.abort_patterns):
            return pending.end(Outcome.ABORTED, f"{c.message_pv}: {message!r}")
        cpt, npts = int_of(latest, c.current_point_pv), int_of(latest, c.points_pv)
        if cpt is not None and npts is not None and cpt < npts:
            return pending.end(Outcome.PARTIAL, f"{c.current_point_pv}={cpt} < {c.points_pv}={npts}")
        return pending.end(Outcome.COMPLETE, message or "BUSY 1 -> 0")


class AreaDetectorTrigger(_FallingEdgeTrigger):
    """areaDetector file plugin: Capture_RBV 1 -> 0 with WriteStatus ok and NumCaptured == NumCapture.

    ``NumCapture = 0`` asks the plugin for an unlimited capture (Stream mode until Capture is set to 0): every
    frame captured counts, so such a capture is complete when it holds at least one frame (the file check then
    asks for the frames the scan dimensions need). With ``full_file_name_pv`` (``FullFileName_RBV``, set when
    the plugin opens the file, so at the end it names this capture's file) the scan's ``{file}`` fields come
    from the file name as it was at the edge.
    """

    @property
    def edge_pv(self) -> str:
        return self.config.capture_pv

    def classify(self, pending: _Pending, latest: Mapping[str, ValueEvent]) -> ScanEnd:
        end = self._classify_counts(pending, latest)
        if self.config.full_file_name_pv:
            end = replace(end, file=text_of(pending.values, self.config.full_file_name_pv))
        return end

    def _classify_counts(self, pending: _Pending, latest: Mapping[str, ValueEvent]) -> ScanEnd:
        c = self.config
        status = int_of(latest, c.write_status_pv) if c.write_status_pv else 0
        if status:
            msg = text_of(latest, c.write_message_pv)
            return pending.end(Outcome.FAILED, f"{c.write_status_pv}={status} {msg!r}".strip())
        got, want = int_of(latest, c.num_captured_pv), int_of(latest, c.num_capture_pv)
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

    def classify(self, pending: _Pending, latest: Mapping[str, ValueEvent]) -> ScanEnd:
        c = self.config
        at_edge = pending.values
        pattern, seq = text_of(at_edge, c.fw_name_pattern_pv), text_of(at_edge, c.sequence_id_pv)
        directory = text_of(at_edge, c.file_path_pv).rstrip("/")
        pending.file = f"{directory}/{pattern.replace('$id', seq)}" if pattern and seq else ""
        if c.fw_enable_pv and int_of(latest, c.fw_enable_pv) != 1:
            return pending.end(Outcome.FAILED, f"{c.fw_enable_pv}={text_of(latest, c.fw_enable_pv)!r}: the "
                                               f"FileWriter is disabled, no files were written")
        if not pending.file:
            return pending.end(Outcome.FAILED, f"no value for {c.fw_name_pattern_pv} or {c.sequence_id_pv}")
        got, per_trigger = int_of(latest, c.images_counter_pv), int_of(latest, c.num_images_pv)
        triggers = int_of(latest, c.num_triggers_pv) if c.num_triggers_pv else 1
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
        if live:
            self._start_pending(event.received_s, latest, file=name)
        elif previous is not None:  # not the first value after the bridge started
            self._ended_while_disconnected(event, latest, file=name)

    def classify(self, pending: _Pending, latest: Mapping[str, ValueEvent]) -> ScanEnd:
        return pending.end(Outcome.COMPLETE, f"{self.config.file_name_pv} = {pending.file!r}")


def make_trigger(config: TriggerConfig, debounce_s: float, max_debounce_s: float) -> Trigger:
    from .bluesky import BlueskyTrigger

    kinds: dict[str, type[Trigger]] = {
        "sscan": SscanTrigger, "areadetector": AreaDetectorTrigger, "eiger": EigerTrigger,
        "filename": FileNameTrigger, "bluesky": BlueskyTrigger}
    return kinds[config.kind](config, debounce_s, max_debounce_s)

"""The bridge's one working thread: events -> trigger -> journal -> file check -> submit, with back-off.

Everything here runs on the worker thread (pyepics callbacks only fill the queue). :meth:`BridgeWorker.handle`
and :meth:`BridgeWorker.tick` are the whole logic and can be driven directly in tests without EPICS.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconstruction import InputDataError, ParameterError, Parameters

from . import journal as jr
from .asker import Asker, StateAnswer
from .config import FILE_SOURCES, BridgeConfig, source_series
from .file_metadata import with_file_metadata
from .filecheck import check_scan_files
from .journal import Journal
from .params import CompletedScan, ScanBuildError, ScanInfo, describe_scan, describe_streaming_scan
from .publisher import StatePublisher
from .sender import Sender, SubmitDone
from .state import BridgeState
from .submit import SubmitRejected, SubmitRequest, Submitter, check_submitter
from .trigger import (
    ConnectionEvent,
    Event,
    Outcome,
    PendingEnd,
    PvTracker,
    ScanEnd,
    StartHook,
    ValueEvent,
    as_int,
    make_trigger,
    text_of,
)

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.25  # the loop wakes at least this often (stop requests, state flushes)
CONNECT_WARN_S = 3.0  # a PV not connected for this long is logged as a WARNING (and shown on the dashboard)
PUBLISH_MIN_INTERVAL_S = 0.5  # connection changes reach the dashboard at most this often between heartbeats
LAST_SCAN_NUMBER = "@scan_number"  # the journal's last_values name of the highest scan number seen


@dataclass
class _Task:
    """A journalled scan on its way: waiting for its files, then being submitted."""

    key: str
    # "file" | "submit" | "follow" (a complete scan's accepted streaming job, until it ends) | "watch" (an accepted
    # streaming job while its scan acquires, until it ends or the scan does)
    stage: str
    params: Parameters
    label: str
    scan: dict[str, Any]
    started_s: float
    due_s: float
    backoff_s: float
    stable: int = 0
    signature: tuple[Any, ...] = field(default_factory=tuple)
    last_reason: str = ""
    in_flight: bool = False  # handed to the sender thread, no answer yet
    file_metadata_read: bool = False  # the data file's metadata is in params (read once, before submitting)
    submit_key: str = ""  # the key the web side gets, when not ``key`` (a batch job after a failed streaming job)
    # a streaming job (still being submitted, or followed) whose scan ended complete: the batch job to queue
    # should the web side refuse it or should it fail (journalled with the row: end_json)
    ended: CompletedScan | None = None
    job_id: str = ""  # follow, watch: the streaming job
    streaming: bool = False  # a streaming job (mode STREAM), opened at the scan's start
    restreams: int = 0  # streaming: replacements opened before this one (the key it goes under: jr.restream_key)
    scan_over: bool = False  # streaming, submitting: its scan ended aborted or partial meanwhile (not watched)


class BridgeWorker:
    """Debounces, checks files, builds parameters and submits; keeps the state up to date."""

    def __init__(self, config: BridgeConfig, events: queue.Queue[Event], journal: Journal, submitter: Submitter,
                 state: BridgeState, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.events = events
        self.journal = journal
        self.submitter = submitter
        self.state = state
        self.clock = clock
        check_submitter(submitter, config.stream.enabled)  # a streaming bridge follows its jobs: job_state
        self.tracker = PvTracker()
        self.trigger = make_trigger(config.trigger, config.debounce_s, config.max_debounce_s,
                                    next_scan_pvs=config.data.pvs, on_capture=self._journal_capture)
        self.tasks: dict[str, _Task] = {}
        # scans that started, each described once the start's values settled (debounce_s after the edge)
        # (due, the start event, the values then, the buffer's series of the scan: asked at once, not when due)
        self._starts: list[tuple[float, ValueEvent, dict[str, ValueEvent], int | None]] = []
        if config.stream.enabled:
            hook: StartHook = self._scan_started
            self.trigger.on_start = hook
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_heartbeat_s = 0.0
        self._missed_seen = 0
        self._edge_last_text: str | None = None  # the edge PV's value as the journal has it
        self._last_scan_number: int | None = None
        self._down_since: dict[str, float] = {pv: clock() for pv in config.pvs}
        self._warned_down: set[str] = set()
        self._publish_soon = False  # a connection changed: publish before the next heartbeat
        self.publisher = StatePublisher(getattr(submitter, "publish_state", None))
        self._last_publish_s = -PUBLISH_MIN_INTERVAL_S
        # with the worker thread running, submissions go through a sender thread (driven by hand, e.g. in
        # tests, the worker calls the submitter itself)
        self._sender: Sender | None = None
        self._asker: Asker | None = None  # likewise, job_state questions (streaming jobs followed)
        # with the bridge's buffer of a pva:// source: the number of the series (scan) whose frames arrive now
        # (FrameBuffer.series_now), named in a replacement streaming job's source
        self.buffer_series: Callable[[], int] | None = None
        # likewise, the series a scan that started at time.monotonic() t goes to (FrameBuffer.series_of_scan_started),
        # named in the scan's first streaming job's source
        self.buffer_scan_series: Callable[[float], int] | None = None

    # -- thread -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._sender = Sender(self.submitter, self.events).start()
        job_state = getattr(self.submitter, "job_state", None)
        if callable(job_state):
            self._asker = Asker(job_state, self.events).start()
        self.resume()
        self._down_since = {pv: self.clock() for pv in self.config.pvs}  # "not connected for 3 s" counts from now
        self.publisher.start()
        self._thread = threading.Thread(target=self.run, name="epics-bridge-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._sender is not None:
                self._sender.stop()
                self._sender = None
            if self._asker is not None:
                self._asker.stop()
                self._asker = None
            self.publish_state()  # "stopped" (running false) reaches the dashboard, apart from a crash
        self.publisher.close(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # the bridge keeps running whatever one scan does
                log.exception("bridge worker error")
                self.state.error(f"worker: {type(exc).__name__}: {exc}")
                self._stop.wait(MAX_WAIT_S)
        self.state.heartbeat(running=False)

    def _step(self) -> None:
        now = self.clock()
        wait = max(0.0, min(self._next_wakeup_s() - now, MAX_WAIT_S))
        try:
            event = self.events.get(timeout=wait)
        except queue.Empty:
            pass
        else:
            self.handle(event)
            for _ in range(1000):  # drain a burst before looking at the clock
                try:
                    self.handle(self.events.get_nowait())
                except queue.Empty:
                    break
        self.tick(self.clock())

    def _next_wakeup_s(self) -> float:
        times = [self._next_heartbeat_s]
        if self._publish_soon:
            times.append(self._last_publish_s + PUBLISH_MIN_INTERVAL_S)
        trig = self.trigger.next_deadline_s()
        if trig is not None:
            times.append(trig)
        times.extend(t.due_s for t in self.tasks.values())
        times.extend(due for due, *_ in self._starts)
        return min(times)

    # -- logic ------------------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Pick up where a previous run stopped: the edge PV's and scan number's last values, journalled scans
        not yet accepted (a restart must not lose a submission) and journalled edges not yet classified."""
        now = self.clock()
        edge_pv = self.trigger.edge_pv
        last = self.journal.last(edge_pv)
        if last is not None:  # the replay after start is compared with it: a scan that ended meanwhile shows
            self.tracker.seed(ValueEvent.from_record(edge_pv, last, now))
            self._edge_last_text = str(last["text"])
        number = self.journal.last(LAST_SCAN_NUMBER)
        self._last_scan_number = as_int(number["value"]) if number else None
        for row in self.journal.open_scans():
            stage = "file" if row.status == jr.WAITING_FILE else "submit"
            try:
                params = Parameters.from_json(row.params_json)
            except (ParameterError, ValueError) as exc:  # e.g. written by an older version
                msg = f"cannot read the journalled parameters: {exc}"
                log.error("%s: %s", row.dedup_key, msg)
                self.journal.set_status(row.dedup_key, jr.FAILED, error=msg)
                self.journal.log("resume_failed", msg, row.dedup_key)
                self.state.error(f"{row.dedup_key}: {msg}")
                continue
            scan = dict(beamline=row.beamline, scan_number=row.scan_number, file_pattern=row.file_pattern,
                        dedup_key=row.dedup_key, label=row.label, provenance=_json_dict(row.provenance_json))
            task = self.tasks[row.dedup_key] = self._task(row.dedup_key, stage, params, row.label, scan, now)
            task.file_metadata_read = row.mode == jr.STREAM  # its file is a live one
            if row.mode == jr.BATCH_AFTER_STREAM:
                task.submit_key = row.dedup_key + jr.BATCH_SUFFIX
            if row.mode == jr.STREAM:  # a replacement streaming job goes under key#restream: the same as before
                task.streaming, task.restreams = True, row.restreams
                task.submit_key = jr.restream_key(row.dedup_key, row.restreams) if row.restreams else ""
            if row.mode == jr.STREAM and row.end_json:  # its scan ended complete while it was being submitted
                task.ended = self._journalled_end(row)
            self.journal.log("resumed", f"resumed at stage {stage}", row.dedup_key)
            log.info("resuming %s (%s)", row.dedup_key, row.status)
            self.state.scan_status(row.dedup_key, row.scan_number, "waiting",
                                   "waiting for the data files" if stage == "file" else "submitting")
        for row in self.journal.ended_streams():  # streaming scans that ended complete
            ended = self._journalled_end(row)
            if ended is None:
                continue
            if row.status == jr.FOLLOWING:
                self._follow(ended, row.job_id, now)
                self.journal.log("resumed", f"following streaming job {row.job_id} again", row.dedup_key)
                self.state.scan_status(row.dedup_key, row.scan_number, "queued", f"complete: {ended.reason}; "
                                       f"streaming job {row.job_id} followed until it ends", job_id=row.job_id)
            elif (batch_key := self._to_batch(ended.info, f"its streaming job was refused "
                                                          f"({row.last_error or row.status})")) is not None:
                self._queue_batch(ended.info, ended.reason, ended.ended_at, now, submit_key=batch_key)
        for row in self.journal.watched_streams():  # streaming scans still acquiring (as far as the journal knows)
            self._watch(row.dedup_key, row.scan_number, row.job_id, row.restreams, now,
                        params_json=row.params_json, label=row.label, at_once=True)
            self.journal.log("resumed", f"watching streaming job {row.job_id} again", row.dedup_key)
        for edge in self.journal.open_edges():
            values = {pv: ValueEvent.from_record(pv, rec, now) for pv, rec in edge.values.items()}
            pending = PendingEnd(now, now, now, values, edge.file, edge.after_disconnect, frozen=True,
                                 edge_id=edge.id, edge_timestamp=edge.ioc_timestamp, disconnected=edge.disconnected)
            end = self.trigger.restore(pending)
            log.info("finishing the end of scan journalled at %s (%s edge, IOC time %s): %s", edge.at, edge.edge_pv,
                     edge.ioc_timestamp, end.outcome.value)
            self.journal.log("edge_resumed", f"edge {edge.id} ({edge.edge_pv}) classified after a restart: "
                                             f"{end.outcome.value} ({end.reason})")
            self.on_scan_end(end, now)
        self._publish_pending()

    def _journal_capture(self, pending: PendingEnd) -> None:
        """Journal a scan end the moment it is seen (and each value captured during its debounce): a bridge
        killed inside the debounce finishes it at the next start (:meth:`resume`)."""
        values = {pv: ev.to_record() for pv, ev in pending.values.items()}
        if pending.edge_id is None or pending.after_disconnect:  # after a reconnect the PVs come back one by one
            pending.disconnected = tuple(pv for pv in self.config.pvs if not self.tracker.connected.get(pv, False))
        if pending.edge_id is not None:
            self.journal.update_edge(pending.edge_id, values, pending.disconnected)
            return
        edge_pv = self.trigger.edge_pv
        edge = pending.values.get(edge_pv)
        pending.edge_id = self.journal.add_edge(
            edge_pv, pending.edge_timestamp, values, file=pending.file, after_disconnect=pending.after_disconnect,
            disconnected=pending.disconnected, edge_value=edge.to_record() if edge else None)
        if edge is not None:
            self._edge_last_text = edge.text

    def handle(self, event: Event | SubmitDone | StateAnswer) -> None:
        """One monitor event (or a submission's outcome from the sender thread, a job's state from the asker)."""
        if isinstance(event, SubmitDone):
            task = self.tasks.get(event.key)
            if task is not None and task.in_flight and task.stage in ("file", "submit"):
                task.in_flight = False
                self._submitted(task, event.job_id, event.error, self.clock())
            return
        if isinstance(event, StateAnswer):
            task = self.tasks.get(event.key)
            if (task is not None and task.in_flight and task.stage in ("follow", "watch")
                    and task.job_id == event.job_id):
                task.in_flight = False
                self._answered(task, event.state, event.error, self.clock())
            return
        if isinstance(event, ConnectionEvent):
            self.tracker.update(event)
            self.state.pv_connection(event.pvname, event.connected)
            self._publish_soon = True  # the dashboard shows a PV going down (or back) within a second
            return
        previous, live = self.tracker.update(event)
        self.state.pv_value(event.pvname, event.text, live)
        self.trigger.handle(event, previous, live, self.tracker.latest)
        if event.pvname == self.trigger.edge_pv and event.text != self._edge_last_text:
            self.journal.set_last(event.pvname, event.to_record())  # e.g. BUSY 0 -> 1: a scan is running
            self._edge_last_text = event.text
        if self.trigger.missed_edges != self._missed_seen:
            self.state.count("missed_edges", self.trigger.missed_edges - self._missed_seen)
            self.journal.log("missed_edge", f"{event.pvname}: a scan ended while disconnected; classified from the "
                                            f"values after the reconnect")
            self._missed_seen = self.trigger.missed_edges

    def tick(self, now_s: float) -> None:
        """Open streaming jobs of started scans, classify debounced scan ends, run due file checks and
        submissions, beat the heart."""
        while self._starts and self._starts[0][0] <= now_s:
            _, event, values, series = self._starts.pop(0)
            self.on_scan_start(event, values, now_s, series)
        for end in self.trigger.poll(now_s, self.tracker.latest):
            self.on_scan_end(end, now_s)
        for task in sorted(self.tasks.values(), key=lambda t: t.due_s):
            if task.due_s <= now_s and not self._stop.is_set():
                self._run_task(task, now_s)
        self._check_connections(now_s)
        if now_s >= self._next_heartbeat_s:
            self._next_heartbeat_s = now_s + self.config.heartbeat_s
            self.state.heartbeat()
            self.publish_state()
        elif self._publish_soon and now_s - self._last_publish_s >= PUBLISH_MIN_INTERVAL_S:
            self.state.flush()
            self.publish_state()
        else:
            self.state.flush()

    def _scan_started(self, event: ValueEvent, values: Mapping[str, ValueEvent]) -> None:
        """The trigger saw a scan start: describe it once the values set with the start arrived (the debounce)."""
        self._starts.append((event.received_s + self.config.debounce_s, event, dict(values), self._scan_series(event)))

    def _scan_series(self, event: ValueEvent) -> int | None:
        """The bridge buffer's series of the scan that started with ``event`` (None: no buffer running), asked as
        the start is seen: the scan's frames (posted from BUSY on) go to it (docs/streaming.md, "Exactly once" 1)."""
        if self.buffer_scan_series is None or not (self.config.stream.enabled and self.config.stream.buffered):
            return None
        return self.buffer_scan_series(event.received_s)

    def on_scan_start(self, event: ValueEvent, values: dict[str, ValueEvent], now_s: float,
                      series: int | None = None) -> None:
        """Open the streaming job of a scan that started (``[stream] enabled``): journalled under the key the
        completion would use (mode ``stream``), so the completion queues nothing more; a scan whose streaming
        job cannot be opened is left to the completion trigger (docs/streaming.md, "Exactly once"). ``series``: the
        bridge buffer's series of the scan (:meth:`_scan_series`), named in the job's source."""
        latest = {**self.tracker.latest, **values}
        scan_no = text_of(latest, self.config.data.scan_number_pv)
        start = ScanEnd(Outcome.COMPLETE, "scan started", event.received_s, values=latest,
                        edge_timestamp=event.timestamp,
                        disconnected=tuple(pv for pv in self.config.pvs if not self.tracker.connected.get(pv, False)))
        # the start's IOC time stamp (else when the bridge saw it): binds a job without the buffer to its scan
        started_s = event.timestamp or time.time() - max(0.0, self.clock() - event.received_s)
        try:
            info, why = describe_streaming_scan(self.config, latest, start, series, started_s), ""
        except ScanBuildError as exc:
            info, why = None, str(exc)
        if info is None or info.held:
            why = why or "; ".join(info.held if info else ())
            msg = f"scan {scan_no or '?'} started; no streaming job ({why}): its end decides what is queued"
            log.warning(msg)
            self.journal.log("stream_not_opened", msg, info.dedup_key if info else "")
            return
        added = self.journal.add_scan(info.dedup_key, info.beamline, info.scan_number, info.file_pattern,
                                      info.label, info.params.to_json(), status=jr.SUBMITTING,
                                      provenance_json=json.dumps(dict(info.provenance), default=str),
                                      mode=jr.STREAM)
        if not added:
            log.info("scan %s started, already journalled (%s): no streaming job", info.scan_number, info.dedup_key)
            self.journal.log("duplicate", "scan start already in the journal; not opened again", info.dedup_key)
            return
        live = info.params.data
        where = live.file_pattern if live.live_source == "swmr" else live.live_source
        self.journal.log("stream_start", f"scan started ({event.pvname}); streaming job from {where}",
                         info.dedup_key)
        log.info("scan %s started: opening its streaming job (%s)", info.scan_number, where)
        self.state.count("streamed")
        started = f"streaming from the start: {where}"
        task = self._task(info.dedup_key, "submit", info.params, info.label, dict(info.to_dict(), complete=started),
                          now_s)
        task.file_metadata_read = True  # nothing to read: the file is being written (template and PVs only)
        task.streaming = True
        self.tasks[info.dedup_key] = task
        self.state.scan_status(info.dedup_key, info.scan_number, "waiting", f"{started}; submitting")
        self._publish_pending()

    def _covered_by_stream(self, info: ScanInfo, end: ScanEnd, row: jr.ScanRow, when: str,
                           now_s: float) -> str | None:
        """At the end of a complete scan journalled as streaming (``row``): None when its streaming job covers it
        for now (accepted, or still being submitted: one job either way, under the one dedup key); else the key
        the batch job goes under ("": the scan's own) when the streaming job never started (refused) or failed
        while the scan acquired and was not replaced (``stream_failed``): the row now is the batch scan to queue.
        An accepted job is followed until it ends (:meth:`_answered`: failed, the batch job is queued then)."""
        why = (f"its streaming job failed while the scan acquired ({row.last_error})" if row.status == jr.STREAM_FAILED
               else f"its streaming job did not start ({row.last_error or row.status})")
        batch_key = self._to_batch(info, why)
        if batch_key is not None:
            return batch_key
        job = f"job {row.job_id}" if row.job_id else "its streaming job (being submitted)"
        log.info("scan %s ended: reconstructed by %s; no batch job", info.scan_number, job)
        ended = CompletedScan(info, f"{end.reason}{when}", end.edge_timestamp or None)
        pending = self.tasks.get(info.dedup_key)
        if row.status == jr.SUBMITTING and pending is not None and pending.stage == "submit":
            # decided by the web side's answer (_submitted), after a restart too
            self.journal.note_end(info.dedup_key, ended.to_json())
            pending.ended = ended
            return None
        if row.status == jr.FOLLOWING:  # this end seen again (e.g. classified again after a restart)
            if pending is None and (kept := self._journalled_end(row)) is not None:
                self._follow(kept, row.job_id, now_s)
            return None
        if (row.status in (jr.SUBMITTED, jr.WATCHING) and row.job_id and self._can_follow()
                and self.journal.follow(info.dedup_key, ended.to_json())):
            self._follow(ended, row.job_id, now_s, note=True)  # replaces the task that watched it
            return None
        self.journal.log("covered_by_stream", f"{end.reason}; reconstructed by {job}", info.dedup_key)
        return None

    def _to_batch(self, info: ScanInfo, why: str, job_id: str = "") -> str | None:
        """Turn the streaming scan ``info`` into the batch scan to queue (:meth:`Journal.stream_to_batch`: refused
        by the web side, or failed while the scan acquired and not replaced; with ``job_id``: that accepted
        streaming job failed after the end), journalling ``why`` (event ``stream_failed_batch``). The key the batch
        job goes under: "" (the scan's own: the web side never took a job under it) or ``key#batch`` (it did);
        None (nothing changed) when it is not such a scan, so at most once."""
        mode = self.journal.stream_to_batch(info.dedup_key, info.file_pattern, info.params.to_json(),
                                            jr.HELD if info.held else jr.WAITING_FILE,
                                            json.dumps(dict(info.provenance), default=str), accepted=bool(job_id))
        if not mode:
            return None
        batch_key = info.dedup_key + jr.BATCH_SUFFIX if mode == jr.BATCH_AFTER_STREAM else ""
        msg = f"{why}: queueing the batch job" + (f" ({batch_key})" if batch_key else "")
        log.warning("scan %s: %s", info.scan_number, msg)
        self.journal.log("stream_failed_batch", msg, info.dedup_key)
        return batch_key

    def _can_follow(self) -> bool:
        """Whether the submitter tells a job's state (``job_state``: required with ``[stream] enabled``,
        :func:`~epics_bridge.submit.check_submitter`); without it (a batch-only bridge finishing streaming rows an
        earlier configuration journalled) an accepted streaming job covers its scan whatever becomes of it."""
        return getattr(self.submitter, "job_state", None) is not None

    def _watch(self, key: str, scan_number: str, job_id: str, restreams: int, now_s: float, *,
               params_json: str = "", label: str = "", scan: dict[str, Any] | None = None,
               params: Parameters | None = None, at_once: bool = False) -> None:
        """Watch the accepted streaming job ``job_id`` of the scan ``key`` while the scan acquires (a task, asked
        with the ``[file_check]`` back-off, :meth:`_answered`): failed, it is replaced or reported at once."""
        if params is None:
            try:
                params = Parameters.from_json(params_json)
            except (ParameterError, ValueError):  # e.g. written by an older version: its source from [stream]
                params = self.config.template.replace({"data.live_source": self.config.stream.job_source})
        task = self._task(key, "watch", params, label, dict(scan or dict(scan_number=scan_number, dedup_key=key,
                                                                          label=label)), now_s)
        task.job_id, task.streaming, task.restreams = job_id, True, restreams
        task.backoff_s = self.config.file_check.initial_backoff_s
        if not at_once:  # just accepted: it has hardly started
            task.due_s = now_s + task.backoff_s
        self.tasks[key] = task
        self._publish_pending()

    def _follow(self, ended: CompletedScan, job_id: str, now_s: float, note: bool = False) -> None:
        """Follow the accepted streaming job ``job_id`` of the scan ``ended`` (a task, asked with back-off);
        ``note``: journal that the end queued nothing for now (event ``covered_by_stream``)."""
        info = ended.info
        if note:
            self.journal.log("covered_by_stream", f"{ended.reason}; reconstructed by job {job_id}, followed until "
                             "it ends (failed, or done with a partial result: the batch job is queued)",
                             info.dedup_key)
        task = self._task(info.dedup_key, "follow", info.params, info.label,
                          dict(info.to_dict(), complete=f"complete: {ended.reason}"), now_s)
        task.job_id, task.ended, task.backoff_s = job_id, ended, self.config.file_check.initial_backoff_s
        task.streaming = True
        self.tasks[info.dedup_key] = task
        self._publish_pending()

    def _journalled_end(self, row: jr.ScanRow) -> CompletedScan | None:
        """The scan end kept with ``row``; None (journalled and shown) when it cannot be read."""
        try:
            return CompletedScan.from_json(row.end_json)
        except ScanBuildError as exc:
            log.error("%s: %s", row.dedup_key, exc)
            self.journal.log("resume_failed", str(exc), row.dedup_key)
            self.state.error(f"{row.dedup_key}: {exc}")
            return None

    def on_scan_end(self, end: ScanEnd, now_s: float) -> None:
        """A classified end of scan: report it, check the scan-number sequence, and queue it when complete."""
        latest = end.values or self.tracker.latest  # the values at the edge describe the scan that ended
        scan_no = text_of(latest, self.config.data.scan_number_pv)
        self._note_scan_number(scan_no)
        when = " (ended while the bridge was disconnected)" if end.after_disconnect else ""
        edge_ref = f"edge:{end.edge_id}" if end.edge_id is not None else f"edge:{scan_no}:{end.ended_s}"
        if end.outcome is not Outcome.COMPLETE:
            msg = f"scan {scan_no or '?'} not queued: {end.outcome.value} ({end.reason}){when}"
            log.info(msg)
            self.journal.log(end.outcome.value, msg)
            self._finish_edge(end, end.outcome.value, end.reason, scan_no)
            self.state.count("ignored")
            self.state.set("last_scan_ignored", dict(scan_number=scan_no, outcome=end.outcome.value,
                                                     reason=end.reason, at=time.time(),
                                                     after_disconnect=end.after_disconnect))
            self.state.scan_status(edge_ref, scan_no, "not_queued", f"{end.outcome.value}: {end.reason}{when}",
                                   ended_at=end.edge_timestamp or None)
            self._acquisition_over(latest, end)
            return
        try:
            info = describe_scan(self.config, latest, end)
        except ScanBuildError as exc:
            msg = f"scan {scan_no or '?'} complete but not queued: {exc}"
            log.error(msg)
            self.journal.log("build_error", msg)
            self._finish_edge(end, "build_error", str(exc), scan_no)
            self.state.error(msg)
            self.state.scan_status(edge_ref, scan_no, "failed", str(exc), ended_at=end.edge_timestamp or None)
            return
        status = jr.HELD if info.held else jr.WAITING_FILE
        added = self.journal.add_scan(info.dedup_key, info.beamline, info.scan_number, info.file_pattern,
                                      info.label, info.params.to_json(), status=status,
                                      error="; ".join(info.held),
                                      provenance_json=json.dumps(dict(info.provenance), default=str))
        row = None if added else self.journal.get(info.dedup_key)
        covered, batch_key = False, ""
        if row is not None and row.mode == jr.STREAM:
            found = self._covered_by_stream(info, end, row, when, now_s)
            covered, batch_key = found is None, found or ""
            added = not covered  # its streaming job did not cover it: the row is now this batch scan
        # after the row changed: a bridge killed before this classifies the edge again at its start
        self._finish_edge(end, end.outcome.value, end.reason, info.scan_number, info.dedup_key)
        if covered and row is not None:
            self.state.scan_status(info.dedup_key, info.scan_number, "queued" if row.job_id else "waiting",
                                   f"complete: {end.reason}; reconstructed while it acquired by "
                                   f"{'job ' + row.job_id if row.job_id else 'its streaming job'}",
                                   job_id=row.job_id, ended_at=end.edge_timestamp or None)
            return
        if not added:
            log.info("scan %s already handled (%s): not queued again", info.scan_number, info.dedup_key)
            self.journal.log("duplicate", "already in the journal; not queued again", info.dedup_key)
            self.state.count("duplicates")
            return
        self._queue_batch(info, f"{end.reason}{when}", end.edge_timestamp or None, now_s, submit_key=batch_key)

    def _acquisition_over(self, latest: Mapping[str, ValueEvent], end: ScanEnd) -> None:
        """A scan ended aborted or partial: its streaming job (watched, or a replacement still being submitted)
        keeps what it has; it is no longer replaced should it fail (an aborted or partial end queues nothing,
        docs/streaming.md "Exactly once" 6)."""
        if not self.config.stream.enabled:
            return
        try:
            key = describe_scan(self.config, latest, end).dedup_key
        except ScanBuildError:
            return
        task = self.tasks.get(key)
        if task is not None and task.stage == "submit" and task.streaming:
            task.scan_over = True
        elif task is not None and task.stage == "watch":
            del self.tasks[key]
            self._publish_pending()
        if self.journal.unwatch(key):
            self.journal.log("stream_scan_over", f"{end.outcome.value} ({end.reason}): its streaming job is no "
                                                 "longer watched nor replaced", key)

    def _queue_batch(self, info: ScanInfo, reason: str, ended_at: float | None, now_s: float,
                     submit_key: str = "") -> None:
        """A complete scan journalled as a batch scan (``reason``: why complete; ``ended_at``: the end's IOC
        time; ``submit_key``: the key the web side gets, when not the scan's): hold it, or wait for its files
        and submit it."""
        if info.held:
            msg = f"scan {info.scan_number} held, not queued: {'; '.join(info.held)}"
            log.warning(msg)
            self.journal.log("held", msg, info.dedup_key)
            self.state.count("held")
            self.state.error(msg)
            self.state.scan_status(info.dedup_key, info.scan_number, "held", "; ".join(info.held),
                                   ended_at=ended_at)
            return
        self.journal.log("complete", f"{reason}; warnings: {info.warnings or 'none'}", info.dedup_key)
        stage = "file" if self.config.file_check.enabled else "submit"
        if stage == "submit":
            self.journal.set_status(info.dedup_key, jr.SUBMITTING)
        complete = f"complete: {reason}"  # what the dashboard says of it, queued or waiting
        task = self.tasks[info.dedup_key] = self._task(info.dedup_key, stage, info.params, info.label,
                                                       dict(info.to_dict(), complete=complete), now_s)
        task.submit_key = submit_key
        self.state.scan_status(info.dedup_key, info.scan_number, "waiting",
                               f"{complete}; " + ("waiting for the data files" if stage == "file" else "submitting"),
                               ended_at=ended_at)
        self._publish_pending()

    def _finish_edge(self, end: ScanEnd, outcome: str, reason: str, scan_number: str, key: str = "") -> None:
        if end.edge_id is not None:
            self.journal.finish_edge(end.edge_id, outcome, reason, scan_number, key)

    def _note_scan_number(self, text: str) -> None:
        """Report a jump in scan numbers (scans that ended unseen: the bridge was down, or ends came too fast)."""
        n = as_int(text) if text else None
        if n is None:
            return
        last = self._last_scan_number
        if last is not None and n > last + 1:
            first, final = last + 1, n - 1
            missing = f"{first}" if first == final else f"{first}-{final}"
            msg = f"scan number gap: scan {n} follows scan {last}; scan(s) {missing} were not seen by the bridge"
            log.warning(msg)
            self.journal.log("gap", msg)
            self.state.gap(first, final, msg)
        if last is None or n > last:
            self._last_scan_number = n
            self.journal.set_last(LAST_SCAN_NUMBER, dict(text=str(n), value=n, timestamp=0.0))

    def _check_connections(self, now_s: float) -> None:
        """One log WARNING (once per outage) naming every PV not connected for ``CONNECT_WARN_S``, trigger PVs
        first; a misspelled PV never connects and an unreachable IOC connects none, so neither stays silent. The
        state is published at once (the dashboard turns red without waiting for the next heartbeat)."""
        overdue = []
        for pv in self.config.pvs:
            if self.tracker.connected.get(pv, False):
                self._down_since.pop(pv, None)
                self._warned_down.discard(pv)
                continue
            since = self._down_since.setdefault(pv, now_s)
            if pv not in self._warned_down and now_s - since >= CONNECT_WARN_S:
                overdue.append(pv)
        if not overdue:
            return
        self._warned_down.update(overdue)
        down = [pv for pv in self.config.pvs if not self.tracker.connected.get(pv, False)]
        msg = describe_down(down, overdue, self.config.pv_roles, len(self.config.pvs),
                            CONNECT_WARN_S)
        log.warning(msg)
        self.state.error(msg)
        self._publish_soon = True

    # -- tasks ------------------------------------------------------------------------------------------------
    def _task(self, key: str, stage: str, params: Parameters, label: str, scan: dict[str, Any],
              now_s: float) -> _Task:
        first = self.config.file_check.initial_backoff_s if stage == "file" else self.config.submit.initial_backoff_s
        return _Task(key, stage, params, label, scan, started_s=now_s, due_s=now_s, backoff_s=first)

    def _run_task(self, task: _Task, now_s: float) -> None:
        if task.stage == "file":
            self._check_files(task, now_s)
        elif task.stage in ("follow", "watch"):
            self._ask(task, now_s)
        else:
            self._submit(task, now_s)

    def _ask(self, task: _Task, now_s: float) -> None:
        """Ask the web side for a followed or watched streaming job's state (``job_state``): on the asker thread
        when the worker runs (the answer comes back as a :class:`StateAnswer`), else here."""
        if task.in_flight:
            return
        if self._asker is not None:
            task.in_flight, task.due_s = True, math.inf
            self._asker.ask(task.key, task.job_id)
            return
        ask = getattr(self.submitter, "job_state", None)
        try:
            state, error = (ask(task.job_id) if ask is not None else None), None
        except Exception as exc:
            state, error = None, exc
        self._answered(task, state, error, now_s)

    def _answered(self, task: _Task, state: dict[str, Any] | None, error: BaseException | None,
                  now_s: float) -> None:
        """What the web side said of a streaming job, asked with back-off (``[file_check] initial_backoff_s`` ..
        ``max_backoff_s``) until it reached a final state. After the scan's complete end (``follow``): done or
        cancelled (or gone from the web side), it covers the scan; failed (before any frame, or after: its
        source broke, its worker was lost), the batch job is queued now under ``key#batch`` (one conditional
        UPDATE: at most once). While the scan acquires (``watch``): failed, it is reported at once and replaced
        (:meth:`_failed_while_acquiring`). Done with a partial result (:func:`partial_result`: frames missed or
        dropped, a stall) counts as failed: the scan's data are complete, so its reconstruction must be too.
        Queued, running or finishing (or no answer): asked again later."""
        if error is not None:  # the web side is not there now: ask again later
            log.info("%s: cannot ask for streaming job %s (%s); asking again", task.key, task.job_id, error)
            state = {"status": "unknown"}
        status = str((state or {}).get("status") or "")
        live = (state or {}).get("live") or {}
        frames = int(live.get("frames_received") or 0)
        message = str((state or {}).get("message") or "")[:300]
        if status == "done" and (short := partial_result(live, task.stage == "follow")):
            if task.stage == "watch":  # a replacement would read the same frames: the complete end decides
                self._failed_while_acquiring(task, frames, short, now_s, restream=False)
                return
            status, message = "failed", short  # replaced as a failed job is: the scan's data are all there
        if state is None or status in ("done", "cancelled"):
            what = f"ended {status} after {frames} frames" if state is not None else "not known to the web side"
            self.journal.covered(task.key)
            self.journal.log("stream_ended", f"streaming job {task.job_id} {what}" + (
                " while its scan acquired" if task.stage == "watch" else ": it covers the scan"), task.key)
            del self.tasks[task.key]
            self._publish_pending()
            return
        if status == "failed" and task.stage == "watch":
            self._failed_while_acquiring(task, frames, message, now_s)
            return
        if status == "failed":
            ended = task.ended
            assert ended is not None
            del self.tasks[task.key]
            why = (f"streaming job {task.job_id} failed {f'after {frames} frames' if frames else 'before any frame'}"
                   f"{f' ({message})' if message else ''}")
            if (batch_key := self._to_batch(ended.info, why, task.job_id)) is not None:
                self._queue_batch(ended.info, ended.reason, ended.ended_at, now_s, submit_key=batch_key)
            self._publish_pending()
            return
        task.due_s = now_s + task.backoff_s
        task.backoff_s = min(task.backoff_s * 2, self.config.file_check.max_backoff_s)

    def _failed_while_acquiring(self, task: _Task, frames: int, message: str, now_s: float,
                                restream: bool = True) -> None:
        """A watched streaming job failed while its scan acquires: journal (``stream_failed_during_scan``), log,
        count and show it at once; for a file source with a replacement left (``[stream] restream_attempts``)
        open the replacement streaming job now under ``key#restream`` (one conditional UPDATE of the journal row
        first, so one replacement, which a restarted bridge resumes under the same key); otherwise the scan's
        complete end queues the batch job (``key#batch``). ``restream`` False: the job ended done with a partial
        result (a stall), which a replacement reading the same file would repeat: only the complete end decides."""
        scan_no = str(task.scan.get("scan_number", ""))
        why = (f"streaming job {task.job_id} failed while scan {scan_no or '?'} acquired, "
               f"{f'after {frames} frames' if frames else 'before any frame'}{f' ({message})' if message else ''}"
               if restream else
               f"streaming job {task.job_id} ended while scan {scan_no or '?'} acquired, but {message}")
        del self.tasks[task.key]
        self.state.count("stream_failures")
        self._publish_soon = True  # the dashboard says so within PUBLISH_MIN_INTERVAL_S
        file_source = task.params.data.live_source in FILE_SOURCES
        # over pvAccess: the bridge's buffer keeps the scan's first buffer_mib for the replacement (beyond it the
        # replacement fails naming the bound, and the end queues the batch job)
        series = self.buffer_series() if self.buffer_series is not None else None
        if series is not None and (own := source_series(task.params.data.live_source)) is not None:
            series = own  # the first job's (it may have failed before its scan's first frame reached the bridge)
        held = not file_source and self.config.stream.keeps_for_replacement and series is not None
        attempts = self.config.stream.restream_attempts if (file_source or held) and restream else 0
        params = task.params
        if held:  # it takes frames of this scan only: a scan that began after this one ended is refused
            params = params.replace({"data.live_source": self.config.stream.series_source(series)})
        n = self.journal.restream(task.key, attempts, why, params.to_json() if held else None)
        if n:
            key = jr.restream_key(task.key, n)
            how = ("it reads the file from its first frame" if file_source else
                   "it gets the frames before its own from the bridge's buffer")
            msg = f"{why}: replacement streaming job {key} opened ({how})"
            log.warning(msg)
            self.journal.log("stream_failed_during_scan", msg, task.key)
            self.state.error(msg)
            self.state.count("restreams")
            new = self._task(task.key, "submit", params, task.label, dict(task.scan, complete=msg), now_s)
            new.file_metadata_read, new.streaming, new.restreams, new.submit_key = True, True, n, key
            self.tasks[task.key] = new
            self.state.scan_status(task.key, scan_no, "waiting", f"{msg}; submitting")
            self._submit(new, now_s)
        elif self.journal.stream_failed(task.key, why):
            left = ("its frames went past (a pvAccess source): not replaced" if not (file_source or held) else
                    "a replacement would read the same frames: not replaced" if not restream else
                    f"no replacement left ([stream] restream_attempts = {self.config.stream.restream_attempts})")
            msg = f"{why}; {left}: the scan's complete end queues the batch job ({task.key}{jr.BATCH_SUFFIX})"
            log.warning(msg)
            self.journal.log("stream_failed_during_scan", msg, task.key)
            self.state.error(msg)
            self.state.scan_status(task.key, scan_no, "waiting", msg, job_id=task.job_id)
        self._publish_pending()

    def _check_files(self, task: _Task, now_s: float) -> None:
        fc = self.config.file_check
        status = check_scan_files(task.params, fc.temp_suffix)
        if status.complete:
            task.stable = task.stable + 1 if status.signature == task.signature else 1
            task.signature = status.signature
            # with the temp-suffix convention the final name appearing means the writer closed the file: one
            # complete look is proof; otherwise wait until size and mtime stay the same for stable_checks looks
            if task.stable >= (1 if fc.temp_suffix else fc.stable_checks):
                log.info("%s: data complete (%s)", task.key, status.reason)
                self.journal.set_status(task.key, jr.SUBMITTING)
                self.journal.log("file_complete", status.reason, task.key)
                task.stage, task.due_s, task.backoff_s = "submit", now_s, self.config.submit.initial_backoff_s
                self._submit(task, now_s)
                return
            task.due_s = now_s + fc.initial_backoff_s
            return
        task.stable, task.signature = 0, ()
        if status.reason != task.last_reason:
            log.info("%s: waiting for data: %s", task.key, status.reason)
            task.last_reason = status.reason
            self.state.scan_status(task.key, str(task.scan.get("scan_number", "")), "waiting", "; ".join(
                x for x in (str(task.scan.get("complete") or ""), f"waiting for data: {status.reason}") if x))
        if status.permanent or now_s - task.started_s > fc.timeout_s:
            msg = (f"data can never be complete: {status.reason}" if status.permanent else
                   f"data not complete after {fc.timeout_s:g} s: {status.reason}")
            self._file_failed(task, msg)
            return
        task.due_s = now_s + task.backoff_s
        task.backoff_s = min(task.backoff_s * 2, fc.max_backoff_s)

    def _file_failed(self, task: _Task, msg: str) -> None:
        """The scan's data can never be used: journal, count and show why, and drop the task."""
        log.error("%s: %s", task.key, msg)
        self.journal.set_status(task.key, jr.FAILED, error=msg)
        self.journal.log("file_failed", msg, task.key)
        self.state.count("file_failures")
        self.state.error(f"{task.key}: {msg}")
        self.state.scan_status(task.key, str(task.scan.get("scan_number", "")), "failed", msg)
        del self.tasks[task.key]
        self._publish_pending()

    def _read_file_metadata(self, task: _Task) -> bool:
        """Fill the parameters the configuration does not give from the complete data file
        (:mod:`epics_bridge.file_metadata`); False when the file's metadata is unusable (the scan fails: its
        reason names the file and dataset). Only with the file check on: without it the files may not exist."""
        if task.file_metadata_read or not self.config.file_check.enabled:
            return True
        try:
            found = with_file_metadata(task.params, self.config.user_given)
        except InputDataError as exc:
            self._file_failed(task, f"the data file's metadata cannot be used: {exc}")
            return False
        task.params, task.file_metadata_read = found.params, True
        if found.provenance:
            task.scan["provenance"] = {**dict(task.scan.get("provenance") or {}), **found.provenance}
        # the row keeps what is submitted (a restarted bridge resubmits these, the same request)
        self.journal.set_params(task.key, task.params.to_json(),
                                json.dumps(dict(task.scan.get("provenance") or {}), default=str))
        log.info("%s: %s", task.key, found.summary)
        self.journal.log("file_metadata", found.summary, task.key)
        return True

    def _submit(self, task: _Task, now_s: float) -> None:
        if task.in_flight:
            return
        if not self._read_file_metadata(task):
            return
        request = SubmitRequest(task.params, task.submit_key or task.key, task.label, scan=task.scan,
                                provenance=dict(task.scan.get("provenance") or {}))
        if self._sender is not None:  # the answer comes back as a SubmitDone event
            task.in_flight, task.due_s = True, math.inf
            self._sender.submit(task.key, request)
            return
        try:
            job_id, error = self.submitter.submit(request), None
        except Exception as exc:
            job_id, error = "", exc
        self._submitted(task, job_id, error, now_s)

    def _submitted(self, task: _Task, job_id: str, error: BaseException | None, now_s: float) -> None:
        """What the web side answered: queued (journal the job id), refused for good, or not now (back off)."""
        if isinstance(error, SubmitRejected):
            msg = f"rejected by the web app: {error}"
            log.error("%s: %s", task.key, msg)
            self.journal.set_status(task.key, jr.REJECTED, error=msg, count_attempt=True)
            self.journal.log("rejected", msg, task.key)
            self.state.error(f"{task.key}: {msg}")
            self.state.scan_status(task.key, str(task.scan.get("scan_number", "")), "failed", msg)
            del self.tasks[task.key]
            ended = task.ended
            if ended is not None and (batch_key := self._to_batch(ended.info, f"its streaming job was refused "
                                                                              f"({msg})")) is not None:
                self._queue_batch(ended.info, ended.reason, ended.ended_at, now_s,
                                  submit_key=batch_key)  # its scan ended meanwhile
            self._publish_pending()
            return
        if error is not None:
            msg = f"{type(error).__name__}: {error}"
            log.warning("%s: submission failed (%s); retrying in %.1f s", task.submit_key or task.key, msg,
                        task.backoff_s)
            self.journal.set_status(task.key, jr.SUBMITTING, error=msg, count_attempt=True)
            self.state.count("submit_failures")
            self.state.error(f"{task.key}: submission failed: {msg}")
            self.state.scan_status(task.key, str(task.scan.get("scan_number", "")), "waiting",
                                   f"submission failed, retrying: {msg}")
            task.due_s = now_s + task.backoff_s
            task.backoff_s = min(task.backoff_s * 2, self.config.submit.max_backoff_s)
            return
        log.info("%s: queued as job %s", task.submit_key or task.key, job_id)
        # a streaming job whose scan ended while it was being submitted is followed from now on (one UPDATE: its
        # end is journalled with the row since the end came); one whose scan still acquires is watched
        follow = task.ended is not None and self._can_follow()
        watch = task.streaming and task.ended is None and not task.scan_over and self._can_follow()
        self.journal.set_status(task.key, jr.FOLLOWING if follow else jr.WATCHING if watch else jr.SUBMITTED,
                                job_id=job_id, count_attempt=True)
        self.journal.log("submitted", f"job {job_id}" + (f" ({task.submit_key})" if task.submit_key else ""),
                         task.key)
        self.state.scan_queued(dict(task.scan, job_id=job_id, submit_key=task.submit_key or task.key,
                                    parameters=task.params.to_cmdstr()))
        self.state.scan_status(task.key, str(task.scan.get("scan_number", "")), "queued",
                               str(task.scan.get("complete") or f"job {job_id}"), job_id=job_id)
        del self.tasks[task.key]
        if task.ended is not None and follow:  # its scan ended while it was being submitted
            self._follow(task.ended, job_id, now_s, note=True)
        elif watch:
            self._watch(task.key, str(task.scan.get("scan_number", "")), job_id, task.restreams, now_s,
                        label=task.label, scan=task.scan, params=task.params)
        elif task.ended is not None:
            self.journal.log("covered_by_stream", f"{task.ended.reason}; reconstructed by job {job_id}", task.key)
        self._publish_pending()
        # reported within PUBLISH_MIN_INTERVAL_S, not at once: over HTTP a report per scan slowed back-to-back
        # scans (one more round trip to a busy server each)
        self._publish_soon = True

    def publish_state(self) -> None:
        """Hand the state to the submitter's ``publish_state`` (the web dashboard), when it has one, through the
        publisher thread (:mod:`epics_bridge.publisher`): a slow web side never holds up this loop. Best effort:
        the next heartbeat tries again."""
        self._publish_soon, self._last_publish_s = False, self.clock()
        self.publisher.publish = getattr(self.submitter, "publish_state", None)
        self.publisher.offer(self.state.snapshot())

    def _publish_pending(self) -> None:
        self.state.set("pending", [dict(key=t.key, stage=t.stage) for t in self.tasks.values()])


def partial_result(live: dict[str, Any], scan_complete: bool) -> str:
    """Why a streaming job that ended *done* still does not cover its scan ('' when it does): its result is
    partial (frames it never received or dropped, a stream that stalled) while the scan was, or still is, being
    acquired in full. A partial result of a scan that was aborted (the source said so, while the bridge has seen
    no complete end) covers it: an aborted scan keeps its partial result and queues nothing more. ``live``: the
    job's ``Job.live`` (``partial``, ``outcome``, ``frames_received``, ``frames_planned``, ``frames_dropped``)."""
    if not live.get("partial") or (live.get("outcome") == "aborted" and not scan_complete):
        return ""
    dropped = int(live.get("frames_dropped") or 0)
    return (f"its result is partial (stream {live.get('outcome') or '?'} after {int(live.get('frames_received') or 0)}"
            f" of {live.get('frames_planned', '?')} frames{f', {dropped} dropped' if dropped else ''})")


def _json_dict(text: str) -> dict[str, Any]:
    """A JSON object from the journal; {} when it is not one (written by another version)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def describe_down(down: list[str], new: list[str], roles: dict[str, str], total: int, after_s: float) -> str:
    """The WARNING for PVs that did not connect: every PV now down (``down``, trigger PVs first, by role), which
    of them are newly overdue (``new``), and what it means (no PV at all: the IOC is unreachable; a trigger PV:
    no scan end can be seen)."""
    by_role: dict[str, list[str]] = {}
    for pv in down:
        by_role.setdefault(roles.get(pv) or "metadata", []).append(pv)
    order = ["trigger", "data", "metadata", *sorted(set(by_role) - {"trigger", "data", "metadata"})]
    names = "; ".join(f"{role} {', '.join(by_role[role])}" for role in order if role in by_role)
    if len(down) == total:
        head = (f"none of {total} PVs connected after {after_s:.0f} s (IOC unreachable? check EPICS_CA_ADDR_LIST / "
                f"EPICS_PVA_ADDR_LIST, the ports and the IOC)")
    else:
        head = f"{len(down)} of {total} PVs not connected after {after_s:.0f} s (misspelled, or its IOC is down)"
    blind = ": no scan end can be seen" if "trigger" in by_role else ""
    newly = "" if sorted(new) == sorted(down) else f" [newly: {', '.join(new)}]"
    return f"{head}{blind}: {names}{newly}"

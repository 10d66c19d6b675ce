"""The bridge's one working thread: events -> trigger -> journal -> file check -> submit, with back-off.

Everything here runs on the worker thread (pyepics callbacks only fill the queue). :meth:`BridgeWorker.handle`
and :meth:`BridgeWorker.tick` are the whole logic and can be driven directly in tests without EPICS.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconstruction import ParameterError, Parameters

from . import journal as jr
from .config import BridgeConfig
from .filecheck import check_scan_files
from .journal import Journal
from .params import ScanBuildError, describe_scan
from .state import BridgeState
from .submit import SubmitRejected, SubmitRequest, Submitter
from .trigger import ConnectionEvent, Event, Outcome, PvTracker, ScanEnd, make_trigger, text_of

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.25  # the loop wakes at least this often (stop requests, state flushes)


@dataclass
class _Task:
    """A journalled scan on its way: waiting for its files, then being submitted."""

    key: str
    stage: str  # "file" | "submit"
    params: Parameters
    label: str
    scan: dict[str, Any]
    started_s: float
    due_s: float
    backoff_s: float
    stable: int = 0
    signature: tuple[Any, ...] = field(default_factory=tuple)
    last_reason: str = ""


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
        self.tracker = PvTracker()
        self.trigger = make_trigger(config.trigger, config.debounce_s, config.max_debounce_s)
        self.tasks: dict[str, _Task] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_heartbeat_s = 0.0
        self._missed_seen = 0

    # -- thread -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.resume()
        self._thread = threading.Thread(target=self.run, name="epics-bridge-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

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
        trig = self.trigger.next_deadline_s()
        if trig is not None:
            times.append(trig)
        times.extend(t.due_s for t in self.tasks.values())
        return min(times)

    # -- logic ------------------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Pick up journalled scans not yet accepted (a restart must not lose a submission)."""
        now = self.clock()
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
                        dedup_key=row.dedup_key, label=row.label)
            self.tasks[row.dedup_key] = self._task(row.dedup_key, stage, params, row.label, scan, now)
            self.journal.log("resumed", f"resumed at stage {stage}", row.dedup_key)
            log.info("resuming %s (%s)", row.dedup_key, row.status)
        self._publish_pending()

    def handle(self, event: Event) -> None:
        """One monitor event."""
        if isinstance(event, ConnectionEvent):
            self.tracker.update(event)
            self.state.pv_connection(event.pvname, event.connected)
            return
        previous, live = self.tracker.update(event)
        self.state.pv_value(event.pvname, event.text, live)
        self.trigger.handle(event, previous, live, self.tracker.latest)
        if self.trigger.missed_edges != self._missed_seen:
            self.state.count("missed_edges", self.trigger.missed_edges - self._missed_seen)
            self.journal.log("missed_edge", f"{event.pvname}: a scan ended while disconnected; classified from the "
                                            f"values after the reconnect")
            self._missed_seen = self.trigger.missed_edges

    def tick(self, now_s: float) -> None:
        """Classify debounced scan ends, run due file checks and submissions, beat the heart."""
        for end in self.trigger.poll(now_s, self.tracker.latest):
            self.on_scan_end(end, now_s)
        for task in sorted(self.tasks.values(), key=lambda t: t.due_s):
            if task.due_s <= now_s and not self._stop.is_set():
                self._run_task(task, now_s)
        if now_s >= self._next_heartbeat_s:
            self._next_heartbeat_s = now_s + self.config.heartbeat_s
            self.state.heartbeat()
            self.publish_state()
        else:
            self.state.flush()

    def on_scan_end(self, end: ScanEnd, now_s: float) -> None:
        latest = end.values or self.tracker.latest  # the values at the edge describe the scan that ended
        scan_no = text_of(latest, self.config.data.scan_number_pv)
        when = " (ended while the bridge was disconnected)" if end.after_disconnect else ""
        if end.outcome is not Outcome.COMPLETE:
            msg = f"scan {scan_no or '?'} not queued: {end.outcome.value} ({end.reason}){when}"
            log.info(msg)
            self.journal.log(end.outcome.value, msg)
            self.state.count("ignored")
            self.state.set("last_scan_ignored", dict(scan_number=scan_no, outcome=end.outcome.value,
                                                     reason=end.reason, at=time.time(),
                                                     after_disconnect=end.after_disconnect))
            return
        try:
            info = describe_scan(self.config, latest, end)
        except ScanBuildError as exc:
            msg = f"scan {scan_no or '?'} complete but not queued: {exc}"
            log.error(msg)
            self.journal.log("build_error", msg)
            self.state.error(msg)
            return
        added = self.journal.add_scan(info.dedup_key, info.beamline, info.scan_number, info.file_pattern,
                                      info.label, info.params.to_json())
        if not added:
            log.info("scan %s already handled (%s): not queued again", info.scan_number, info.dedup_key)
            self.journal.log("duplicate", "already in the journal; not queued again", info.dedup_key)
            self.state.count("duplicates")
            return
        self.journal.log("complete", f"{end.reason}{when}; warnings: {info.warnings or 'none'}", info.dedup_key)
        stage = "file" if self.config.file_check.enabled else "submit"
        if stage == "submit":
            self.journal.set_status(info.dedup_key, jr.SUBMITTING)
        self.tasks[info.dedup_key] = self._task(info.dedup_key, stage, info.params, info.label, info.to_dict(),
                                                now_s)
        self._publish_pending()

    # -- tasks ------------------------------------------------------------------------------------------------
    def _task(self, key: str, stage: str, params: Parameters, label: str, scan: dict[str, Any],
              now_s: float) -> _Task:
        first = self.config.file_check.initial_backoff_s if stage == "file" else self.config.submit.initial_backoff_s
        return _Task(key, stage, params, label, scan, started_s=now_s, due_s=now_s, backoff_s=first)

    def _run_task(self, task: _Task, now_s: float) -> None:
        if task.stage == "file":
            self._check_files(task, now_s)
        else:
            self._submit(task, now_s)

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
        if now_s - task.started_s > fc.timeout_s:
            msg = f"data not complete after {fc.timeout_s:g} s: {status.reason}"
            log.error("%s: %s", task.key, msg)
            self.journal.set_status(task.key, jr.FAILED, error=msg)
            self.journal.log("file_failed", msg, task.key)
            self.state.count("file_failures")
            self.state.error(f"{task.key}: {msg}")
            del self.tasks[task.key]
            self._publish_pending()
            return
        task.due_s = now_s + task.backoff_s
        task.backoff_s = min(task.backoff_s * 2, fc.max_backoff_s)

    def _submit(self, task: _Task, now_s: float) -> None:
        request = SubmitRequest(task.params, task.key, task.label, scan=task.scan)
        try:
            job_id = self.submitter.submit(request)
        except SubmitRejected as exc:
            msg = f"rejected by the web app: {exc}"
            log.error("%s: %s", task.key, msg)
            self.journal.set_status(task.key, jr.REJECTED, error=msg, count_attempt=True)
            self.journal.log("rejected", msg, task.key)
            self.state.error(f"{task.key}: {msg}")
            del self.tasks[task.key]
            self._publish_pending()
            return
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            log.warning("%s: submission failed (%s); retrying in %.1f s", task.key, msg, task.backoff_s)
            self.journal.set_status(task.key, jr.SUBMITTING, error=msg, count_attempt=True)
            self.state.count("submit_failures")
            self.state.error(f"{task.key}: submission failed: {msg}")
            task.due_s = now_s + task.backoff_s
            task.backoff_s = min(task.backoff_s * 2, self.config.submit.max_backoff_s)
            return
        log.info("%s: queued as job %s", task.key, job_id)
        self.journal.set_status(task.key, jr.SUBMITTED, job_id=job_id, count_attempt=True)
        self.journal.log("submitted", f"job {job_id}", task.key)
        self.state.scan_queued(dict(task.scan, job_id=job_id))
        del self.tasks[task.key]
        self._publish_pending()
        self.publish_state()

    def publish_state(self) -> None:
        """Hand the state to the submitter's ``publish_state`` (the web dashboard), when it has one.

        Best effort: a database that is down must not stop the bridge; the next heartbeat tries again.
        """
        publish = getattr(self.submitter, "publish_state", None)
        if publish is None:
            return
        try:
            publish(self.state.snapshot())
        except Exception as exc:
            log.debug("could not publish the bridge state: %s", exc)

    def _publish_pending(self) -> None:
        self.state.set("pending", [dict(key=t.key, stage=t.stage) for t in self.tasks.values()])

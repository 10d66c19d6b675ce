"""What the bridge is doing, for logs and the dashboard: PV connections, last event, last scan, heartbeat.

:meth:`BridgeState.snapshot` is a JSON-ready dict; with a ``state_path`` every change and every heartbeat is
also written there atomically (write + rename) so another process (the web dashboard) can read it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _short(value: Any, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


RECENT_SCANS = 50  # scans kept in ``recent`` (newest first)
RECENT_ERRORS = 20
RECENT_GAPS = 20
SCAN_STATUSES = ("queued", "not_queued", "failed", "waiting", "held")


class BridgeState:
    """Thread-safe bridge status. ``roles`` maps each PV to what it is for (``trigger``, ``data``, ``metadata``);
    ``heartbeat_s`` is how often the bridge beats (a reader calls it crashed after a few silent periods). The web
    dashboard (``webapp.workers.bridges``) reads the snapshot."""

    def __init__(self, beamline: str, pvs: tuple[str, ...], state_path: Path | None = None,
                 min_write_interval_s: float = 0.2, roles: dict[str, str] | None = None, heartbeat_s: float = 5.0):
        self._lock = threading.Lock()
        self.state_path = state_path
        self.min_write_interval_s = min_write_interval_s
        self._dirty = False
        self._last_write_s = 0.0
        now = time.time()
        self._data: dict[str, Any] = dict(
            beamline=beamline, pid=os.getpid(), host=socket.gethostname(), started_at=now, heartbeat_at=now,
            heartbeat_s=heartbeat_s, running=True,
            pvs={pv: dict(connected=False, value=None, changed_at=None, connects=0, disconnects=0,
                          role=(roles or {}).get(pv, "")) for pv in pvs},
            last_event=None, last_scan_queued=None, last_scan_ignored=None, last_error=None, errors=[],
            recent=[], gaps=[], stopped_at=None,
            pending=[], counts=dict(queued=0, ignored=0, duplicates=0, replays=0, missed_edges=0,
                                    submit_failures=0, file_failures=0, held=0, gaps=0, streamed=0,
                                    stream_failures=0, restreams=0),
            scan_counts={k: 0 for k in SCAN_STATUSES})

    # -- updates --------------------------------------------------------------------------------------------
    def pv_connection(self, pv: str, connected: bool) -> None:
        with self._lock:
            entry = self._pv(pv)
            entry["connected"] = connected
            entry["connects" if connected else "disconnects"] += 1
            entry["connection_at"] = time.time()
            self._data["last_event"] = dict(pv=pv, kind="connection", value=connected, at=time.time())
        log.info("%s %s", pv, "connected" if connected else "DISCONNECTED")
        self.write()

    def pv_value(self, pv: str, text: str, live: bool) -> None:
        with self._lock:
            entry = self._pv(pv)
            entry["value"] = _short(text)
            entry["changed_at"] = time.time()
            self._data["last_event"] = dict(pv=pv, kind="value" if live else "replay", value=_short(text),
                                            at=entry["changed_at"])
            if not live:
                self._data["counts"]["replays"] += 1
        self.write(force=False)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._data["counts"][name] += n

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
        self.write()

    def scan_queued(self, info: dict[str, Any]) -> None:
        with self._lock:
            self._data["last_scan_queued"] = dict(info, at=time.time())
            self._data["counts"]["queued"] += 1
        self.write()

    def error(self, message: str) -> None:
        """Record an error with its time (the full message; the dashboard shows it whole)."""
        with self._lock:
            entry = dict(message=message, at=time.time())
            self._data["last_error"] = entry
            self._data["errors"] = [entry, *self._data["errors"]][:RECENT_ERRORS]
        self.write()

    def scan_status(self, key: str, scan_number: str, status: str, reason: str, *, job_id: str = "",
                    ended_at: float | None = None) -> None:
        """Set one scan's line in ``recent`` (``status`` one of :data:`SCAN_STATUSES`, the full ``reason``);
        ``scan_counts`` counts scans by their current status."""
        now = time.time()
        with self._lock:
            recent = self._data["recent"]
            counts = self._data["scan_counts"]
            old = next((r for r in recent if r["key"] == key), None)
            if old is not None:
                counts[old["status"]] -= 1
                recent.remove(old)
            entry = dict(old or dict(key=key, first_at=now))
            entry.update(scan_number=scan_number, status=status, reason=reason, at=now)
            if job_id:
                entry["job_id"] = job_id
            if ended_at:
                entry["ended_at"] = ended_at
            counts[status] += 1
            self._data["recent"] = [entry, *recent][:RECENT_SCANS]
        self.write(force=False)

    def gap(self, first: int, last: int, message: str) -> None:
        """Record scan numbers ``first``..``last`` that the bridge never saw end."""
        with self._lock:
            self._data["gaps"] = [dict(first=first, last=last, message=message, at=time.time()),
                                  *self._data["gaps"]][:RECENT_GAPS]
            self._data["counts"]["gaps"] += 1
        self.write()

    def heartbeat(self, running: bool = True) -> None:
        with self._lock:
            self._data["heartbeat_at"] = time.time()
            self._data["running"] = running
            if not running:
                self._data["stopped_at"] = self._data["heartbeat_at"]
        self.write()

    # -- reading --------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._data, default=str))

    def flush(self) -> None:
        """Write a change that :meth:`write` held back, once the minimum interval has passed."""
        if self._dirty:
            self.write(force=False)

    def write(self, force: bool = True) -> None:
        """Write the snapshot to ``state_path`` (if any) atomically; failures are logged, never raised.

        Without ``force`` at most one write per ``min_write_interval_s``; the rest waits for :meth:`flush`.
        """
        if self.state_path is None:
            return
        now = time.monotonic()
        if not force and now - self._last_write_s < self.min_write_interval_s:
            self._dirty = True
            return
        self._dirty = False
        self._last_write_s = now
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(self.snapshot(), indent=1, default=str))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("cannot write the state file %s: %s", self.state_path, exc)

    def _pv(self, pv: str) -> dict[str, Any]:
        pvs = self._data["pvs"]
        return pvs.setdefault(pv, dict(connected=False, value=None, changed_at=None, connects=0, disconnects=0))


def read_state(path: str | Path) -> dict[str, Any] | None:
    """The last state a bridge wrote (for the dashboard); None when there is none or it is unreadable."""
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None

"""What the bridge is doing, for logs and the dashboard: PV connections, last event, last scan, heartbeat.

:meth:`BridgeState.snapshot` is a JSON-ready dict; with a ``state_path`` every change and every heartbeat is
also written there atomically (write + rename) so another process (the web dashboard) can read it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _short(value: Any, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BridgeState:
    """Thread-safe bridge status."""

    def __init__(self, beamline: str, pvs: tuple[str, ...], state_path: Path | None = None,
                 min_write_interval_s: float = 0.2):
        self._lock = threading.Lock()
        self.state_path = state_path
        self.min_write_interval_s = min_write_interval_s
        self._dirty = False
        self._last_write_s = 0.0
        now = time.time()
        self._data: dict[str, Any] = dict(
            beamline=beamline, pid=os.getpid(), started_at=now, heartbeat_at=now, running=True,
            pvs={pv: dict(connected=False, value=None, changed_at=None, connects=0, disconnects=0) for pv in pvs},
            last_event=None, last_scan_queued=None, last_scan_ignored=None, last_error=None,
            pending=[], counts=dict(queued=0, ignored=0, duplicates=0, replays=0, missed_edges=0,
                                    submit_failures=0, file_failures=0))

    # -- updates --------------------------------------------------------------------------------------------
    def pv_connection(self, pv: str, connected: bool) -> None:
        with self._lock:
            entry = self._pv(pv)
            entry["connected"] = connected
            entry["connects" if connected else "disconnects"] += 1
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
        with self._lock:
            self._data["last_error"] = dict(message=message, at=time.time())
        self.write()

    def heartbeat(self, running: bool = True) -> None:
        with self._lock:
            self._data["heartbeat_at"] = time.time()
            self._data["running"] = running
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

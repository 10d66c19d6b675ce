"""A local SQLite journal of the scans the bridge has seen, so none is queued twice or lost.

``scans`` holds one row per completed scan, keyed by its dedup key (a replayed PV value or a restarted bridge
finds the row and queues nothing); a row stays ``waiting_file`` or ``submitting`` until the web side accepts
it, so a submission survives a restart and a web server that is down. ``events`` is an append-only log
(aborted scans, failures, missed edges) for people reading what happened.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WAITING_FILE = "waiting_file"
SUBMITTING = "submitting"
SUBMITTED = "submitted"
FAILED = "failed"  # the file never became complete
REJECTED = "rejected"  # the web side refused the parameters for good
OPEN_STATES = (WAITING_FILE, SUBMITTING)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    dedup_key TEXT PRIMARY KEY,
    beamline TEXT NOT NULL,
    scan_number TEXT NOT NULL,
    file_pattern TEXT NOT NULL,
    label TEXT NOT NULL,
    params_json TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    job_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    dedup_key TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ScanRow:
    dedup_key: str
    beamline: str
    scan_number: str
    file_pattern: str
    label: str
    params_json: str
    status: str
    attempts: int
    last_error: str
    job_id: str
    created_at: float
    updated_at: float


class Journal:
    """Thread-safe access to the journal file (WAL, synchronous=FULL: a committed row survives a crash)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_scan(self, dedup_key: str, beamline: str, scan_number: str, file_pattern: str, label: str,
                 params_json: str, status: str = WAITING_FILE) -> bool:
        """Record a new scan; False (and nothing changed) when the key is already known."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO scans (dedup_key, beamline, scan_number, file_pattern, label, params_json,"
                " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dedup_key, beamline, scan_number, file_pattern, label, params_json, status, now, now))
            return cur.rowcount == 1

    def set_status(self, dedup_key: str, status: str, *, error: str = "", job_id: str = "",
                   count_attempt: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE scans SET status = ?, last_error = ?, job_id = CASE WHEN ? = '' THEN job_id ELSE ? END,"
                " attempts = attempts + ?, updated_at = ? WHERE dedup_key = ?",
                (status, error, job_id, job_id, 1 if count_attempt else 0, time.time(), dedup_key))

    def get(self, dedup_key: str) -> ScanRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM scans WHERE dedup_key = ?", (dedup_key,)).fetchone()
        return _row(row) if row else None

    def open_scans(self) -> list[ScanRow]:
        """Scans not yet accepted by the web side, oldest first (resumed at start-up)."""
        marks = ",".join("?" * len(OPEN_STATES))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM scans WHERE status IN ({marks}) ORDER BY created_at", OPEN_STATES).fetchall()
        return [_row(r) for r in rows]

    def scans(self) -> list[ScanRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM scans ORDER BY created_at").fetchall()
        return [_row(r) for r in rows]

    def log(self, kind: str, message: str, dedup_key: str = "") -> None:
        """Append one line to the event log."""
        with self._lock:
            self._db.execute("INSERT INTO events (at, kind, dedup_key, message) VALUES (?, ?, ?, ?)",
                             (time.time(), kind, dedup_key, message))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if kind:
                rows = self._db.execute("SELECT at, kind, dedup_key, message FROM events WHERE kind = ? ORDER BY id",
                                        (kind,)).fetchall()
            else:
                rows = self._db.execute("SELECT at, kind, dedup_key, message FROM events ORDER BY id").fetchall()
        return [dict(at=r[0], kind=r[1], dedup_key=r[2], message=r[3]) for r in rows]


def _row(r: tuple[Any, ...]) -> ScanRow:
    return ScanRow(*r)

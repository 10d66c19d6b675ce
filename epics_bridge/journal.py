"""A local SQLite journal of the scans the bridge has seen, so none is queued twice or lost.

``scans`` holds one row per completed scan, keyed by its dedup key (a replayed PV value or a restarted bridge
finds the row and queues nothing); a row stays ``waiting_file`` or ``submitting`` until the web side accepts
it, so a submission survives a restart and a web server that is down. ``edges`` holds every end of scan the moment it is
seen, with the values that decide its completeness and their IOC time stamps, before any debounce; a row stays
``open`` until the scan is classified and its outcome recorded, so a bridge killed inside the debounce finishes
it when it restarts. ``last_values`` keeps the edge PV's last value and the last scan number, so a restarted
bridge knows a scan was running when it died, and where scan numbers jump. ``events`` is an append-only log
(aborted scans, failures, missed edges, gaps) for people reading what happened.

A scan whose streaming job was opened at its start (mode ``stream``) keeps, once it ended complete, the batch job
its end would queue (``end_json``) and stays ``following`` until its streaming job reached a final state, so a
restarted bridge still queues that batch job should the streaming job fail (docs/streaming.md, "Exactly once").
While the scan still acquires, an accepted streaming job is ``watching``: asked with back-off, and when it fails
the row goes (one conditional UPDATE each, so at most once) either back to ``submitting`` for a replacement
streaming job under ``<key>#restream`` (``restreams`` counts them) or to ``stream_failed`` (no replacement: the
complete end queues the batch job).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WAITING_FILE = "waiting_file"
SUBMITTING = "submitting"
SUBMITTED = "submitted"
FAILED = "failed"  # the file never became complete
REJECTED = "rejected"  # the web side refused the parameters for good
HELD = "held"  # a metadata PV was disconnected or out of range: not queued (see last_error)
FOLLOWING = "following"  # a streaming scan that ended complete: its accepted streaming job is followed until it
# reaches a final state (done/cancelled: back to SUBMITTED; failed: the row becomes BATCH_AFTER_STREAM)
WATCHING = "watching"  # a streaming scan still acquiring, its accepted streaming job asked with back-off until
# it ends: failed, the row goes back to SUBMITTING for a replacement (restreams + 1) or to STREAM_FAILED
STREAM_FAILED = "stream_failed"  # its streaming job failed while the scan acquired and is not replaced: the
# complete end queues the batch job (BATCH_AFTER_STREAM), an aborted or partial one nothing
OPEN_STATES = (WAITING_FILE, SUBMITTING)
BATCH = "batch"  # the scan's job was opened at its end (the completion trigger)
STREAM = "stream"  # ... at its start, as a streaming job (the completion then queues nothing)
BATCH_AFTER_STREAM = "batch_after_stream"  # a batch job for a scan whose accepted streaming job failed (before any
# frame or after): submitted under the key with BATCH_SUFFIX (the web side keeps the failed streaming job under the key)
BATCH_SUFFIX = "#batch"
RESTREAM_SUFFIX = "#restream"  # a replacement streaming job (its predecessor failed while the scan acquired)


def restream_key(dedup_key: str, restreams: int) -> str:
    """The key the web side gets for a streaming scan's ``restreams``-th replacement streaming job (0: the first
    streaming job, the scan's key; 1: ``key#restream``; n > 1: ``key#restream<n>``)."""
    if restreams <= 0:
        return dedup_key
    return dedup_key + RESTREAM_SUFFIX + (str(restreams) if restreams > 1 else "")

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
    updated_at REAL NOT NULL,
    mode TEXT NOT NULL DEFAULT 'batch',
    provenance_json TEXT NOT NULL DEFAULT '{}',
    end_json TEXT NOT NULL DEFAULT '',
    restreams INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS edges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    edge_pv TEXT NOT NULL,
    ioc_timestamp REAL NOT NULL,
    file TEXT NOT NULL DEFAULT '',
    after_disconnect INTEGER NOT NULL DEFAULT 0,
    disconnected_json TEXT NOT NULL DEFAULT '[]',
    values_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    outcome TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    scan_number TEXT NOT NULL DEFAULT '',
    dedup_key TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS last_values (
    name TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    value_json TEXT NOT NULL,
    ioc_timestamp REAL NOT NULL
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
    provenance_json: str = "{}"  # where each parameter came from (the job page shows it after a restart too)
    mode: str = BATCH  # STREAM: a streaming job opened at the scan's start (docs/streaming.md); BATCH: at its end
    end_json: str = ""  # STREAM: the complete end's batch job, once the scan ended (see :meth:`Journal.follow`)
    restreams: int = 0  # STREAM: replacement streaming jobs opened (the current one goes under restream_key)


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
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A journal written by an older version lacks the newer columns: add them (appended, with defaults)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(scans)")}
        if "provenance_json" not in columns:
            self._db.execute("ALTER TABLE scans ADD COLUMN provenance_json TEXT NOT NULL DEFAULT '{}'")
        if "mode" not in columns:
            self._db.execute("ALTER TABLE scans ADD COLUMN mode TEXT NOT NULL DEFAULT 'batch'")
        if "end_json" not in columns:
            self._db.execute("ALTER TABLE scans ADD COLUMN end_json TEXT NOT NULL DEFAULT ''")
        if "restreams" not in columns:
            self._db.execute("ALTER TABLE scans ADD COLUMN restreams INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock (``BEGIN IMMEDIATE``), committed when the block ends, rolled back
        when it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add_scan(self, dedup_key: str, beamline: str, scan_number: str, file_pattern: str, label: str,
                 params_json: str, status: str = WAITING_FILE, error: str = "", provenance_json: str = "{}",
                 mode: str = BATCH) -> bool:
        """Record a new scan (``mode`` STREAM: its streaming job, opened at the start); False (and nothing
        changed) when the key is already known."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO scans (dedup_key, beamline, scan_number, file_pattern, label, params_json,"
                " status, last_error, created_at, updated_at, provenance_json, mode)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dedup_key, beamline, scan_number, file_pattern, label, params_json, status, error, now, now,
                 provenance_json, mode))
            return cur.rowcount == 1

    def stream_to_batch(self, dedup_key: str, file_pattern: str, params_json: str, status: str,
                        provenance_json: str, *, accepted: bool = False) -> str:
        """A scan whose streaming job does not cover it becomes a batch scan with the completion's parameters:
        refused by the web side (row ``rejected``/``failed``), or failed while the scan acquired and not replaced
        (``stream_failed``), or, with ``accepted``, accepted and then failed on the worker after the end (row
        ``following``). The new mode: BATCH (the same key: the web side never took a job under it) or, once the
        web side took a streaming job of the scan (``stream_failed``, ``following``, or a refused replacement),
        BATCH_AFTER_STREAM (submitted under ``key#batch``); "" (nothing changed) unless the row is such a scan.
        One conditional UPDATE, so at most once."""
        states = (FOLLOWING,) if accepted else (REJECTED, FAILED, STREAM_FAILED)
        marks = ",".join("?" * len(states))
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE scans SET mode = CASE WHEN restreams > 0 OR status IN (?, ?) THEN ? ELSE ? END,"
                " file_pattern = ?, params_json = ?, status = ?, provenance_json = ?, last_error = '', job_id = '',"
                f" end_json = '', updated_at = ? WHERE dedup_key = ? AND mode = ? AND status IN ({marks})",
                (FOLLOWING, STREAM_FAILED, BATCH_AFTER_STREAM, BATCH, file_pattern, params_json, status,
                 provenance_json, time.time(), dedup_key, STREAM, *states))
            return self._column(db, cur, dedup_key, "mode") or ""

    def restream(self, dedup_key: str, attempts: int, why: str, params_json: str | None = None) -> int:
        """The watched streaming job of a scan still acquiring failed: open a replacement (row ``submitting``
        again, ``restreams`` + 1, ``why`` kept as its last error), unless ``attempts`` replacements were opened
        already. The replacement's number (its key: :func:`restream_key`), or 0 (nothing changed: not a watched
        streaming scan, or no attempt left). One conditional UPDATE, so one replacement per failure; ``params_json``:
        the replacement's parameters, when not the failed job's (written in the same UPDATE)."""
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE scans SET status = ?, restreams = restreams + 1, job_id = '', last_error = ?, updated_at = ?,"
                " params_json = COALESCE(?, params_json)"
                " WHERE dedup_key = ? AND mode = ? AND status = ? AND restreams < ?",
                (SUBMITTING, why, time.time(), params_json, dedup_key, STREAM, WATCHING, attempts))
            return int(self._column(db, cur, dedup_key, "restreams") or 0)

    @staticmethod
    def _column(db: sqlite3.Connection, cur: sqlite3.Cursor, dedup_key: str, column: str) -> Any:
        """After a conditional UPDATE (``cur``) in a transaction: the row's ``column`` when it changed one row,
        else None."""
        if cur.rowcount != 1:
            return None
        return db.execute(f"SELECT {column} FROM scans WHERE dedup_key = ?", (dedup_key,)).fetchone()[0]

    def stream_failed(self, dedup_key: str, why: str) -> bool:
        """The watched streaming job of a scan still acquiring failed and is not replaced: the row is
        ``stream_failed`` (``why`` its last error) until the scan's end decides. False unless it was
        ``watching``."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE scans SET status = ?, last_error = ?, updated_at = ? WHERE dedup_key = ? AND mode = ?"
                " AND status = ?", (STREAM_FAILED, why, time.time(), dedup_key, STREAM, WATCHING))
            return cur.rowcount == 1

    def note_end(self, dedup_key: str, end_json: str) -> bool:
        """A streaming scan that ended complete while its streaming job is still being submitted: keep the batch
        job its end would queue (``end_json``) with the row, for the web side's answer (refused: that batch job;
        accepted: :meth:`follow`). False unless the row is such a scan."""
        return self._update_stream(dedup_key, (SUBMITTING,), SUBMITTING, end_json)

    def follow(self, dedup_key: str, end_json: str = "") -> bool:
        """A streaming scan that ended complete, its streaming job accepted: the row becomes ``following`` (with
        the end's batch job ``end_json``; empty: the one :meth:`note_end` kept) until the job reached a final
        state. False (nothing changed) unless the row is an accepted streaming scan (``submitted`` or
        ``watching``)."""
        return self._update_stream(dedup_key, (SUBMITTED, WATCHING), FOLLOWING, end_json)

    def covered(self, dedup_key: str) -> bool:
        """A followed or watched streaming job ended done or cancelled (or a watched one's scan ended aborted or
        partial): the row is ``submitted`` again. False unless it was ``following`` or ``watching``."""
        return self._update_stream(dedup_key, (FOLLOWING, WATCHING), SUBMITTED, "")

    def unwatch(self, dedup_key: str) -> bool:
        """A watched streaming job's scan ended aborted or partial: the row is ``submitted`` (the job keeps what
        it has, nothing replaces it). False unless it was ``watching``."""
        return self._update_stream(dedup_key, (WATCHING,), SUBMITTED, "")

    def _update_stream(self, dedup_key: str, states: tuple[str, ...], status: str, end_json: str) -> bool:
        marks = ",".join("?" * len(states))
        with self._lock:
            cur = self._db.execute(
                "UPDATE scans SET status = ?, end_json = CASE WHEN ? = '' THEN end_json ELSE ? END, updated_at = ?"
                f" WHERE dedup_key = ? AND mode = ? AND status IN ({marks})",
                (status, end_json, end_json, time.time(), dedup_key, STREAM, *states))
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
            row = self._db.execute(f"SELECT {_SCAN_COLUMNS} FROM scans WHERE dedup_key = ?", (dedup_key,)).fetchone()
        return _row(row) if row else None

    def open_scans(self) -> list[ScanRow]:
        """Scans not yet accepted by the web side, oldest first (resumed at start-up)."""
        marks = ",".join("?" * len(OPEN_STATES))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SCAN_COLUMNS} FROM scans WHERE status IN ({marks}) ORDER BY created_at",
                OPEN_STATES).fetchall()
        return [_row(r) for r in rows]

    def ended_streams(self) -> list[ScanRow]:
        """Streaming scans whose complete end is kept (``end_json``) and still to act on, oldest first (resumed
        at start-up): ``following`` (their streaming job is followed) or ``rejected``/``failed`` (refused after
        the end: the batch job, unless queued before the restart)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_SCAN_COLUMNS} FROM scans WHERE mode = ? AND end_json != '' AND status IN (?, ?, ?)"
                " ORDER BY created_at", (STREAM, FOLLOWING, REJECTED, FAILED)).fetchall()
        return [_row(r) for r in rows]

    def watched_streams(self) -> list[ScanRow]:
        """Streaming scans still acquiring whose accepted streaming job is watched (``watching``), oldest first
        (resumed at start-up)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_SCAN_COLUMNS} FROM scans WHERE mode = ? AND status = ?"
                                    " ORDER BY created_at", (STREAM, WATCHING)).fetchall()
        return [_row(r) for r in rows]

    def set_params(self, dedup_key: str, params_json: str, provenance_json: str) -> None:
        """Replace a scan's parameters and provenance with those submitted (e.g. after the data file's metadata
        filled them in)."""
        with self._lock:
            self._db.execute("UPDATE scans SET params_json = ?, provenance_json = ?, updated_at = ?"
                             " WHERE dedup_key = ?", (params_json, provenance_json, time.time(), dedup_key))

    def scans(self) -> list[ScanRow]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_SCAN_COLUMNS} FROM scans ORDER BY created_at").fetchall()
        return [_row(r) for r in rows]

    # -- edges: journalled at the edge, before the debounce ----------------------------------------------------
    def add_edge(self, edge_pv: str, ioc_timestamp: float, values: dict[str, dict[str, Any]], *, file: str = "",
                 after_disconnect: bool = False, disconnected: tuple[str, ...] = (),
                 edge_value: dict[str, Any] | None = None) -> int:
        """Record an end of scan (committed and synced before returning); its row id. ``edge_value``
        (``{"text", "value", "timestamp"}``) is stored as the edge PV's last value in the same transaction."""
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO edges (at, edge_pv, ioc_timestamp, file, after_disconnect, disconnected_json,"
                " values_json, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (now, edge_pv, ioc_timestamp, file, int(after_disconnect), json.dumps(list(disconnected)),
                 json.dumps(values), now))
            if edge_value is not None:
                self._set_last(edge_pv, edge_value)
        return int(cur.lastrowid or 0)

    def update_edge(self, edge_id: int, values: dict[str, dict[str, Any]], disconnected: tuple[str, ...]) -> None:
        """Replace an open edge's captured values (a value that arrived during the debounce)."""
        with self._lock:
            self._db.execute("UPDATE edges SET values_json = ?, disconnected_json = ?, updated_at = ?"
                             " WHERE id = ? AND status = 'open'",
                             (json.dumps(values), json.dumps(list(disconnected)), time.time(), edge_id))

    def finish_edge(self, edge_id: int, outcome: str, reason: str, scan_number: str = "",
                    dedup_key: str = "") -> None:
        """Mark an edge classified: its outcome, the full reason, the scan number and (when queued) the key."""
        with self._lock:
            self._db.execute(
                "UPDATE edges SET status = 'done', outcome = ?, reason = ?, scan_number = ?, dedup_key = ?,"
                " updated_at = ? WHERE id = ?", (outcome, reason, scan_number, dedup_key, time.time(), edge_id))

    def open_edges(self) -> list[EdgeRow]:
        """Edges a previous run saw but did not classify, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, edge_pv, ioc_timestamp, file, after_disconnect, disconnected_json, values_json,"
                " status, outcome, reason, scan_number, dedup_key FROM edges WHERE status = 'open' ORDER BY id"
            ).fetchall()
        return [_edge(r) for r in rows]

    def edges(self) -> list[EdgeRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, edge_pv, ioc_timestamp, file, after_disconnect, disconnected_json, values_json,"
                " status, outcome, reason, scan_number, dedup_key FROM edges ORDER BY id").fetchall()
        return [_edge(r) for r in rows]

    # -- last values ----------------------------------------------------------------------------------------
    def set_last(self, name: str, value: dict[str, Any]) -> None:
        """Remember ``{"text", "value", "timestamp"}`` under ``name`` (a PV name, or ``@scan_number``)."""
        with self._lock:
            self._set_last(name, value)

    def _set_last(self, name: str, value: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO last_values (name, text, value_json, ioc_timestamp) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET text = excluded.text, value_json = excluded.value_json,"
            " ioc_timestamp = excluded.ioc_timestamp",
            (name, str(value.get("text", "")), json.dumps(value.get("value")), float(value.get("timestamp", 0.0))))

    def last(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute("SELECT text, value_json, ioc_timestamp FROM last_values WHERE name = ?",
                                 (name,)).fetchone()
        return None if r is None else dict(text=r[0], value=json.loads(r[1]), timestamp=r[2])

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


@dataclass(frozen=True)
class EdgeRow:
    """A journalled end of scan: the values (``{pv: {"value", "text", "timestamp"}}``) as captured."""

    id: int
    at: float
    edge_pv: str
    ioc_timestamp: float
    file: str
    after_disconnect: bool
    disconnected: tuple[str, ...]
    values: dict[str, dict[str, Any]]
    status: str
    outcome: str
    reason: str
    scan_number: str
    dedup_key: str


def _edge(r: tuple[Any, ...]) -> EdgeRow:
    return EdgeRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), tuple(json.loads(r[6])), json.loads(r[7]), r[8], r[9],
                   r[10], r[11], r[12])


#: the columns of :class:`ScanRow`, in its order (a journal that gained columns by ALTER TABLE has another order)
_SCAN_COLUMNS = ("dedup_key, beamline, scan_number, file_pattern, label, params_json, status, attempts, last_error,"
                 " job_id, created_at, updated_at, provenance_json, mode, end_json, restreams")


def _row(r: tuple[Any, ...]) -> ScanRow:
    return ScanRow(*r)

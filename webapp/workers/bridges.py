"""What the dashboard shows for each EPICS bridge, from the state it last published (``BridgeStatus.state``).

The health of a bridge, worst first:

- ``crashed``: no heartbeat for ``stale_s`` (``PTYCHOPY_HEARTBEAT_STALE_S``, at least three of the bridge's own
  ``heartbeat_s``) and no clean stop: killed, hung or cut off;
- ``stopped``: it said so when it stopped (``running`` false);
- ``red``: a trigger PV is not connected, or no PV is (the IOC is unreachable): no scan end can be seen;
- ``connecting``: PVs that never connected yet, within ``CONNECTING_GRACE_S`` of the bridge's start (amber, never
  green: after the grace such a PV makes it red or degraded);
- ``degraded``: another PV (data, metadata) is down;
- ``ok``: every PV connected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from webapp.jobs.models import BridgeStatus

CONNECTING_GRACE_S = 3.0  # the bridge logs its WARNING about PVs that did not connect after 3 s as well
RECENT_SHOWN = 50
SCAN_STATUS_TITLES = {"queued": "queued", "not_queued": "not queued", "failed": "failed",
                      "waiting": "waiting for data", "held": "held"}
LEVEL_TITLES = {"ok": "ok", "degraded": "degraded", "connecting": "connecting", "red": "PV down",
                "stopped": "stopped", "crashed": "crashed / silent"}
LEVEL_BADGES = {"ok": "status-done", "degraded": "status-cancelled", "connecting": "status-cancelled",
                "red": "status-failed", "stopped": "status-stopped", "crashed": "status-failed"}


def when(posix_s: Any) -> datetime | None:
    """An aware datetime from the bridge's POSIX seconds (None when missing or not a number)."""
    try:
        return datetime.fromtimestamp(float(posix_s), UTC) if posix_s else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


@dataclass(frozen=True)
class PvLine:
    name: str
    role: str
    connected: bool
    value: str
    down_since: datetime | None  # when it disconnected; None while connected or when it never connected


@dataclass(frozen=True)
class ScanLine:
    """One recent scan: its status and full reason, when the bridge last changed it and when it ended."""

    scan_number: str
    status: str
    reason: str
    at: datetime | None
    ended_at: datetime | None
    job_id: str

    @property
    def status_title(self) -> str:
        return SCAN_STATUS_TITLES.get(self.status, self.status)

    @property
    def job_pk(self) -> int | None:
        """The job this scan became, when the submitter gave a job number (the page links it)."""
        return int(self.job_id) if self.job_id.isdigit() else None

    @property
    def detail(self) -> str:
        """The reason, less the "job N" that the link already says."""
        return "" if self.job_id and self.reason == f"job {self.job_id}" else self.reason


@dataclass(frozen=True)
class TimedText:
    text: str
    at: datetime | None


@dataclass
class BridgeView:
    """One bridge as the dashboard shows it."""

    row: BridgeStatus
    level: str
    why: str
    age_s: float
    pvs: list[PvLine] = field(default_factory=list)
    scans: list[ScanLine] = field(default_factory=list)
    scan_counts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    gaps: list[TimedText] = field(default_factory=list)
    errors: list[TimedText] = field(default_factory=list)

    @property
    def beamline(self) -> str:
        return self.row.beamline

    @property
    def state(self) -> dict[str, Any]:
        return self.row.state

    @property
    def level_title(self) -> str:
        return LEVEL_TITLES[self.level]

    @property
    def badge(self) -> str:
        return LEVEL_BADGES[self.level]

    @property
    def missing(self) -> list[PvLine]:
        """The PVs not connected, trigger PVs first."""
        order = {"trigger": 0, "data": 1}
        return sorted((p for p in self.pvs if not p.connected), key=lambda p: (order.get(p.role, 2), p.name))

    @property
    def pvs_connected(self) -> int:
        return sum(1 for p in self.pvs if p.connected)

    @property
    def retirable(self) -> bool:
        """Only a bridge that is gone may be retired (a running one would publish its row again)."""
        return self.level in ("stopped", "crashed")

    @property
    def counts_line(self) -> list[tuple[str, int]]:
        return [(SCAN_STATUS_TITLES[k], int(self.scan_counts.get(k, 0))) for k in SCAN_STATUS_TITLES]


def stale_after_s(state: dict[str, Any]) -> float:
    """Heartbeat silence after which a bridge that did not stop cleanly counts as crashed."""
    try:
        own_s = 3 * float(state.get("heartbeat_s") or 0)
    except (TypeError, ValueError):
        own_s = 0.0
    return max(float(settings.PTYCHOPY_HEARTBEAT_STALE_S), own_s)


def health(state: dict[str, Any], age_s: float, now_s: float | None = None) -> tuple[str, str]:
    """``(level, why)`` for a published state whose heartbeat is ``age_s`` old (levels: module docstring)."""
    now_s = time.time() if now_s is None else now_s
    if not state.get("running", True):
        return "stopped", f"stopped cleanly at {_hms(state.get('stopped_at') or state.get('heartbeat_at'))}"
    stale_s = stale_after_s(state)
    if age_s > stale_s:
        return "crashed", f"no heartbeat for {age_s:.0f} s (> {stale_s:.0f} s) and no clean stop"
    pvs = state.get("pvs") or {}
    down = sorted(name for name, pv in pvs.items() if not pv.get("connected"))
    if not down:
        return "ok", f"all {len(pvs)} PVs connected"
    trigger_down = [name for name in down if (pvs[name].get("role") or "") == "trigger"]
    starting = now_s - float(state.get("started_at") or 0) < CONNECTING_GRACE_S
    if starting and all(not pvs[name].get("connects") for name in down):
        return "connecting", f"connecting: {len(down)} of {len(pvs)} PVs not connected yet"
    if len(down) == len(pvs):
        return "red", f"none of {len(pvs)} PVs connected (IOC unreachable?)"
    if trigger_down:
        return "red", f"trigger PV{'s' if len(trigger_down) > 1 else ''} not connected: {', '.join(trigger_down)}"
    return "degraded", f"{len(down)} of {len(pvs)} PVs not connected"


def _hms(posix_s: Any) -> str:
    at = when(posix_s)
    return at.astimezone().strftime("%H:%M:%S") if at else "?"


def bridge_view(row: BridgeStatus, now_s: float | None = None) -> BridgeView:
    """Everything the dashboard shows for ``row``."""
    state = row.state or {}
    age_s = row.age_s()
    level, why = health(state, age_s, now_s)
    pvs = [PvLine(name, str(pv.get("role") or ""), bool(pv.get("connected")), str(pv.get("value") or ""),
                  None if pv.get("connected") else when(pv.get("connection_at")))
           for name, pv in sorted((state.get("pvs") or {}).items())]
    scans = [ScanLine(str(s.get("scan_number") or "?"), str(s.get("status") or ""), str(s.get("reason") or ""),
                      when(s.get("at")), when(s.get("ended_at")), str(s.get("job_id") or ""))
             for s in (state.get("recent") or [])[:RECENT_SHOWN]]
    gaps = [TimedText(str(g.get("message") or f"scans {g.get('first')}-{g.get('last')} not seen"), when(g.get("at")))
            for g in state.get("gaps") or []]
    errors = [TimedText(str(e.get("message") or ""), when(e.get("at"))) for e in state.get("errors") or []]
    if not errors and state.get("last_error"):  # a bridge of an older version
        e = state["last_error"]
        errors = [TimedText(str(e.get("message") or e), when(e.get("at")) if isinstance(e, dict) else None)]
    return BridgeView(row, level, why, age_s, pvs, scans, dict(state.get("scan_counts") or {}),
                      dict(state.get("counts") or {}), gaps, errors)


def bridge_views() -> list[BridgeView]:
    """Every bridge that published a state, by beamline."""
    return [bridge_view(row) for row in BridgeStatus.objects.all()]


def as_json(view: BridgeView) -> dict[str, Any]:
    """The dashboard's JSON for one bridge."""
    b = view.row
    return {
        "id": b.pk, "beamline": b.beamline, "health": view.level, "why": view.why,
        "alive": view.level not in ("stopped", "crashed"), "age_s": round(view.age_s, 1),
        "pvs_connected": view.pvs_connected, "pvs_total": len(view.pvs),
        "missing_pvs": [{"pv": p.name, "role": p.role} for p in view.missing],
        "scan_counts": view.scan_counts, "gaps": len(view.gaps),
        "recent": [{"scan_number": s.scan_number, "status": s.status, "reason": s.reason,
                    "at": s.at.isoformat() if s.at else None, "job_id": s.job_id or None} for s in view.scans],
        "errors": [{"message": e.text, "at": e.at.isoformat() if e.at else None} for e in view.errors],
        "last_scan_queued": b.state.get("last_scan_queued"), "last_scan_ignored": b.state.get("last_scan_ignored"),
    }

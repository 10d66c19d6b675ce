"""Where each parameter of a job came from, as rows for the job page.

A job submitted by the EPICS bridge carries ``Job.provenance`` (``{"group.name": {"source", "pv", "value",
"note", "ioc_timestamp"}}``): a metadata PV, the beamline's template, the bridge itself (job id, file pattern). Every
parameter that differs from the defaults gets a row; one the submitter said nothing about reads "not recorded".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SOURCE_TITLES = {
    "pv": "PV",
    "template": "template",
    "bridge": "bridge",
    "held": "held (bad PV)",
    "file": "data file",
}


@dataclass(frozen=True)
class ProvenanceRow:
    """One parameter: its value in the job, where it came from, and the detail (PV name, IOC time, note)."""

    path: str
    value: Any
    source: str  # a key of SOURCE_TITLES, or "" when not recorded
    pv: str
    ioc_time: str  # the IOC's time stamp of the PV value (UTC), "" when none
    note: str

    @property
    def source_title(self) -> str:
        return SOURCE_TITLES.get(self.source, self.source) if self.source else "not recorded"


def provenance_rows(provenance: dict[str, Any], changed: dict[str, Any]) -> list[ProvenanceRow]:
    """Rows for every parameter in ``changed`` (path -> the job's value) or in ``provenance``, sorted by path."""
    rows = []
    for path in sorted(set(changed) | set(provenance)):
        entry = provenance.get(path) or {}
        stamp = entry.get("ioc_timestamp")
        ioc_time = (datetime.fromtimestamp(float(stamp), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
                    if stamp else "")
        value = changed[path] if path in changed else entry.get("value", "")
        rows.append(ProvenanceRow(path, value, str(entry.get("source") or ""), str(entry.get("pv") or ""),
                                  ioc_time, str(entry.get("note") or "")))
    return rows

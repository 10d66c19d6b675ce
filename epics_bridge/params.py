"""From the PV values at the end of a scan to a scan description, its parameters and its dedup key."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reconstruction import ParameterError, Parameters

from .config import BridgeConfig, DataField, PvSource
from .trigger import ScanEnd, ValueEvent, as_float, as_int, text_of

log = logging.getLogger(__name__)

HC_KEV_M = 12.398419843320026e-10  # wavelength_m = HC_KEV_M / energy_keV


class ScanBuildError(ValueError):
    """The PV values do not make a valid scan (bad template fields, bad metadata)."""


@dataclass(frozen=True)
class ScanInfo:
    """What the bridge submits for one completed scan."""

    beamline: str
    scan_number: str
    file_pattern: str  # the data file pattern with '#' (or a single file)
    dedup_key: str
    label: str
    params: Parameters
    warnings: tuple[str, ...] = ()
    held: tuple[str, ...] = ()  # why the scan must not be queued (a held metadata PV was bad); empty = queue it
    provenance: Mapping[str, Any] = field(default_factory=dict)  # {"group.name": {"source": ..., ...}}

    def to_dict(self) -> dict[str, Any]:
        return dict(beamline=self.beamline, scan_number=self.scan_number, file_pattern=self.file_pattern,
                    dedup_key=self.dedup_key, label=self.label, warnings=list(self.warnings),
                    provenance=dict(self.provenance))


@dataclass(frozen=True)
class CompletedScan:
    """A complete end of a scan whose streaming job was opened at its start: the batch job the end queues should
    that streaming job not cover the scan (``info``), the end's reason as the dashboard says it and its IOC time
    (Unix s). Kept with the journal row (``end_json``) so a restarted bridge still knows it."""

    info: ScanInfo
    reason: str
    ended_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(dict(info=self.info.to_dict(), params=self.info.params.to_dict(),
                               held=list(self.info.held), reason=self.reason, ended_at=self.ended_at), default=str)

    @classmethod
    def from_json(cls, text: str) -> CompletedScan:
        """Read :meth:`to_json`'s text; raises ScanBuildError naming what is wrong with it."""
        try:
            d = json.loads(text)
            i = d["info"]
            info = ScanInfo(str(i["beamline"]), str(i["scan_number"]), str(i["file_pattern"]), str(i["dedup_key"]),
                            str(i["label"]), Parameters.from_dict(d["params"]), tuple(i.get("warnings") or ()),
                            tuple(d.get("held") or ()), dict(i.get("provenance") or {}))
            return cls(info, str(d["reason"]), d.get("ended_at"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ParameterError is a ValueError
            raise ScanBuildError(f"the journalled end of the scan cannot be read: {type(exc).__name__}: "
                                 f"{exc}") from None


def dedup_key(beamline: str, scan_number: str, file_pattern: str) -> str:
    """The natural key of a scan, unique in the jobs table: beamline, scan number and data file."""
    return f"{beamline}:{scan_number}:{file_pattern}"


def scan_fields(config: BridgeConfig, latest: Mapping[str, ValueEvent], end: ScanEnd) -> dict[str, Any]:
    """The ``{fields}`` the file patterns, the label and the job id are filled from."""
    d = config.data
    scan_no_value: Any = ""
    if d.scan_number_pv:
        ev = latest.get(d.scan_number_pv)
        n = as_int(ev.value) if ev else None
        scan_no_value = n + d.scan_number_offset if n is not None else text_of(latest, d.scan_number_pv)
    file_dir, file_name = os.path.split(end.file)
    fields: dict[str, Any] = {name: _field_value(latest, f) for name, f in d.fields.items()}
    fields.update(beamline=config.beamline, path=text_of(latest, d.path_pv).rstrip("/"),
                  name=text_of(latest, d.name_pv), scan_number=scan_no_value, file=end.file, file_dir=file_dir,
                  file_name=file_name, file_stem=os.path.splitext(file_name)[0])
    return fields


def describe_streaming_scan(config: BridgeConfig, latest: Mapping[str, ValueEvent], start: ScanEnd,
                            series: int | None = None, started_s: float = 0.0) -> ScanInfo:
    """The streaming job of a scan that just started (``[stream]``, docs/streaming.md): the scan the completion
    would describe, with the same dedup key, its parameters reading the live source (``-liveSource``, the
    ``[stream] file_pattern`` file; ``series``: the bridge buffer's series of this scan, ``&series=K``; without the
    buffer, ``started_s``: the scan's start in POSIX s, ``&started=T``) plus ``[stream] values``. Raises
    :class:`ScanBuildError`."""
    info = describe_scan(config, latest, start)
    st = config.stream
    source = st.scan_source(series, started_s)
    values: dict[str, Any] = {"data.live_source": source, **st.values}
    provenance = dict(info.provenance)
    if st.source == "swmr":
        fields = scan_fields(config, latest, start)
        try:
            values["data.file_pattern"] = map_path(st.file_pattern.format(**fields), config.data.path_map)
        except (KeyError, ValueError, IndexError) as exc:
            raise ScanBuildError(f"cannot fill the live file pattern {st.file_pattern!r} from {fields}: "
                                 f"{exc}") from None
        provenance["data.file_pattern"] = dict(source="bridge", value=values["data.file_pattern"],
                                               note=f"the live file, from [stream] file_pattern {st.file_pattern!r}")
    provenance["data.live_source"] = dict(source="bridge", value=source, note="a streaming job, opened at the "
                                                                              "scan's start")
    try:
        params = info.params.replace(values)
    except ParameterError as exc:
        raise ScanBuildError(f"the streaming job's parameters are invalid: {exc}") from None
    return replace(info, params=params, provenance=provenance)


def describe_scan(config: BridgeConfig, latest: Mapping[str, ValueEvent], end: ScanEnd) -> ScanInfo:
    """Build the scan description from the latest PV values; raises :class:`ScanBuildError`."""
    d = config.data
    fields = scan_fields(config, latest, end)
    scan_no_value = fields["scan_number"]
    try:
        pattern = map_path(d.file_pattern.format(**fields), d.path_map)
        label = config.label_format.format(**fields)
        job_id = config.job_id_format.format(**fields)
    except (KeyError, ValueError, IndexError) as exc:
        raise ScanBuildError(f"cannot fill the file pattern/label {d.file_pattern!r} from {fields}: {exc}") from None
    missing = [pv for pv in d.pvs if not text_of(latest, pv)]
    if missing:
        raise ScanBuildError(f"no value for {', '.join(missing)} at the end of the scan")
    meta = metadata_values(config, latest, set(end.disconnected))
    values = dict(meta.values)
    values["data.file_pattern"] = pattern
    values["experiment.job_id"] = _safe_id(job_id)
    provenance = template_provenance(config.template)
    provenance.update(meta.provenance)
    provenance["data.file_pattern"] = dict(
        source="pv", pv=", ".join(pv for pv in (d.path_pv, d.name_pv, d.scan_number_pv) if pv) or d.file_pattern,
        value=pattern, note=f"from the file pattern {d.file_pattern!r}")
    provenance["experiment.job_id"] = dict(source="bridge", value=values["experiment.job_id"],
                                           note=f"from {config.job_id_format!r}")
    try:
        params = config.template.replace(values)
    except ParameterError as exc:
        raise ScanBuildError(f"parameters from the PVs are invalid: {exc}") from None
    scan_number = str(scan_no_value)
    return ScanInfo(config.beamline, scan_number, pattern, dedup_key(config.beamline, scan_number, pattern),
                    label, params, tuple(meta.warnings), tuple(meta.held), provenance)


def template_provenance(template: Parameters) -> dict[str, Any]:
    """``{"group.name": {"source": "template", "value": v}}`` for every value the template sets (differs from the
    defaults)."""
    out: dict[str, Any] = {}
    defaults = Parameters().to_dict()
    for group, fields in template.to_dict().items():
        if not isinstance(fields, dict):
            continue
        for name, value in fields.items():
            if defaults.get(group, {}).get(name) != value:
                out[f"{group}.{name}"] = dict(source="template", value=value)
    return out


def _field_value(latest: Mapping[str, ValueEvent], f: DataField) -> Any:
    """A ``[data] fields`` value: the PV's integer plus its offset, or its text when it is not a number."""
    ev = latest.get(f.pv)
    n = as_int(ev.value) if ev is not None and not isinstance(ev.value, str) else None
    return n + f.offset if n is not None else text_of(latest, f.pv)


def map_path(path: str, path_map: Mapping[str, str]) -> str:
    """Replace the longest matching IOC prefix of ``path`` (whole path components only) by its local prefix."""
    for ioc_prefix in sorted(path_map, key=len, reverse=True):
        base = ioc_prefix.rstrip("/")
        if path == base or path.startswith(base + "/"):
            return path_map[ioc_prefix].rstrip("/") + path[len(base):]
    return path


@dataclass
class MetadataValues:
    """The parameters the metadata PVs give, where each came from, and what went wrong."""

    values: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # a bad PV whose parameter fell back to the template
    held: list[str] = field(default_factory=list)  # a bad PV whose parameter holds the scan


def metadata_values(config: BridgeConfig, latest: Mapping[str, ValueEvent],
                    disconnected: set[str] | None = None) -> MetadataValues:
    """The parameters from the metadata PVs as they were at the edge.

    A PV that was disconnected at the edge, has no usable value, or gives a value outside its range
    (``[metadata.ranges]``) is a problem: for a parameter in ``[metadata] hold`` (default all) the scan is held,
    otherwise the template's value is used and the provenance says why. Never a silent template default.
    """
    m = config.metadata
    down = disconnected or set()
    out = MetadataValues()

    def read(src: PvSource) -> tuple[float | None, str]:
        """(value in SI, problem)"""
        ev = latest.get(src.pv)
        if src.pv in down:
            return None, f"{src.pv} was disconnected at the end of the scan"
        value = as_float(ev.value) if ev else None
        if value is None:
            return None, f"{src.pv} has no numeric value ({'never received' if ev is None else repr(ev.text)})"
        return value * src.scale, ""

    def put(path: str, value: Any, sources: list[PvSource], problem: str, shown: Any = None) -> None:
        if not problem and path in m.ranges:
            lo, hi = m.ranges[path]
            items = value if isinstance(value, tuple) else (value,)
            bad = [x for x in items if not lo <= x <= hi]
            if bad:
                problem = (f"{path} = {_fmt(value)} (from {', '.join(s.pv for s in sources)}"
                           f"{' = ' + str(shown) if shown is not None else ''}) is outside its sane range "
                           f"[{lo:g}, {hi:g}]")
        ioc_times = [latest[s.pv].timestamp for s in sources if s.pv in latest]
        if not problem:
            out.values[path] = value
            out.provenance[path] = dict(source="pv", pv=", ".join(s.pv for s in sources), value=_plain(value),
                                        ioc_timestamp=max(ioc_times) if ioc_times else None)
            return
        if m.holds(path):
            out.held.append(problem)
            out.provenance[path] = dict(source="held", pv=", ".join(s.pv for s in sources), note=problem)
        else:
            out.warnings.append(f"{problem}; the template's {path} is used")
            out.provenance[path] = dict(source="template", pv=", ".join(s.pv for s in sources),
                                        value=_plain(config.template.get(path)),
                                        note=f"{problem}; the template's value is used")

    if m.energy_kev:
        e, problem = read(m.energy_kev)
        if not problem and e is not None and e <= 0:
            problem = f"{m.energy_kev.pv}: energy {e:g} keV is not > 0"
        wavelength = HC_KEV_M / e if e and e > 0 else None
        put("experiment.wavelength_m", wavelength, [m.energy_kev], problem, shown=f"{e:g} keV" if e else None)
    if m.scan_dims:
        dims = [read(s) for s in m.scan_dims]
        problem = "; ".join(pr for _, pr in dims if pr)
        dims_px = tuple(int(round(x)) for x, _ in dims if x is not None) if not problem else None
        put("experiment.scan_dims", dims_px, list(m.scan_dims), problem)
    if m.step_m:
        steps = [read(s) for s in m.step_m]
        problem = "; ".join(pr for _, pr in steps if pr)
        steps_m = tuple(abs(x) for x, _ in steps if x is not None) if not problem else None
        put("experiment.step_m", steps_m, list(m.step_m), problem)
    if m.detector_distance_m:
        z, problem = read(m.detector_distance_m)
        put("experiment.detector_distance_m", z, [m.detector_distance_m], problem)
    for path, src in m.parameters.items():
        ev = latest.get(src.pv)
        if src.pv in down or ev is None:
            put(path, None, [src], f"{src.pv} was disconnected at the end of the scan" if src.pv in down
                else f"{src.pv} has no value (never received)")
        elif src.scale != 1.0:
            v, problem = read(src)
            put(path, v, [src], problem)
        else:
            raw = ev.value
            if hasattr(raw, "__len__") and not isinstance(raw, str):
                raw = raw[0] if len(raw) == 1 else ev.text  # a char waveform is text
            put(path, raw.item() if hasattr(raw, "item") else raw, [src], "")
    for w in out.warnings:
        log.warning(w)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{x:g}" for x in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)

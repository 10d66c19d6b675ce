"""From the PV values at the end of a scan to a scan description, its parameters and its dedup key."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
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

    def to_dict(self) -> dict[str, Any]:
        return dict(beamline=self.beamline, scan_number=self.scan_number, file_pattern=self.file_pattern,
                    dedup_key=self.dedup_key, label=self.label, warnings=list(self.warnings))


def dedup_key(beamline: str, scan_number: str, file_pattern: str) -> str:
    """The natural key of a scan, unique in the jobs table: beamline, scan number and data file."""
    return f"{beamline}:{scan_number}:{file_pattern}"


def describe_scan(config: BridgeConfig, latest: Mapping[str, ValueEvent], end: ScanEnd) -> ScanInfo:
    """Build the scan description from the latest PV values; raises :class:`ScanBuildError`."""
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
    try:
        pattern = map_path(d.file_pattern.format(**fields), d.path_map)
        label = config.label_format.format(**fields)
        job_id = config.job_id_format.format(**fields)
    except (KeyError, ValueError, IndexError) as exc:
        raise ScanBuildError(f"cannot fill the file pattern/label {d.file_pattern!r} from {fields}: {exc}") from None
    missing = [pv for pv in d.pvs if not text_of(latest, pv)]
    if missing:
        raise ScanBuildError(f"no value for {', '.join(missing)} at the end of the scan")
    values, warnings = metadata_values(config, latest)
    values["data.file_pattern"] = pattern
    values["experiment.job_id"] = _safe_id(job_id)
    try:
        params = config.template.replace(values)
    except ParameterError as exc:
        raise ScanBuildError(f"parameters from the PVs are invalid: {exc}") from None
    scan_number = str(scan_no_value)
    return ScanInfo(config.beamline, scan_number, pattern, dedup_key(config.beamline, scan_number, pattern),
                    label, params, tuple(warnings))


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


def metadata_values(config: BridgeConfig, latest: Mapping[str, ValueEvent]) -> tuple[dict[str, Any], list[str]]:
    """``{"group.name": value}`` from the metadata PVs, and a warning for each one that had no usable value."""
    m = config.metadata
    out: dict[str, Any] = {}
    warnings: list[str] = []

    def num(src: PvSource) -> float | None:
        ev = latest.get(src.pv)
        value = as_float(ev.value) if ev else None
        if value is None:
            warnings.append(f"{src.pv}: no numeric value; the template's value is used")
            return None
        return value * src.scale

    if m.energy_kev:
        e = num(m.energy_kev)
        if e is not None and e > 0:
            out["experiment.wavelength_m"] = HC_KEV_M / e
        elif e is not None:
            warnings.append(f"{m.energy_kev.pv}: energy {e} keV is not > 0; the template's wavelength is used")
    if m.scan_dims:
        dims = [num(s) for s in m.scan_dims]
        if None not in dims:
            out["experiment.scan_dims"] = tuple(int(round(x)) for x in dims if x is not None)
    if m.step_m:
        steps = [num(s) for s in m.step_m]
        if None not in steps:
            out["experiment.step_m"] = tuple(abs(x) for x in steps if x is not None)
    if m.detector_distance_m:
        z = num(m.detector_distance_m)
        if z is not None:
            out["experiment.detector_distance_m"] = z
    for path, src in m.parameters.items():
        ev = latest.get(src.pv)
        if ev is None:
            warnings.append(f"{src.pv}: no value; the template's {path} is used")
        elif src.scale != 1.0:
            v = num(src)
            if v is not None:
                out[path] = v
        else:
            raw = ev.value
            if hasattr(raw, "__len__") and not isinstance(raw, str):
                raw = raw[0] if len(raw) == 1 else ev.text  # a char waveform is text
            out[path] = raw
    for w in warnings:
        log.warning(w)
    return out, warnings


def _safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)

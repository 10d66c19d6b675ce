"""EPICS sscan MDA files (XDR, big-endian) -> scan parameters (energy, scan dimensions, step sizes, positions).

No maintained PyPI reader exists for Python >= 3.13 (the synApps ``readMDA.py`` needs ``xdrlib``, removed in
3.13), so the XDR layout is parsed here with :mod:`struct`. Mapping (``docs/io.md``):

- ``experiment.scan_dims`` = (outer rows acquired, inner points) for 2-D scans, (1, points) for 1-D; a row
  counts when its inner scan is complete;
- ``experiment.positions_file`` = the MDA file itself, when the first positioner of each dimension moves a
  length: ``-lf=scan.mda`` reads the positioners' recorded arrays (the measured readbacks when the sscan
  record had a readback PV, else the positions it drove to) in metres, (outer, inner) per point
  (:func:`read_positions_mda`);
- ``experiment.step_m`` = (max - min) / (points - 1) of those positioners (axis 0 = outer), converted from the
  positioner's unit (mm, um, nm, m; no unit: micrometres);
- ``experiment.wavelength_m`` = 12.398419843320026e-10 / E[keV], E from the extra PVs or outer-scan detectors
  whose name or description mentions "energy" (unit keV, or eV), a monochromator's measured one first
  (``mono`` and ``_MON``/``RBV``/``readback``), else from an outer-scan detector with unit keV.

A positioner whose unit is not a length (an angle, an energy) gives no step and no positions.
:func:`apply_mda` applies these under the values the user typed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputDataError

if TYPE_CHECKING:
    from ..parameters import Parameters

HC_KEV_M = 12.398419843320026e-10  # wavelength_m = HC_KEV_M / energy_keV
UNIT_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6, "microns": 1e-6, "nm": 1e-9}
DEFAULT_POSITION_UNIT = "um"


def energy_kev_to_wavelength_m(energy_kev: float) -> float:
    """lambda [m] = 12.398419843320026e-10 / E [keV]."""
    if not energy_kev > 0:
        raise ValueError(f"energy {energy_kev} keV: must be > 0")
    return HC_KEV_M / float(energy_kev)


class _Xdr:
    """Minimal XDR reader over bytes: ints, floats, doubles, strings, fixed arrays."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise EOFError(f"needs {n} bytes at offset {self.pos}, file has {len(self.data)}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def i32(self) -> int:
        return int(struct.unpack(">i", self._take(4))[0])

    def f32(self) -> float:
        return float(struct.unpack(">f", self._take(4))[0])

    def string(self) -> str:
        n = self.i32()
        if n < 0 or n > 1 << 20:
            raise ValueError(f"string length {n} at offset {self.pos - 4}")
        raw = self._take(n)
        self._take((4 - n % 4) % 4)
        return raw.decode("latin-1")

    def counted_string(self) -> str:
        """sscan's string: a length int, then (when nonzero) an XDR string."""
        return self.string() if self.i32() else ""

    def array(self, n: int, kind: str) -> np.ndarray:
        dtype = {"i": ">i4", "f": ">f4", "d": ">f8"}[kind]
        if n < 0:
            raise ValueError(f"negative count {n} at offset {self.pos}")
        raw = self._take(n * np.dtype(dtype).itemsize)
        return np.frombuffer(raw, dtype=dtype).astype(np.int64 if kind == "i" else np.float64)


@dataclass
class MdaPositioner:
    number: int
    name: str
    desc: str
    step_mode: str
    unit: str
    readback_name: str
    readback_desc: str
    readback_unit: str
    data: np.ndarray  # (npts,) for this scan; (rows, npts) when collected over an outer scan

    @property
    def measured(self) -> bool:
        """True when the sscan record read a readback PV (the data are measured positions, not set points)."""
        return bool(self.readback_name.strip())

    @property
    def data_unit(self) -> str:
        """The unit of :attr:`data`: the readback PV's when there is one, else the drive PV's."""
        return (self.readback_unit if self.measured and self.readback_unit.strip() else self.unit).strip()

    def describe(self) -> str:
        """``name (desc) [unit], measured by RBV`` for notes and ``ptychopy`` messages."""
        desc = f" ({self.desc})" if self.desc.strip() else ""
        how = f"measured by {self.readback_name}" if self.measured else "set points (no readback PV)"
        return f"{self.name}{desc} [{self.data_unit or 'no unit'}], {how}"


@dataclass
class MdaDetector:
    number: int
    name: str
    desc: str
    unit: str
    data: np.ndarray


@dataclass
class MdaScan:
    """One sscan record's data; ``lower`` holds the inner scans (one per acquired outer point)."""

    rank: int
    npts: int
    curr_pt: int
    name: str
    time: str
    positioners: list[MdaPositioner]
    detectors: list[MdaDetector]
    lower: list[MdaScan] = field(default_factory=list)


@dataclass
class MdaFile:
    version: float
    scan_number: int
    rank: int
    dimensions: tuple[int, ...]
    scan: MdaScan
    extra: dict[str, tuple[str, str, Any]]  # name -> (description, unit, value)


def _read_scan(buf: bytes, offset: int, depth: int) -> MdaScan:
    u = _Xdr(buf, offset)
    rank, npts, curr = u.i32(), u.i32(), u.i32()
    lower_offsets = [int(x) for x in u.array(npts, "i")] if rank > 1 else []
    u.i32()  # name length; the XDR string follows whatever it says
    name = u.string()
    u.i32()  # time length
    time = u.string()
    n_pos, n_det, n_trig = u.i32(), u.i32(), u.i32()
    pos_meta = [(u.i32(), [u.counted_string() for _ in range(7)]) for _ in range(n_pos)]
    det_meta = [(u.i32(), [u.counted_string() for _ in range(3)]) for _ in range(n_det)]
    for _ in range(n_trig):
        u.i32()
        u.counted_string()
        u.f32()
    positioners = [MdaPositioner(num, t[0], t[1], t[2], t[3], t[4], t[5], t[6], u.array(npts, "d"))
                   for num, t in pos_meta]
    detectors = [MdaDetector(num, t[0], t[1], t[2], u.array(npts, "f")) for num, t in det_meta]
    scan = MdaScan(rank, npts, curr, name, time, positioners, detectors)
    if rank > 1 and depth > 1:
        scan.lower = [_read_scan(buf, off, depth - 1) for off in lower_offsets[:curr] if off > 0]
    return scan


def _read_extra(buf: bytes, offset: int) -> dict[str, tuple[str, str, Any]]:
    u = _Xdr(buf, offset)
    out: dict[str, tuple[str, str, Any]] = {}
    for _ in range(u.i32()):
        name, desc = u.counted_string(), u.counted_string()
        kind = u.i32()
        unit, count = "", 0
        if kind != 0:
            count = u.i32()
            unit = u.counted_string()
        value: Any
        if kind == 0:  # DBR_STRING
            value = u.counted_string()
        elif kind == 32:  # DBR_CTRL_CHAR, one int per character
            chars = u.array(count, "i")
            value = "".join(chr(int(c)) for c in chars).split("\0", 1)[0]
        elif kind in (29, 33):  # DBR_CTRL_SHORT, DBR_CTRL_LONG
            value = u.array(count, "i")
        elif kind == 30:  # DBR_CTRL_FLOAT
            value = u.array(count, "f")
        elif kind == 34:  # DBR_CTRL_DOUBLE
            value = u.array(count, "d")
        else:  # unknown type: the rest cannot be located
            break
        out[name] = (desc, unit, value)
    return out


def read_mda(path: Path | str, max_rank: int = 2) -> MdaFile:
    """Parse an MDA file (inner scans up to ``max_rank`` dimensions); :class:`InputDataError` if bad."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise InputDataError(f"file {path}: MDA file cannot be read: {exc.strerror or exc}") from exc
    try:
        u = _Xdr(buf)
        version, number, rank = u.f32(), u.i32(), u.i32()
        if not 0 < rank < 16 or not 0 < version < 100:
            raise ValueError(f"version {version:g}, rank {rank}: not an MDA header")
        dims = tuple(int(x) for x in u.array(rank, "i"))
        u.i32()  # isRegular
        extra_offset = u.i32()
        scan = _read_scan(buf, u.pos, max_rank)
        extra = _read_extra(buf, extra_offset) if extra_offset > 0 else {}
    except (EOFError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise InputDataError(f"file {path}: not a readable MDA file (truncated or corrupt?): {exc}") from exc
    return MdaFile(float(version), number, rank, dims, scan, extra)


def _scalar(value: Any) -> float | None:
    arr = np.asarray(value, dtype=np.float64).ravel() if not isinstance(value, str) else np.array([])
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


def _energy_kev(desc: str, unit: str, value: Any) -> float | None:
    e = _scalar(value)
    if e is None or e <= 0:
        return None
    return e / 1000.0 if unit.strip().lower() == "ev" else e


_MEASURED = re.compile(r"(_mon\b|rbv|readback)")


def _energy_preference(name: str, desc: str) -> int:
    """Higher for a monochromator's and for a measured energy (see the module docstring)."""
    text = f"{name} {desc}".lower()
    return 2 * ("mono" in text) + bool(_MEASURED.search(text))


def find_energy_kev(mda: MdaFile) -> float | None:
    """Photon energy (keV) from the extra PVs or the outer scan's detectors (see module docstring)."""
    acquired = max(mda.scan.curr_pt, 1)
    candidates = [(name, desc, unit, value) for name, (desc, unit, value) in mda.extra.items()]
    candidates += [(d.name, d.desc, d.unit, d.data[:acquired]) for d in mda.scan.detectors]
    energies = [c for c in candidates if "energy" in f"{c[0]} {c[1]}".lower()]
    energies.sort(key=lambda c: -_energy_preference(c[0], c[1]))  # stable: file order within a rank
    for _, desc, unit, value in energies:
        e = _energy_kev(desc, unit, value)
        if e is not None:
            return e
    for d in mda.scan.detectors:
        if d.unit.strip().lower() == "kev":
            return _energy_kev(d.desc, d.unit, d.data[:acquired])
    return None


def _unit_m(p: MdaPositioner) -> float | None:
    """Metres per unit of the positioner's data; None when its unit is not a length (no unit: micrometres)."""
    unit = (p.data_unit or DEFAULT_POSITION_UNIT).lower()
    return UNIT_M.get(unit)


@dataclass(frozen=True)
class MdaPositions:
    """The scan's positions from its positioners' recorded arrays: ``positions_m`` ``(rows*cols, 2)`` metres
    (outer, inner) in scan order; ``measured`` when every positioner used had a readback PV."""

    positions_m: np.ndarray
    rows: int
    cols: int
    positioners: tuple[MdaPositioner, ...]  # outer first (one for a 1-D scan)

    @property
    def measured(self) -> bool:
        return all(p.measured for p in self.positioners)


def _complete_rows(outer: MdaScan) -> int:
    """Outer points whose inner scan finished (an abort can leave the last one part-done)."""
    rows = 0
    for inner in outer.lower[: outer.curr_pt]:
        if inner.curr_pt < inner.npts:
            break
        rows += 1
    return rows


def _check_rank(mda: MdaFile, path: Path | str) -> None:
    if mda.rank > 2:
        raise InputDataError(f"file {path}: an MDA scan of rank {mda.rank} "
                             f"({' x '.join(map(str, mda.dimensions))}); ptychopy reads 1-D and 2-D scans")


def mda_positions(mda: MdaFile) -> MdaPositions | None:
    """The positions of the acquired points (see :class:`MdaPositions`), or None when the scan has no
    positioner or the first positioner of a dimension moves something other than a length (1-D and 2-D
    scans: see :func:`read_positions_mda` for the check)."""
    outer = mda.scan
    if outer.lower:
        rows = _complete_rows(outer)
        inners = outer.lower[:rows]
        if rows == 0 or not outer.positioners or not inners[0].positioners:
            return None
        cols = inners[0].npts
        p_out, p_in = outer.positioners[0], inners[0].positioners[0]
        scale_out, scale_in = _unit_m(p_out), _unit_m(p_in)
        if scale_out is None or scale_in is None:
            return None
        slow = np.repeat(np.asarray(p_out.data[:rows], dtype=np.float64) * scale_out, cols)
        fast = np.concatenate([np.asarray(s.positioners[0].data[:cols], dtype=np.float64) for s in inners])
        positions = np.stack([slow, fast * scale_in], axis=1)
        return MdaPositions(positions, rows, cols, (p_out, p_in))
    if not outer.positioners or outer.curr_pt < 1:
        return None
    p = outer.positioners[0]
    scale = _unit_m(p)
    if scale is None:
        return None
    fast = np.asarray(p.data[: outer.curr_pt], dtype=np.float64) * scale
    return MdaPositions(np.stack([np.zeros_like(fast), fast], axis=1), 1, outer.curr_pt, (p,))


def read_positions_mda(path: Path | str) -> np.ndarray:
    """``-lf=scan.mda``: the positions the MDA file recorded, ``(N, 2)`` float64 metres (outer, inner) per
    point; :class:`InputDataError` when it records none in a length unit."""
    mda = read_mda(path)
    _check_rank(mda, path)
    found = mda_positions(mda)
    if found is None:
        raise InputDataError(f"file {path}: the MDA file records no positions in a length unit (its first "
                             f"positioner of each dimension must move m, mm, um or nm)")
    if not np.isfinite(found.positions_m).all():
        bad = int(np.flatnonzero(~np.isfinite(found.positions_m).all(axis=1))[0])
        raise InputDataError(f"file {path}: position {bad} is not a finite number")
    return found.positions_m


def describe_mda(mda: MdaFile) -> list[str]:
    """Lines for a person: the scan, its positioners (name, unit, readback PV) and its detectors."""
    lines = [f"MDA scan {mda.scan_number}: rank {mda.rank}, {' x '.join(map(str, mda.dimensions))} points planned"]
    scans = [mda.scan] + ([mda.scan.lower[0]] if mda.scan.lower else [])
    for level, scan in zip(("outer", "inner") if len(scans) > 1 else ("scan",), scans, strict=False):
        for p in scan.positioners:
            lines.append(f"{level} positioner {p.describe()}")
        if scan.detectors:
            dets = ", ".join(f"{d.name}{' [' + d.unit + ']' if d.unit.strip() else ''}" for d in scan.detectors)
            lines.append(f"{level} detectors ({len(scan.detectors)}): {dets}")
    return lines


def _step_m(p: MdaPositioner, n: int) -> float | None:
    data = np.asarray(p.data, dtype=np.float64).ravel()[:n]
    data = data[np.isfinite(data)]
    scale = _unit_m(p)
    if data.size < 2 or scale is None:
        return None
    step = (data.max() - data.min()) / (data.size - 1) * scale
    return float(step) if step > 0 else None


def mda_parameters(path: Path | str) -> dict[str, Any]:
    """``{"experiment.scan_dims": (rows, cols), "experiment.step_m": (s0, s1), "experiment.positions_file":
    path, "experiment.wavelength_m": l}`` with the entries the MDA file supports (metres)."""
    mda = read_mda(path)
    _check_rank(mda, path)
    out: dict[str, Any] = {}
    outer = mda.scan
    inner = outer.lower[0] if outer.lower else None
    if inner is not None:
        rows, cols = _complete_rows(outer), inner.npts
    else:
        rows, cols = 1, outer.curr_pt
    if rows > 0 and cols > 0:
        out["experiment.scan_dims"] = (int(rows), int(cols))
    steps: list[float | None] = [None, None]
    if inner is not None:
        if outer.positioners:
            steps[0] = _step_m(outer.positioners[0], rows)
        if inner.positioners:
            steps[1] = _step_m(inner.positioners[0], inner.curr_pt)
    elif outer.positioners:
        steps[1] = _step_m(outer.positioners[0], outer.curr_pt)
        steps[0] = steps[1]
    if steps[0] is not None and steps[1] is not None:
        out["experiment.step_m"] = (steps[0], steps[1])
    if mda_positions(mda) is not None:
        out["experiment.positions_file"] = str(path)
    energy = find_energy_kev(mda)
    if energy is not None:
        out["experiment.wavelength_m"] = energy_kev_to_wavelength_m(energy)
    return out


def apply_mda(params: Parameters, path: Path | str, explicit_paths: Iterable[str] = ()) -> Parameters:
    """``params`` with the MDA file's values, except those in ``explicit_paths`` (``"group.name"`` paths or
    command-string flags such as ``"lambda"``), which the user set and which win."""
    from ..parameters import spec_for_flag

    explicit = set()
    for item in explicit_paths:
        if "." in item:
            explicit.add(item)
        else:
            spec = spec_for_flag(item)
            if spec is not None:
                explicit.add(spec.path)
    values = {k: v for k, v in mda_parameters(path).items() if k not in explicit}
    return params.replace(values) if values else params

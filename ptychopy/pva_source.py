"""An areaDetector NTNDArray stream over pvAccess (p4p) as a live source: ``-liveSource=pva://IMAGE_PV?...``.

The address names the image PV (areaDetector's NDPluginPva, e.g. ``13SIM1:Pva1:Image``) and, in its query, the
scan's other PVs (each optional):

- ``scan=PREFIX``: shorthand for ``positions=PREFIXPositions&planned=PREFIXPlanned&status=PREFIXStatus``;
- ``positions=PV``: an NTTable with columns ``uniqueId``, ``row_m``, ``col_m`` posted as frames are taken (one or
  more rows per post); each frame waits for the row of its uniqueId (without it, the planned position);
- ``attrs=ROW,COL``: or the position from two NDAttributes of each frame (e.g. motor readbacks), metres;
- ``scale=S``: multiply the positions (table or attributes) by S to get metres (e.g. 1e-6 for micrometres);
- ``planned=PV``: an NTTable with columns ``row_m``, ``col_m``: the planned scan (without it, the parameters');
- ``status=PV``: an NTScalar or NTEnum: 0 acquiring, 1 ended, 2 aborted (without it, the scan ends once all
  planned frames arrived; a scan stopped early shows up as a stall);
- ``uid0=K``: the uniqueId of scan point 0 (default 1: areaDetector counts from 1 once ``ArrayCounter`` is reset
  to 0 before the scan);
- ``buffer=PV&buffer_at=HOST:PORT``: the EPICS bridge's buffer of the scan's first frames
  (:mod:`ptychopy.pva_buffer`; the bridge adds both to the jobs it opens): when this job's first frame is not the
  scan's first, the frames that came before it are asked for there, on a thread of its own (a poll never waits for
  the bridge; the job's own frames are held back meanwhile), and taken first;
- ``series=K`` (with ``buffer=``): the bridge's series (scan) this job belongs to, given to every job the bridge
  opens (the first at the scan's start: the series its frames go to; a replacement mid-scan: the current one): it
  asks the buffer whatever its first frame, waits for its series to begin there, and fails if that frame is of a
  later scan (its own ended before it subscribed, e.g. queued behind other jobs) instead of taking it;
- ``started=T`` (with ``status=``): the POSIX time of this job's scan's start (the bridge's ``BUSY`` rise, given to
  the jobs it opens without a buffer): the scan's status PV says when it ended and when a later one began, so a job
  that subscribes after its scan ended (queued behind other jobs) fails naming both scans instead of taking the
  next scan's frames (:meth:`PvaSource.later_scan`); a job that took frames of its own scan ends with it and takes
  none of the next one's.

A frame is ``(uniqueId - uid0)``-th scan point. The value the image PV holds when the monitor connects is not taken
(it may be the previous scan's last frame): start the reconstruction before the scan, or give ``buffer=``. The
value the positions table holds at connect is kept aside: its rows are taken once the next rows continue its
uniqueIds (a job that subscribed mid-scan: they are this scan's, e.g. its second frame's), and let go when they
begin again (the scan before's, whose uniqueIds this scan repeats). A frame whose positions row never comes is
dropped, named by its uniqueId (:attr:`PvaSource.dropped_detail`), once the scan ended and nothing came for
``end_grace_s`` (or, with no end on the status PV, once nothing came for ``end_grace_s`` and the feed's
``-liveStall`` ends the stream), never waited for forever. The scan's end
or abort counts once the status was seen acquiring (or a frame arrived), and only after every planned frame
arrived or no frame came for ``end_grace_s`` (frames posted just before the status change are still on their
way: p4p delivers each PV's updates on its own queue). Frames never received (gaps in uniqueId) are counted as
dropped.

Compressed frames (``codec.name`` not empty: NDPluginCodec's lz4, blosc, jpeg...) are refused with an error
naming the codec; switch the codec plugin off for the PVA plugin's input.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from reconstruction.live import ABORTED, ACQUIRING, ENDED, FrameBatch, LiveSourceError, PlannedScan

SCHEME = "pva://"
STATUS_CODES = {0: ACQUIRING, 1: ENDED, 2: ABORTED}
QUERY_KEYS = ("scan", "positions", "attrs", "scale", "planned", "status", "uid0", "buffer", "buffer_at", "series",
              "started")
# with started=T: a status 0 (acquiring) stamped more than this after T is a later scan's start (the status may be
# posted a little after the scan's BUSY, by another IOC whose clock differs by a few ms)
START_SLACK_S = 1.0


@dataclass(frozen=True)
class PvaAddress:
    """What ``-liveSource=pva://...`` names (see the module docstring)."""

    image: str
    positions: str | None = None
    attrs: tuple[str, str] | None = None
    scale: float = 1.0
    planned: str | None = None
    status: str | None = None
    uid0: int = 1
    buffer: str | None = None  # the bridge's RPC PV holding the scan's first frames (ptychopy.pva_buffer)
    buffer_at: str | None = None  # "HOST:PORT": its pvAccess server
    series: int | None = None  # the buffer's series (scan) the job's frames must belong to (every job the bridge opens)
    started: float | None = None  # POSIX s: the scan's start (the bridge's BUSY rise), with status=: its window

    def pvs(self) -> list[str]:
        return [pv for pv in (self.image, self.positions, self.planned, self.status) if pv]


MAX_PV_NAME_CHARS = 256  # EPICS record names are at most 60; pvAccess names a little longer, never kilobytes


def _check_pv_name(name: str, what: str, where: str) -> None:
    """LiveSourceError naming ``what`` unless ``name`` is 1..MAX_PV_NAME_CHARS printable ASCII without spaces."""
    shown = repr(name) if len(name) <= 40 else f"{name[:40]!r}..."
    if len(name) > MAX_PV_NAME_CHARS:
        raise LiveSourceError(f"{where}: {what} {shown} is {len(name)} characters long; a PV name has at most "
                              f"{MAX_PV_NAME_CHARS}")
    if not name or not all("!" <= c <= "~" for c in name):
        raise LiveSourceError(f"{where}: {what} {shown} is not a PV name (printable ASCII without spaces)")


def parse_address(text: str) -> PvaAddress:
    """``pva://IMAGE?scan=P&positions=PV&attrs=R,C&scale=S&planned=PV&status=PV&uid0=K`` -> :class:`PvaAddress`;
    a clear error naming the part that is wrong (PV names: printable ASCII, at most ``MAX_PV_NAME_CHARS``)."""
    where = f"-liveSource={text}" if len(text) <= 80 else f"-liveSource={text[:80]}..."
    if not text.startswith(SCHEME):
        raise LiveSourceError(f"{where}: a pvAccess source starts with {SCHEME}")
    image, _, query = text[len(SCHEME):].partition("?")
    if not image:
        raise LiveSourceError(f"{where}: no image PV after {SCHEME}")
    try:
        fields = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise LiveSourceError(f"{where}: the query '{query}' is not key=value&...: {exc}") from None
    unknown = sorted(set(fields) - set(QUERY_KEYS))
    if unknown:
        raise LiveSourceError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(QUERY_KEYS)}")
    one = {k: v[-1] for k, v in fields.items()}
    _check_pv_name(image, "the image PV", where)
    for key in ("scan", "positions", "planned", "status", "buffer"):
        if one.get(key):
            _check_pv_name(one[key], f"{key}=", where)
    scan = one.get("scan")
    pv = {k: one.get(k) or (f"{scan}{k.capitalize()}" if scan else None) for k in ("positions", "planned", "status")}
    attrs = None
    if one.get("attrs"):
        parts = [p.strip() for p in one["attrs"].split(",")]
        if len(parts) != 2 or not all(parts):
            raise LiveSourceError(f"{where}: attrs={one['attrs']}: expected two NDAttribute names ROW,COL")
        attrs = (parts[0], parts[1])
        if one.get("positions"):
            raise LiveSourceError(f"{where}: give the positions either as a table (positions=) or as attributes "
                                  "(attrs=), not both")
        pv["positions"] = None
    try:
        scale = float(one.get("scale") or 1.0)
        uid0 = int(one.get("uid0") or 1)
    except ValueError as exc:
        raise LiveSourceError(f"{where}: scale/uid0: {exc}") from None
    if not np.isfinite(scale) or scale <= 0:
        raise LiveSourceError(f"{where}: scale={scale}: expected a positive number")
    buffer, buffer_at = one.get("buffer") or None, one.get("buffer_at") or None
    if bool(buffer) != bool(buffer_at):
        raise LiveSourceError(f"{where}: buffer= and buffer_at= go together (the bridge's PV and its HOST:PORT)")
    if buffer_at:
        from .pva_buffer import parse_host_port

        parse_host_port(buffer_at, f"{where}: buffer_at=")
    series = None
    if one.get("series"):
        if not buffer or not one["series"].isascii() or not one["series"].isdigit() or len(one["series"]) > 18:
            raise LiveSourceError(f"{where}: series={one['series']}: expected the bridge buffer's series number "
                                  "(digits), with buffer=")
        series = int(one["series"])
    started = None
    if one.get("started"):
        try:
            started = float(one["started"])
        except ValueError:
            started = float("nan")
        if not np.isfinite(started) or started <= 0:
            raise LiveSourceError(f"{where}: started={one['started']}: expected the scan's start time (POSIX "
                                  "seconds)")
        if not pv["status"]:
            raise LiveSourceError(f"{where}: started= needs the scan's status PV (status= or scan=): it says when "
                                  "the scan ended and the next began")
    return PvaAddress(image, pv["positions"], attrs, scale, pv["planned"], pv["status"], uid0, buffer, buffer_at,
                      series, started)


def decode_frame(v: Any, name: str) -> tuple[int, np.ndarray, dict[str, Any]]:
    """``(uniqueId, frame (rows, cols), attributes)`` of one raw NTNDArray ``Value`` from PV ``name``.

    areaDetector's ``dimension[0]`` is the fastest axis (columns). Compressed frames are refused."""
    uid = int(v["uniqueId"])
    codec = str(v["codec.name"]) if "codec" in v else ""
    if codec:
        raise LiveSourceError(f"PV {name}, uniqueId {uid}: frames compressed with codec '{codec}'; this source reads "
                              "uncompressed NTNDArrays only: switch off the codec plugin (NDPluginCodec) feeding "
                              "the PVA plugin")
    data = v["value"]
    dims = [int(d["size"]) for d in v["dimension"]]
    if data is None or len(dims) != 2:
        raise LiveSourceError(f"PV {name}, uniqueId {uid}: {len(dims)} dimensions "
                              f"{dims}; expected a 2-D (mono) detector frame")
    if data.size != dims[0] * dims[1]:
        raise LiveSourceError(f"PV {name}, uniqueId {uid}: {data.size} values for dimensions {dims}")
    attrs = {str(a["name"]): a["value"] for a in v["attribute"]} if "attribute" in v else {}
    return uid, data.reshape(dims[1], dims[0]), attrs


def table_columns(v: Any, columns: tuple[str, ...], name: str) -> list[np.ndarray]:
    """The named columns of an NTTable ``Value`` (raw) from PV ``name``."""
    value = v["value"]
    have = list(value.keys()) if hasattr(value, "keys") else []
    missing = [c for c in columns if c not in have]
    if missing:
        raise LiveSourceError(f"PV {name}: an NTTable without column(s) {', '.join(missing)} (has {', '.join(have)}); "
                              f"expected {', '.join(columns)}")
    out = [np.asarray(value[c]) for c in columns]
    if len({c.shape for c in out}) != 1:
        raise LiveSourceError(f"PV {name}: columns {', '.join(columns)} of different lengths")
    return out


def stamp_of(v: Any) -> float:
    """The ``timeStamp`` of a raw NT ``Value`` in POSIX seconds (0.0 when it has none)."""
    if "timeStamp" not in v:
        return 0.0
    return float(v["timeStamp.secondsPastEpoch"]) + 1e-9 * float(v["timeStamp.nanoseconds"])


def utc_text(t: float) -> str:
    """POSIX seconds as ``2026-12-07 14:25:03.120 UTC`` (for messages)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d} UTC"


def status_code(v: Any) -> int:
    """The integer of an NTScalar or NTEnum (its index) update ``v``: a scan status 0, 1 or 2."""
    value = v["value"]
    if hasattr(value, "keys") and "index" in value:  # NTEnum
        return int(value["index"])
    return int(value)


class PvaSource:
    """A :class:`~reconstruction.live.source.LiveSource` over pvAccess (see the module docstring).

    ``fallback_plan``: the plan of the parameters (used without a ``planned`` PV); ``connect_s``: how long to wait
    for the PVs to connect; ``queue_size``: the pvAccess monitor queue of the image PV (frames the client holds
    before the server squashes updates); ``max_pending``: frames held here before the feed takes them (more is an
    error: the feed's buffer bound, one step earlier); ``ctx``: a p4p client Context (default: a new one from the
    environment's EPICS_PVA_* variables); ``stop``: asked every 10 ms while the PVs connect and the planned scan
    is read (all within ``connect_s``), True ends that wait with :class:`LiveSourceError` (the wait for the first
    frame is the run's: ``StreamingRun.run``'s ``idle``).
    """

    def __init__(self, address: PvaAddress | str, fallback_plan: PlannedScan, *, connect_s: float = 10.0,
                 queue_size: int = 1000, max_pending: int = 100_000, end_grace_s: float = 1.0, ctx: Any = None,
                 stop: Callable[[], bool] | None = None):
        from p4p.client.thread import Context

        self.address = parse_address(address) if isinstance(address, str) else address
        a = self.address
        self.name = f"PV {a.image} (pvAccess)"
        self.end_grace_s = float(end_grace_s)
        self.max_pending = int(max_pending)
        self._ctx = ctx if ctx is not None else Context("pva", nt=False)
        self._own_ctx = ctx is None
        self._lock = threading.Lock()
        self._subs: list[Any] = []
        self._frames: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # (uid, frame, position or None)
        self._positions: dict[int, np.ndarray] = {}  # uid -> (2,) metres, from the positions table
        # the positions table's value when its monitor (re)connected: this scan's rows, or the scan before's; taken
        # once the next rows show which (_on_positions: they continue its uniqueIds, or begin again)
        self._connect_rows: dict[int, np.ndarray] = {}
        self._last_row_at = 0.0  # monotonic s: the newest positions row
        self._no_row: list[int] = []  # uniqueIds of frames given up: their positions row never came (state())
        self._error: Exception | None = None
        self._status = ACQUIRING
        self._status_armed = False  # an end/abort counts once acquiring was seen (or a frame came)
        self._end_seen_at: float | None = None
        self._connected: dict[str, bool] = {}
        self._skip_first: dict[str, bool] = {}
        self._last_frame_at = 0.0
        self.frames_in = 0
        self.max_index = -1
        self._first_uid: int | None = None  # this job's first frame: where its own monitor began
        self._held_done = not self.address.buffer  # the frames before it taken in (or nothing to ask)
        self._fetching = False  # the frames before it are being asked for, on a thread of their own
        self._closing = threading.Event()  # close(): a fetch under way stops before its next chunk
        self.frames_from_buffer = 0  # frames the bridge held for this job (posted before it subscribed)
        self._planned_value: Any = None  # the planned scan's table, once read
        # with started=: the status PV's stamp of a later scan's start (its frames, stamped from then on, are not
        # this job's scan's), and how many such frames were refused
        self.later_scan_at: float | None = None
        self.later_scan_frames = 0
        self._first_stamp = 0.0  # the NTNDArray timeStamp of this job's first frame (POSIX s)
        try:
            deadline = time.monotonic() + float(connect_s)
            request = f"field()record[queueSize={int(queue_size)},pipeline=true]"
            if a.planned:  # read through a monitor (its first update) so that the wait can be stopped
                self._subs.append(self._ctx.monitor(a.planned, self._on_planned))
            for pv, cb in ((a.status, self._on_status), (a.positions, self._on_positions),
                           (a.image, self._on_frame)):
                if pv:
                    self._skip_first[pv] = pv != a.status  # a frame/position present at connect is old
                    self._subs.append(self._ctx.monitor(pv, self._guard(pv, cb), request=request,
                                                        notify_disconnect=True))
            self._wait_connected(float(connect_s), deadline, stop)
            self._planned = self._plan(fallback_plan)
            self._seen = np.zeros(self._planned.n_positions, dtype=bool)
        except Exception:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------------------------------------------
    def _plan(self, fallback: PlannedScan) -> PlannedScan:
        pv = self.address.planned
        if not pv:
            return PlannedScan(fallback.positions_m, None, fallback.origin)
        row, col = table_columns(self._planned_value, ("row_m", "col_m"), pv)
        planned = np.stack([row, col], axis=1).astype(np.float64) * self.address.scale
        if planned.shape[0] == 0 or not np.all(np.isfinite(planned)):
            raise LiveSourceError(f"PV {pv} (planned scan): {planned.shape[0]} points or values not finite; "
                                  "expected finite (N, 2) positions")
        return PlannedScan(planned, None, f"PV {pv}")

    def _missing(self) -> list[str]:
        """The PVs not connected yet (the planned scan: not read yet), in :meth:`PvaAddress.pvs` order."""
        a = self.address
        with self._lock:
            return [f"PV {pv} (planned scan)" if pv == a.planned else f"PV {pv}" for pv in a.pvs()
                    if (self._planned_value is None if pv == a.planned else not self._connected.get(pv))]

    def _wait_connected(self, timeout_s: float, deadline: float, stop: Callable[[], bool] | None) -> None:
        """Until every PV is connected and the planned scan read, or ``deadline`` (monotonic s; ``timeout_s``
        after the start) passes, or ``stop()`` says True (asked every 10 ms): the last two raise
        :class:`LiveSourceError` naming the PVs still missing."""
        while True:
            missing = self._missing()
            if not missing:
                return
            if stop is not None and stop():
                raise LiveSourceError(f"{self.name}: the wait for {', '.join(missing)} was stopped")
            if time.monotonic() >= deadline:
                raise LiveSourceError(f"{', '.join(missing)}: not connected within {timeout_s:g} s (-liveStall); "
                                      "check the name and EPICS_PVA_ADDR_LIST")
            time.sleep(0.01)

    # -- p4p callbacks (its worker thread) ----------------------------------------------------------------------
    def _guard(self, pv: str, cb: Any) -> Any:
        def handle(update: Any) -> None:
            if isinstance(update, Exception):
                with self._lock:
                    self._connected[pv] = False
                    self._skip_first[pv] = pv != self.address.status
                return
            with self._lock:
                self._connected[pv] = True
                skip, self._skip_first[pv] = self._skip_first.get(pv, False), False
            if skip and pv != self.address.positions:
                return
            try:
                if skip:
                    self._on_positions_at_connect(update)
                else:
                    cb(update)
            except Exception as exc:
                self._fail(exc)
        return handle

    def _on_planned(self, v: Any) -> None:
        if not isinstance(v, Exception):
            with self._lock:
                if self._planned_value is None:
                    self._planned_value = v  # the scan's plan as it is now; later changes are not followed

    def _attr_position(self, uid: int, attrs: dict[str, Any]) -> np.ndarray | None:
        """The position (2,) metres from the frame's NDAttributes (``attrs=``), None without them."""
        a = self.address
        if a.attrs is None:
            return None
        try:
            position = np.array([float(attrs[a.attrs[0]]), float(attrs[a.attrs[1]])]) * a.scale
        except (KeyError, TypeError, ValueError):
            position = np.array([np.nan, np.nan])
        if not np.all(np.isfinite(position)):
            raise LiveSourceError(f"PV {a.image}, uniqueId {uid}: NDAttributes {a.attrs[0]}, {a.attrs[1]} "
                                  f"missing or not numbers (has {', '.join(sorted(attrs)) or 'none'})")
        return position

    def _on_frame(self, v: Any) -> None:
        a = self.address
        uid, frame, attrs = decode_frame(v, a.image)
        position = self._attr_position(uid, attrs)
        with self._lock:
            if self.later_scan_at is not None and stamp_of(v) >= self.later_scan_at:
                self.later_scan_frames += 1  # the next scan's: this job's scan is over (later_scan)
                return
            if self._first_uid is None:
                self._first_uid, self._first_stamp = uid, stamp_of(v)
            if len(self._frames) >= self.max_pending:
                raise LiveSourceError(f"{self.name}, uniqueId {uid}: {self.max_pending} frames waiting to be taken "
                                      "(-liveBuffer); the reconstruction fell behind the detector")
            self._frames.append((uid, frame, position))  # a view of the update's immutable buffer: no copy
            self._status_armed = True
            self._last_frame_at = time.monotonic()

    def _rows_of(self, v: Any) -> dict[int, np.ndarray]:
        """uniqueId -> position (2,) metres of a positions table update ``v`` (``scale=`` applied)."""
        uid, row, col = table_columns(v, ("uniqueId", "row_m", "col_m"), str(self.address.positions))
        if uid.ndim != 1 or uid.size == 0:  # an empty table (a server's initial value; p4p: None columns)
            return {}
        pos = np.stack([row, col], axis=1).astype(np.float64) * self.address.scale
        return dict(zip(uid.astype(np.int64).tolist(), pos, strict=True))

    def _on_positions_at_connect(self, v: Any) -> None:
        """The value the positions table holds when its monitor (re)connects: the newest rows posted before, of this
        scan (the job subscribed mid-scan: a frame still to come may need them, e.g. its second) or of the scan before
        (their uniqueIds repeat in this scan): kept aside until the next rows tell which (:meth:`_on_positions`)."""
        rows = self._rows_of(v)
        with self._lock:
            self._connect_rows = rows

    def _on_positions(self, v: Any) -> None:
        rows = self._rows_of(v)
        with self._lock:
            self._positions.update(rows)
            if rows:
                self._last_row_at = time.monotonic()
            if rows and self._connect_rows:
                # the series rule: rows that continue past the value at connect (every uniqueId above its) show it
                # was this scan's; a uniqueId at or below one of its begins again (a later scan): it was the scan
                # before's, never taken (its uniqueIds are this scan's too)
                if min(rows) > max(self._connect_rows):
                    for u, p in self._connect_rows.items():
                        self._positions.setdefault(u, p)
                self._connect_rows = {}

    def _on_status(self, v: Any) -> None:
        code = status_code(v)
        if code not in STATUS_CODES:
            raise LiveSourceError(f"PV {self.address.status}: status {code}; expected 0 (acquiring), 1 (ended) or "
                                  "2 (aborted)")
        with self._lock:
            if self.address.started is not None and self.later_scan(STATUS_CODES[code], stamp_of(v)):
                return
            self._status = STATUS_CODES[code]
            if self._status == ACQUIRING:
                self._status_armed = True
                self._end_seen_at = None
            elif self._end_seen_at is None:
                self._end_seen_at = time.monotonic()

    def later_scan(self, status: str, stamp: float) -> bool:
        """With ``started=T``: whether the status update ``status`` stamped ``stamp`` (POSIX s) is not of this job's
        scan (under the lock). A status 0 stamped after ``T + START_SLACK_S`` is a later scan's start: from then on
        frames stamped at or after it are refused (:attr:`later_scan_frames`) and this job's scan counts as ended
        (as the status said before, else ended); had the job taken none of its scan's frames, its scan ended before
        it subscribed: :class:`LiveSourceError` naming both scans' starts. An end or abort stamped at or after
        ``T`` before the job saw its scan acquiring or any frame: the scan ended before the job subscribed (the
        same error). Otherwise False: the update is this scan's (or the one before, ignored as before)."""
        started = float(self.address.started or 0.0)
        mine = f"this job's scan (started {utc_text(started)}, its start as the bridge saw it)"
        if status == ACQUIRING and stamp > started + START_SLACK_S:
            if self.later_scan_at is None:
                self.later_scan_at = stamp
            if self._first_uid is None or self._first_stamp >= stamp:  # none of its own (or the later's first)
                raise LiveSourceError(
                    f"{self.name}: {mine} ended before the job subscribed: PV {self.address.status} says a later "
                    f"scan started {utc_text(stamp)}; that scan's frames are not this job's and are refused (the "
                    "job was queued past its scan's end; the bridge queues the scan's batch job at its end)")
            if self._end_seen_at is None:
                self._status, self._end_seen_at = ENDED, time.monotonic()
            return True
        if status != ACQUIRING and stamp >= started and not self._status_armed:
            raise LiveSourceError(
                f"{self.name}: {mine} ended before the job subscribed: PV {self.address.status} says it "
                f"{'was aborted' if status == ABORTED else 'ended'} {utc_text(stamp)}; no frame of it can come (the "
                "job was queued past its scan's end: the next scan's frames are not taken; the bridge queues the "
                "scan's batch job at its end)")
        return self.later_scan_at is not None  # this scan is over: nothing after the later scan's start counts

    # -- the LiveSource interface -------------------------------------------------------------------------------
    @property
    def planned(self) -> PlannedScan:
        return self._planned

    def poll(self) -> FrameBatch | None:
        """The frames that arrived (with their positions, when a positions PV is given) since the last call, in
        arrival order, up to the first frame of another shape (returned by the next call). With ``buffer=``, the
        frames before this job's first are asked for on a thread of their own (:meth:`_take_held`); until they are
        in, this job's own frames are held back (None: :meth:`holding_back`), so that every frame still comes in
        the detector's order, and the poll never waits for the bridge; a failed fetch raises here."""
        with self._lock:
            if self._error is not None:
                raise self._error
            first, held_done, fetching = self._first_uid, self._held_done, self._fetching
        if not held_done:
            if first is not None and not fetching:
                self._take_held(first)
            with self._lock:
                if not self._held_done:
                    return None
        with self._lock:
            ready = self._ready()
        if not ready:
            return None
        uid0 = self.address.uid0
        shape = ready[0][1].shape
        same = next((j for j, f in enumerate(ready) if f[1].shape != shape), len(ready))
        if same < len(ready):
            with self._lock:
                self._frames[0:0] = ready[same:]
            ready = ready[:same]
        frames = np.empty((len(ready),) + shape, dtype=np.float32)
        for j, (_uid, frame, _pos) in enumerate(ready):
            frames[j] = frame
        indices = np.fromiter((u - uid0 for u, _f, _p in ready), dtype=np.int64, count=len(ready))
        positions = None
        if ready[0][2] is not None:
            positions = np.stack([p for _u, _f, p in ready])  # type: ignore[misc]
        inside = indices[(indices >= 0) & (indices < self._seen.shape[0])]
        self._seen[inside] = True
        self.frames_in += len(ready)
        if inside.size:
            self.max_index = max(self.max_index, int(inside.max()))
        return FrameBatch(frames, indices, positions)

    def holding_back(self) -> bool:
        """True while frames arrived that :meth:`poll` holds back: this job's own, until the frames before them are
        in from the bridge's buffer (the feed does not count that time as a stall; the fetch has its own
        timeouts, and its failure is raised by the next poll)."""
        with self._lock:
            return not self._held_done and self._first_uid is not None and self._error is None

    def _take_held(self, first: int) -> None:
        """This job's first frame was uniqueId ``first``: unless it is the scan's first (``uid0``) and no series
        is named, ask the bridge's buffer for the frames that came before it, on a daemon thread
        (:meth:`_fetch_held`), which puts them ahead of this job's own; returns at once."""
        a = self.address
        if first == a.uid0 and a.series is None:
            with self._lock:
                self._held_done = True
            return
        with self._lock:
            self._fetching = True
        threading.Thread(target=self._fetch_held, args=(first,), name="pva-held-fetch", daemon=True).start()

    def _fetch_held(self, first: int) -> None:
        """The fetch thread: the frames before uniqueId ``first`` from the buffer, then ahead of this job's own
        (or the error, raised by the next :meth:`poll`). A :meth:`close` stops it before its next chunk (one under
        way ends within its RPC timeout, on this thread)."""
        a = self.address
        try:
            from p4p.client.thread import Context

            from .pva_buffer import fetch_held

            ctx = Context("pva", nt=False, conf={"EPICS_PVA_NAME_SERVERS": str(a.buffer_at),
                                                  "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": ""},
                          useenv=False)
            try:
                held = fetch_held(ctx, str(a.buffer), first, series=-1 if a.series is None else a.series,
                                  max_frames=self.max_pending, cancelled=self._closing.is_set)
            finally:
                ctx.close()
        except Exception as exc:  # LiveSourceError, or whatever p4p raised: the job fails naming it
            after = f", after the scan's first ({a.uid0})," if first != a.uid0 else ""
            of = f" (its scan: the bridge's series {a.series})" if a.series is not None else ""
            why = str(exc) if isinstance(exc, LiveSourceError) else f"{type(exc).__name__}: {exc}"
            self._fail(LiveSourceError(f"{self.name}: this job's first frame was uniqueId {first}{after}{of} and the "
                                       f"frames before it could not be had: {why}"))
            return
        frames: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        try:
            for uid, frame, attr_row, attr_col in held.frames:
                position = None
                if a.attrs is not None:
                    position = self._attr_position(uid, {a.attrs[0]: attr_row, a.attrs[1]: attr_col})
                frames.append((uid, frame, position))
        except LiveSourceError as exc:
            self._fail(exc)
            return
        with self._lock:
            for uid, (row, col) in held.rows.items():
                self._positions.setdefault(uid, np.array([row, col]) * a.scale)
            self._frames[0:0] = frames
            self.frames_from_buffer = len(frames)
            self._held_done = True

    def _fail(self, error: Exception) -> None:
        """Raise ``error`` at the next :meth:`poll` (the first error stands)."""
        with self._lock:
            self._error = self._error or error

    def _ready(self) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        """Take the frames whose position is known (under the lock); a frame waits for its positions row."""
        if self.address.positions is None:
            taken, self._frames = self._frames, []
            return taken
        out: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        wait: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        for uid, frame, _ in self._frames:
            pos = self._positions.get(uid)  # kept: a duplicate of this frame may follow
            if pos is None:
                wait.append((uid, frame, None))
            else:
                out.append((uid, frame, pos))
        self._frames = wait
        return out

    def _without_row(self) -> list[int]:
        """The uniqueIds of the frames lost for want of their positions row (sorted): those given up at the scan's
        end (:meth:`state`), and those still waiting once nothing (no frame, no row) came for ``end_grace_s`` (a
        stall: the feed ends the stream without them)."""
        with self._lock:
            lost = set(self._no_row)
            if self._frames and time.monotonic() - max(self._last_frame_at, self._last_row_at) >= self.end_grace_s:
                lost.update(u for u, _, _ in self._frames if u not in self._positions)
        return sorted(lost)

    @property
    def dropped(self) -> int:
        """Frames missing so far: scan points before the newest one received that never came (uniqueId gaps), and
        frames that came but whose positions row never did (:meth:`_without_row`)."""
        top = self.max_index
        for u in self._without_row():
            if 0 <= u - self.address.uid0 < self._seen.shape[0]:
                top = max(top, u - self.address.uid0)
        return int(top + 1 - np.count_nonzero(self._seen[: top + 1]))

    @property
    def dropped_detail(self) -> str:
        """Which frames were dropped for want of a positions row, naming their uniqueIds ('' when none): part of
        the result's partial label."""
        lost = self._without_row()
        if not lost:
            return ""
        shown = ", ".join(str(u) for u in lost[:10]) + (", ..." if len(lost) > 10 else "")
        return (f"{len(lost)} without a positions row on PV {self.address.positions}: uniqueId {shown}")

    def state(self) -> str:
        """ACQUIRING, or ENDED/ABORTED as the status PV says once the frames before it had time to arrive (every
        planned frame is there, or none came for ``end_grace_s``); without a status PV, ENDED once every planned
        frame arrived."""
        with self._lock:
            status, armed, seen_at = self._status, self._status_armed, self._end_seen_at
            fetching = not self._held_done and self._first_uid is not None
            pending = len(self._frames) + fetching
            last = max(self._last_frame_at, self._last_row_at)
        complete = bool(self._seen.all())
        if self.address.status is None:
            return ENDED if complete and not pending else ACQUIRING
        if status == ACQUIRING or not armed or seen_at is None or fetching:
            return ACQUIRING
        quiet = time.monotonic() - max(seen_at, last) >= self.end_grace_s
        if pending and quiet:
            self._give_up_rowless()
            with self._lock:
                pending = len(self._frames)  # frames with their row, not polled yet: taken first
        if pending:
            return ACQUIRING
        if complete or quiet:
            return status
        return ACQUIRING

    def _give_up_rowless(self) -> None:
        """The scan ended and nothing came for ``end_grace_s``: the frames still waiting for their positions row
        will not get it; they are dropped (:attr:`dropped`, named by :attr:`dropped_detail`), not waited for."""
        with self._lock:
            if self.address.positions is None:
                return
            keep = [f for f in self._frames if f[0] in self._positions]
            self._no_row.extend(f[0] for f in self._frames if f[0] not in self._positions)
            self._frames = keep

    def close(self) -> None:
        self._closing.set()
        for sub in self._subs:
            with contextlib.suppress(Exception):  # shutting down: nothing useful to do about it
                sub.close()
        self._subs = []
        if self._own_ctx and self._ctx is not None:
            self._ctx.close()
            self._ctx = None

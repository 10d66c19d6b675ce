"""The EPICS bridge's standing subscriber: it holds the first frames of each scan streamed over pvAccess and hands
them to the streaming job that subscribes after them (docs/streaming.md, "Frames before the job subscribed").

pvAccess keeps no history: a streaming job opened at the scan's start subscribes a second or more after it (the
bridge's debounce, the submit, the worker opening the source), and the frames the detector posted before are gone
for it. The bridge is running before the scan, so :class:`FrameBuffer`, started with the bridge, monitors the
image PV (and the positions table) of the ``[stream] source`` all the time and keeps the first frames of each
*series* (a scan: a new series starts when a uniqueId repeats, as it does when ``ArrayCounter`` is reset before a
scan, or when the bridge, seeing a scan's ``BUSY`` rise, finds the current series an earlier scan's
(:meth:`FrameBuffer.series_of_scan_started`, named in the scan's jobs as ``series=``); a series the monitor
(re)connected into, its first frame neither ``uid0`` nor below the uniqueId the PV held at the connect, is marked
as missing its start), at most ``max_bytes`` of frames (``[stream] buffer_mib``). It
serves them on its own p4p server, as one RPC PV, to the job's :class:`~ptychopy.pva_source.PvaSource` (the
address's ``buffer=PV&buffer_at=HOST:PORT``, which the bridge adds to the jobs it opens):

- the job subscribes as before; its first frame (uniqueId ``U``) tells it where its own monitor began;
- it asks the bridge for the frames of ``U``'s series that reached the bridge *before* ``U`` (:func:`fetch_held`):
  the bridge waits until it has seen ``U`` (both monitors get the server's updates in the order it posted them,
  so every frame posted before ``U`` is then held) and the positions rows of those frames and of ``U`` (whose row
  may be the value the job's positions monitor found at connect, which it does not take), and answers in chunks
  of at most ``CHUNK_BYTES``;
- the job takes those frames first, then its own: every frame, none dropped, in the detector's order.

The server answers only the clients of ``clients`` (``[stream] buffer_clients``; default loopback), by the TCP
peer's address (:meth:`FrameBuffer.refusal`). The job checks every field of each answer (:func:`fetch_held`): a
malformed one is a :class:`LiveSourceError` naming the PV and the field.

The answer waits for the job's first frame on a thread of its own, and the bridge's monitors call back on another
(p4p runs every subscription and server handler of a process on four shared threads by default: an answer waiting
there held up the very frames it waited for, and the job's own in the embedded server, until the monitor queues
overflowed and dropped a frame).

At the bound the bridge logs an error once per series naming the frame and the setting, and holds no more of that
series; a job that needs a frame it did not hold fails with a :class:`LiveSourceError` saying so (frames are never
dropped silently, as ``-liveBuffer``). The frames the bridge holds are views of p4p's received buffers (no copy).
A series' frames are let go as soon as no job can need them: once a job asked (its first frame is past them, so the
bridge holds no more of that series) and took the last chunk of its answer; ``release_after_s`` after the scan's
status PV said ended or aborted (a job whose first frame came just before the end still gets them); at the latest
when the next series starts. A job asking for a series let go is told so.

The standing monitor of the image PV asks for each frame's uniqueId and time stamp only (:data:`LIGHT_REQUEST`, about
34 bytes a frame): all the series rules and the bookkeeping read. The pixels come on a second monitor, open only
while the bridge may still hold frames (:meth:`FrameBuffer._want_pixels`: the current series holds; a scan ended or
starts on the status PV; always without one), paired with the frames the standing monitor names by (uniqueId, time
stamp). So once a scan's job took its frames, or past the bound, the rest of the scan does not reach the bridge's
host a second time (``stats()``: ``frame_bytes_in``, ``pixel_monitor``).

What the bridge keeps of every frame is bounded too, whatever the detector's counter does (one never reset, each
scan begun at its ``BUSY``, grew it for the bridge's life before): a uniqueId's arrival index and positions row
are kept only while a job may still get the frames before it (before the bound, an ask or a release); the frames
seen after are counted as at most :data:`MAX_RUNS` runs of uniqueIds (what the series rule needs) and the newest
:data:`RECENT_UIDS` indices, their rows pruned, as are the scan before's at a ``BUSY`` (:meth:`FrameBuffer.stats`:
``uids_kept``, ``uid_runs``, ``rows_kept``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reconstruction.live import LiveSourceError

from .pva_source import PvaAddress, decode_frame, parse_address, status_code, table_columns

log = logging.getLogger(__name__)

CHUNK_BYTES = 32 << 20  # frames per answer: at most this many bytes (pvAccess segments larger messages anyway)
WAIT_S = 5.0  # how long the bridge waits to see the job's first frame (and the rows before it) before answering
RELEASE_AFTER_S = 2 * WAIT_S  # a scan's held frames are let go this long after its status said ended or aborted
MONITOR_REQUEST = "field()record[queueSize=1000,pipeline=true]"
# the standing monitor of the image PV: the frames' identities only (about 34 bytes a frame on the wire, not the
# pixels); the pixels come on a second monitor (MONITOR_REQUEST) open only while the bridge may still hold them
LIGHT_REQUEST = "field(uniqueId,timeStamp)record[queueSize=1000,pipeline=true]"
# frames the pixel monitor delivered before the light one named them, kept at most (the lag between the two
# subscriptions is bounded by their queues, 1000 updates each); the oldest go beyond
PENDING_FRAMES = 1024
# a scan's first frames may reach the bridge this long before its BUSY does (pvAccess from the detector, Channel
# Access from the scan record) and still be the scan's (series_of_scan_started)
START_SLACK_S = 1.0
MAX_ERRORS = 100  # FrameBuffer.errors keeps the newest this many
# past a series' bound, or once its held frames were let go, no job can get a frame of it: the uniqueIds seen since
# are kept as at most this many runs of consecutive ones (the closest two merged beyond), not one entry per frame
MAX_RUNS = 64
# and the arrival index of the newest this many of them (a job asks just after its first frame: its error names it)
RECENT_UIDS = 4096
# the positions rows of frames no job can ask for (seen past the bound or a release, or of an earlier series) are
# pruned when the rows grew by this many more than twice those kept at the last pruning
PRUNE_ROWS_EVERY = 256
# rows of frames not seen yet (rows may come before their frames) kept at most: the oldest go beyond (positions
# posted without their frames)
ROWS_SLACK = 1 << 16
ERROR_LOG_EVERY_S = 10.0  # an unreadable update of a PV is logged at most this often (with the count since)
# a held frame's rows or columns at most, as a job reads an answer (a detector's are a few thousand)
MAX_FRAME_SIDE_PX = 1 << 16
FRAME_KINDS = "iuf"  # the numpy kinds of a held frame: areaDetector's integer and float NDArray types


def buffer_pv_name(beamline: str) -> str:
    """The RPC PV the bridge of ``beamline`` serves its held frames on (any characters but [A-Za-z0-9_-] -> _)."""
    return f"ptychopy:bridge:{re.sub(r'[^A-Za-z0-9_-]', '_', beamline)}:Frames"


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port); a :class:`LiveSourceError` naming ``what`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 \
            or not all("!" <= c <= "~" for c in host):
        raise LiveSourceError(f"{what}: {text!r} is not HOST:PORT (a TCP port 1-65535)")
    return host, int(port)


LOOPBACK_CLIENTS = ("127.0.0.0/8", "::1")  # the clients a buffer answers unless told others ([stream] buffer_clients)
MAX_REFUSED_LOGGED = 1024  # client addresses refused that are logged one by one (then only counted)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_clients(items: Sequence[str], what: str) -> tuple[Network, ...]:
    """Client addresses or networks (``"10.2.0.0/16"``, ``"10.2.3.4"``, ``"::1"``) -> networks; a
    :class:`LiveSourceError` naming ``what`` and the entry that is not one, or when there are none."""
    if isinstance(items, str) or not items:
        raise LiveSourceError(f"{what}: expected a list of client addresses or networks (e.g. [\"10.2.0.0/16\"]), "
                              f"got {items!r}")
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise LiveSourceError(f"{what}: {item!r} is not an IP address or network (ADDRESS or ADDRESS/PREFIX; a "
                                  "host name is not resolved)") from None
    return tuple(out)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an IP address, ``[v6]`` or a name) is this host's loopback: ``localhost`` or 127/8, ::1."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def peer_address(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address of a p4p server operation's ``peer()`` (``"10.2.3.4:51234"``, ``"[::1]:51234"``; an
    IPv4-mapped IPv6 address as its IPv4 one); None when it is none."""
    try:
        ip = ipaddress.ip_address(peer.rpartition(":")[0].strip("[]"))
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


def _frame_key(v: Any) -> tuple[int, tuple[int, int, int]]:
    """``(uniqueId, key)`` of an NTNDArray update (raw), whatever its fields: the key (uniqueId, the time stamp's
    seconds and nanoseconds) names one frame across the bridge's two monitors of the image PV (a uniqueId alone
    repeats when the detector's counter begins again)."""
    uid = int(v["uniqueId"])
    return uid, (uid, int(v["timeStamp.secondsPastEpoch"]), int(v["timeStamp.nanoseconds"]))


def _types() -> tuple[Any, Any]:
    from p4p.wrapper import Type

    request = Type([("through", "l"), ("series", "l"), ("start", "l"), ("max_bytes", "l")])
    answer = Type([("series", "l"), ("next", "l"), ("error", "s"), ("uniqueId", "al"), ("rows", "i"), ("cols", "i"),
                   ("dtype", "s"), ("value", "aB"), ("row_m", "ad"), ("col_m", "ad"), ("attr_row", "ad"),
                   ("attr_col", "ad"), ("through_row_m", "d"), ("through_col_m", "d")])
    return request, answer


@dataclass
class _Series:
    """The frames of one scan as they reached the bridge."""

    number: int
    # uniqueId -> arrival index of every frame seen while a job could still get the frames held (before the bound
    # and before a job's ask or a release let them go); the ones seen after: ``runs``
    order: dict[int, int] = field(default_factory=dict)
    runs: list[list[int]] = field(default_factory=list)  # [first, last] uniqueIds seen after, sorted (MAX_RUNS)
    seen: int = 0  # frames seen
    recent: dict[int, int] = field(default_factory=dict)  # uniqueId -> arrival index, the newest RECENT_UIDS of runs
    recent_order: deque[int] = field(default_factory=deque)  # their uniqueIds, oldest first
    # (uid, frame, attr row, col) of every frame seen while holding, in arrival order; frame None until its pixels
    # came on the pixel monitor (awaiting: the frame's key -> its place here)
    held: list[tuple[int, np.ndarray | None, float, float]] = field(default_factory=list)
    awaiting: dict[tuple[int, int, int], int] = field(default_factory=dict)
    held_bytes: int = 0
    full_at: int | None = None  # the arrival index of the first frame not held (the bound)
    unheld: str = ""  # why not, when not the bound (its pixels could not come)
    joined_at: int | None = None  # begun with the monitor (re)connected mid-scan: its first uniqueId (else None)
    began_s: float | None = None  # time.monotonic() of its first frame (None: none yet)
    claimed_s: float | None = None  # time.monotonic() of the scan start it was given to (series_of_scan_started)
    asked_at: int | None = None  # a job asked: the arrival index of its first frame (nothing after it is held)
    answered_at: float = float("-inf")  # time.monotonic() of the last answer given (a handover in progress)
    released: str = ""  # why its held frames were let go ("" while held)

    def release(self, why: str) -> None:
        """Let the held frames go (p4p's buffers are freed with the last reference); hold no more of them."""
        self.held, self.held_bytes, self.released = [], 0, why
        self.awaiting.clear()

    @property
    def holding(self) -> bool:
        """Whether a frame seen now is held: before the bound, a job's ask and a release."""
        return self.full_at is None and self.asked_at is None and not self.released

    def pixels_held(self) -> int:
        """The frames held whose pixels came."""
        return sum(f is not None for _, f, _, _ in self.held)

    def has(self, uid: int) -> bool:
        """Whether the frame ``uid`` reached the bridge in this series (its counter began again when it has)."""
        return uid in self.order or self.in_runs(uid)

    def in_runs(self, uid: int) -> bool:
        return any(a <= uid <= b for a, b in self.runs)

    def index(self, uid: int) -> int | None:
        """The arrival index of frame ``uid`` (None: long past the bound, before the newest RECENT_UIDS)."""
        index = self.order.get(uid)
        return self.recent.get(uid) if index is None else index

    def add_recent(self, uid: int, index: int) -> None:
        """``uid``, seen past the bound or a release as the ``index``-th frame: among the runs and the recent."""
        self.add_run(uid)
        self.recent[uid] = index
        self.recent_order.append(uid)
        if len(self.recent_order) > RECENT_UIDS:
            del self.recent[self.recent_order.popleft()]

    def add_run(self, uid: int) -> None:
        """Count ``uid`` (not seen before) among the runs: the next of the highest run extends it (a counter
        counting on); beyond :data:`MAX_RUNS` runs the two closest merge (a uniqueId between them never seen then
        counts as seen: a new series if it ever comes, as for a counter that began again)."""
        runs = self.runs
        if runs and runs[-1][1] + 1 == uid:
            runs[-1][1] = uid
            return
        runs.append([uid, uid])
        runs.sort()
        merged = [runs[0]]
        for a, b in runs[1:]:
            if a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        if len(merged) > MAX_RUNS:
            j = min(range(len(merged) - 1), key=lambda k: merged[k + 1][0] - merged[k][1])
            merged[j:j + 2] = [[merged[j][0], merged[j + 1][1]]]
        self.runs = merged


class FrameBuffer:
    """The bridge's standing subscriber to ``source`` (a ``pva://`` address) and its RPC server on
    ``bind`` ("HOST:PORT", the address the workers reach), PV ``pv_name``. ``max_bytes``: the most bytes of frames
    held per series. ``conf``: the client configuration reaching the detector (default: the environment's
    EPICS_PVA_*). ``release_after_s``: how long after the status PV said ended or aborted the scan's held frames are
    let go. Series are numbered from the buffer's start time in ms (a bridge restarted numbers its series anew,
    never as before). ``keep_after_handover``: a job asking lets nothing go, and frames after its first are still
    held (the bridge may open a replacement job that needs them: ``[stream] restream_attempts``); the scan's end or
    the next scan lets them go. ``clients``: the addresses or networks of the clients it answers
    (``[stream] buffer_clients``; default loopback only): any other is refused with an RPC error naming its address
    and the setting, logged at WARNING once per address. :meth:`start` and :meth:`stop`; :meth:`stats` for the
    dashboard and tests."""

    def __init__(self, source: str | PvaAddress, bind: str, pv_name: str, max_bytes: int, *,
                 conf: dict[str, str] | None = None, wait_s: float = WAIT_S,
                 release_after_s: float = RELEASE_AFTER_S, keep_after_handover: bool = False,
                 clients: Sequence[str] = LOOPBACK_CLIENTS):
        self.address = parse_address(source) if isinstance(source, str) else source
        self.host, self.port = parse_host_port(bind, "[stream] buffer_address")
        self.clients = parse_clients(clients, "[stream] buffer_clients")
        self._refused: set[str] = set()  # client addresses refused and logged (MAX_REFUSED_LOGGED at most)
        self.refused = 0  # requests refused (any client not allowed)
        self.pv_name = pv_name
        self.max_bytes = int(max_bytes)
        self.wait_s = float(wait_s)
        self.release_after_s = float(release_after_s)
        self.keep_after_handover = bool(keep_after_handover)
        self._timers: list[threading.Timer] = []  # the releases after a scan's end, pending
        self._conf = conf
        self._cond = threading.Condition()
        self._series = _Series(time.time_ns() // 1_000_000)
        self._rows: dict[int, tuple[float, float]] = {}  # uniqueId -> positions row (raw), the newest of each
        self._rows_since_frame: set[int] = set()  # uniqueIds whose row came after the newest frame
        self._rows_pruned_to = 0  # len(self._rows) after the last pruning
        self._skip: dict[str, bool] = {}
        self._connected_at: int | None = None  # the image PV's uniqueId at the monitor's (re)connect, until a frame
        self._ctx: Any = None
        self._server: Any = None
        self._subs: list[Any] = []
        # the bound reached, an update that could not be read (the newest MAX_ERRORS, newest last): a detector
        # posting frames the bridge cannot read (compressed, say) fails every one of them, thousands a second
        self.errors: deque[str] = deque(maxlen=MAX_ERRORS)
        self._unread: dict[str, tuple[float, int]] = {}  # PV -> (when its last error was logged, updates since)
        self._waiting = 0  # answers waiting for the job's first frame to reach the bridge
        self._queues: list[Any] = []  # p4p work queues of its own: the answers, the monitors' callbacks
        # the pixel monitor (MONITOR_REQUEST), open while the bridge may still hold frames (_want_pixels): opened
        # and closed by a thread of its own (_switch); its state "closed", "opening" (not connected) or "open"
        self._pixel_sub: Any = None
        self.pixel_monitor = "closed"
        self._expect_scan = False  # the status PV said a scan ended or starts: the next one's frames may come
        self._stopping = False
        self._switcher: threading.Thread | None = None
        # frames (key -> frame, attribute row, col) the pixel monitor delivered before the light one named them
        self._pending: OrderedDict[tuple[int, int, int], tuple[np.ndarray, float, float]] = OrderedDict()
        self._named: OrderedDict[tuple[int, int, int], None] = OrderedDict()  # the newest RECENT_UIDS keys named
        self.frame_bytes_in = 0  # pixel bytes received (the pixel monitor), since the start
        self.pixel_updates_in = 0  # updates of the pixel monitor (frames with their pixels)
        self.pixel_opens = 0  # times the pixel monitor was opened

    # -- running -----------------------------------------------------------------------------------------------
    def start(self) -> FrameBuffer:
        """Subscribe to the image (and positions) PV and serve :attr:`pv_name`; raises when the port is taken.
        Whatever it started is stopped when it raises (the server's port, the work queues' threads)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> FrameBuffer:
        from p4p.client.thread import Context
        from p4p.nt import NTScalar
        from p4p.server import Server
        from p4p.server.thread import SharedPV
        from p4p.util import ThreadedWorkQueue

        self._queues = [ThreadedWorkQueue(name="stream buffer answers", workers=2, daemon=True, maxsize=0).start(),
                        ThreadedWorkQueue(name="stream buffer frames", workers=1, daemon=True, maxsize=0).start()]
        answers, frames = self._queues
        conf = dict(EPICS_PVAS_INTF_ADDR_LIST=self.host, EPICS_PVAS_SERVER_PORT=str(self.port),
                    EPICS_PVAS_BROADCAST_PORT="0", EPICS_PVAS_AUTO_BEACON_ADDR_LIST="NO",
                    EPICS_PVAS_BEACON_ADDR_LIST="")
        self._request_type, self._answer_type = _types()
        self._pv = SharedPV(nt=NTScalar("l"), initial=0, handler=self, queue=answers)
        self._server = Server(providers=[{self.pv_name: self._pv}], conf=conf, useenv=False)
        bound = self._server.conf().get("EPICS_PVAS_SERVER_PORT")
        if bound != str(self.port):  # pvxs takes another port when this one is in use
            raise OSError(f"[stream] buffer_address {self.host}:{self.port}: the port is in use (the server got "
                          f"{bound}); streaming jobs could not reach the held frames: choose a free port")
        self._ctx = Context("pva", nt=False) if self._conf is None else Context("pva", nt=False, conf=self._conf,
                                                                                 useenv=False)
        a = self.address
        self._frames_queue = frames
        self._skip[a.image] = True
        self._subs.append(self._ctx.monitor(a.image, self._guard(a.image, self._on_frame), request=LIGHT_REQUEST,
                                            notify_disconnect=True, queue=frames))
        if a.positions:
            self._skip[a.positions] = True
            self._subs.append(self._ctx.monitor(a.positions, self._guard(a.positions, self._on_positions),
                                                request=MONITOR_REQUEST, notify_disconnect=True, queue=frames))
        if a.status:
            self._skip[a.status] = True
            self._subs.append(self._ctx.monitor(a.status, self._guard(a.status, self._on_status),
                                                notify_disconnect=True, queue=frames))
        self._switcher = threading.Thread(target=self._switch, name="stream buffer pixel monitor", daemon=True)
        self._switcher.start()
        log.info("stream buffer: holding up to %.0f MiB of each scan's first frames of PV %s, served as %s on %s:%d",
                 self.max_bytes / 2**20, a.image, self.pv_name, self.host, self.port)
        return self

    def _want_pixels(self) -> bool:
        """Whether the pixel monitor should be open (under the lock): while the current series holds frames, and
        from a scan's end or start (the status PV's 1, 2, or 0) until the next series stops holding. Without a
        status PV always (nothing says when the next scan's first frames may come)."""
        if self._stopping:
            return False
        return self.address.status is None or self._series.holding or self._expect_scan

    def _switch(self) -> None:
        """Open and close the pixel monitor as :meth:`_want_pixels` says (its own thread: p4p's monitor() and close()
        may wait for the callbacks' queue, which waits for the lock)."""
        while True:
            with self._cond:
                while not self._stopping and self._want_pixels() == (self._pixel_sub is not None):
                    self._cond.wait()
                if self._stopping:
                    return
                ctx, closing = self._ctx, self._pixel_sub
                self._pixel_sub = None
                self.pixel_monitor = "closed" if closing is not None else "opening"
            if closing is not None:
                with contextlib.suppress(Exception):  # closing: an error changes nothing
                    closing.close()
                log.debug("stream buffer: pixel monitor of %s closed", self.address.image)
                continue
            sub = ctx.monitor(self.address.image, self._on_pixels, request=MONITOR_REQUEST, notify_disconnect=True,
                              queue=self._frames_queue)
            with self._cond:
                self._pixel_sub = sub
                self.pixel_opens += 1
            log.debug("stream buffer: pixel monitor of %s opened", self.address.image)

    def stop(self) -> None:
        """Cancel the pending releases, close the monitors and the client context, stop the server (its port is
        free again) and the work queues' threads. Safe to call twice, and after a failed :meth:`start`."""
        with self._cond:
            timers, self._timers = self._timers, []
            self._stopping = True
            self._cond.notify_all()
        for timer in timers:
            timer.cancel()
        if self._switcher is not None:
            self._switcher.join(10)
            self._switcher = None
        with self._cond:
            pixels, self._pixel_sub = self._pixel_sub, None
            self.pixel_monitor = "closed"
        for sub in [*self._subs, *([pixels] if pixels is not None else [])]:
            with contextlib.suppress(Exception):  # shutting down
                sub.close()
        self._subs = []
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        for q in self._queues:
            q.stop()
        self._queues = []

    def series_now(self) -> int:
        """The number of the series (scan) whose frames arrive now."""
        with self._cond:
            return self._series.number

    def series_of_scan_started(self, started_s: float) -> int:
        """The number of the series the frames of a scan that started at ``started_s`` (``time.monotonic()``: when
        the bridge saw ``BUSY`` rise; asked once per scan, at once) go to, claimed for that scan: the current one
        when no earlier scan's start claimed it and its first frame arrived at most :data:`START_SLACK_S` before
        ``started_s`` (the detector's first frames may reach the bridge before ``BUSY`` does) or it has none yet,
        or when its first frame arrived at or after ``started_s``; else a new, empty one (the current one is an
        earlier scan's: its frames, or its start with no frame ever reaching the bridge: aborted before its first,
        or posted while the bridge's monitor was not connected), which this scan's frames go to. Given to the
        scan's first streaming job (``&series=``): one that starts only after its scan ended then fails on a later
        scan's first frame instead of taking that scan's frames as its own."""
        with self._cond:
            s = self._series
            ours = (s.began_s is not None and s.began_s >= started_s) or (
                s.claimed_s is None and (s.began_s is None or s.began_s >= started_s - START_SLACK_S))
            if not ours:
                earlier, s = s, _Series(s.number + 1)
                self._series = s
                self._maybe_prune_rows(earlier)  # nobody asks for its rows: this scan's may share its uniqueIds
            if s.claimed_s is None:
                s.claimed_s = started_s
            self._expect_scan = False  # the scan came: its series decides whether the pixels are wanted
            self._cond.notify_all()
            return s.number

    def stats(self) -> dict[str, Any]:
        """The current series: number, frames seen and held, bytes held, whether the bound was reached; answers
        waiting for a frame; the bookkeeping kept (uniqueIds one by one, runs of them, positions rows), bounded
        whatever the detector's counter does; requests refused (a client not in :attr:`clients`). The pixel
        monitor: its state (``closed``, ``opening``, ``open``), the pixel bytes it received since the start
        (``frame_bytes_in``; the standing monitor receives each frame's uniqueId and time stamp only), its updates
        and openings; ``frames_awaiting``: frames held whose pixels have not come yet."""
        with self._cond:
            s = self._series
            return {"series": s.number, "frames_seen": s.seen, "frames_held": s.pixels_held(),
                    "frames_awaiting": len(s.awaiting), "bytes_held": s.held_bytes, "full": s.full_at is not None,
                    "released": s.released, "answers_waiting": self._waiting, "uids_kept": len(s.order),
                    "uid_runs": len(s.runs), "rows_kept": len(self._rows), "clients_refused": self.refused,
                    "pixel_monitor": self.pixel_monitor, "frame_bytes_in": self.frame_bytes_in,
                    "pixel_updates_in": self.pixel_updates_in, "pixel_opens": self.pixel_opens}

    # -- p4p callbacks (its worker thread) ----------------------------------------------------------------------
    def _guard(self, pv: str, cb: Any) -> Any:
        def handle(update: Any) -> None:
            with self._cond:
                if isinstance(update, Exception):  # disconnected: the value at the reconnect is old
                    self._skip[pv] = True
                    return
                if self._skip[pv]:
                    self._skip[pv] = False
                    if pv == self.address.image:  # the frame posted last: is the next one of the same scan?
                        with contextlib.suppress(Exception):
                            self._connected_at = int(update["uniqueId"])
                    return
            try:
                cb(update)
            except Exception as exc:  # a frame it cannot read: the job reading it will say so too
                self._unreadable(pv, exc)
        return handle

    def _unreadable(self, pv: str, exc: Exception) -> None:
        """An update of ``pv`` that could not be read: kept among :attr:`errors`, logged at most every
        :data:`ERROR_LOG_EVERY_S` (with the count since)."""
        msg = f"stream buffer: PV {pv}: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        with self._cond:
            self.errors.append(msg)
            logged_at, since = self._unread.get(pv, (float("-inf"), 0))
            due = now - logged_at >= ERROR_LOG_EVERY_S
            self._unread[pv] = (now, 0) if due else (logged_at, since + 1)
        if due:
            log.error("%s%s", msg, f" ({since} more unreadable updates of it before)" if since else "")

    def _on_frame(self, v: Any) -> None:
        """A frame named on the standing monitor (its uniqueId and time stamp: the series' bookkeeping); held
        while the series holds, its pixels from the pixel monitor (:meth:`_on_pixels`, paired by the key)."""
        a = self.address
        uid, key = _frame_key(v)
        with self._cond:
            s = self._series
            if self._connected_at is not None:  # the first frame since the monitor (re)connected
                mid_scan = uid != a.uid0 and uid > self._connected_at  # the same scan goes on: its start went past
                s = self._series = _Series(s.number + bool(s.seen), joined_at=uid if mid_scan else None,
                                           claimed_s=None if s.seen else s.claimed_s)  # an empty one's claim kept
                self._connected_at = None
                self._expect_scan = False
                self._forget_old_rows()
            elif s.has(uid):  # the counter began again: a new scan
                s = self._series = _Series(s.number + 1)
                self._expect_scan = False
                self._forget_old_rows()
            self._rows_since_frame.clear()
            if s.began_s is None:
                s.began_s = time.monotonic()
            index, s.seen = s.seen, s.seen + 1
            pixels = self._take_pending(key)
            self._named[key] = None
            if len(self._named) > RECENT_UIDS:
                self._named.popitem(last=False)
            if not s.holding:  # no job can get it: counted only
                s.add_recent(uid, index)
                self._maybe_prune_rows()
            else:
                s.order[uid] = index
                s.held.append((uid, None, float("nan"), float("nan")))
                if pixels is not None:
                    self._fill(s, index, pixels)
                elif self.pixel_monitor != "open":  # its pixels went past: a prefix with a gap is no use
                    self._cut(s, index, f"the bridge's pixel monitor was {self.pixel_monitor} when it came (no scan "
                                        "end or start on the status PV since the scan before stopped holding)")
                else:
                    s.awaiting[key] = index
                    if len(s.awaiting) > PENDING_FRAMES:  # the oldest's pixels are not coming (lost on the way)
                        self._cut(s, min(s.awaiting.values()), f"the pixels of more than {PENDING_FRAMES} frames "
                                                               "did not reach the bridge")
            self._cond.notify_all()

    def _take_pending(self, key: tuple[int, int, int]) -> tuple[np.ndarray, float, float] | None:
        """The pixels of frame ``key`` if the pixel monitor delivered them first (under the lock); the frames it
        delivered before them are let go (both monitors get the server's updates in the order it posted them)."""
        if key not in self._pending:
            return None
        while True:
            k, pixels = self._pending.popitem(last=False)
            if k == key:
                return pixels

    def _on_pixels(self, v: Any) -> None:
        """An update of the pixel monitor (its own p4p callback): a frame's pixels, given to its place among the
        held frames, kept until the standing monitor names it, or let go (named and not held)."""
        if isinstance(v, Exception):  # disconnected (or the monitor just opened)
            with self._cond:
                if self._pixel_sub is not None or self.pixel_monitor == "opening":
                    self.pixel_monitor = "opening"
            return
        a = self.address
        try:
            uid, frame, attrs = decode_frame(v, a.image)
        except Exception as exc:  # a frame it cannot read: the job reading it will say so too
            with self._cond:
                self.pixel_updates_in += 1
                self.frame_bytes_in += int(getattr(v["value"], "nbytes", 0) or 0)
            self._unreadable(a.image, exc)
            return
        attr_row = attr_col = float("nan")
        if a.attrs is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):  # missing: the job names it
                attr_row, attr_col = float(attrs[a.attrs[0]]), float(attrs[a.attrs[1]])
        _, key = _frame_key(v)
        with self._cond:
            self.pixel_updates_in += 1
            self.frame_bytes_in += frame.nbytes
            if self.pixel_monitor == "opening":  # its first update since it (re)connected
                self.pixel_monitor = "open"
            s = self._series
            index = s.awaiting.pop(key, None)
            if index is not None:
                self._fill(s, index, (frame, attr_row, attr_col))
                self._cond.notify_all()
            elif key not in self._named:  # not named yet: the standing monitor's update is on its way
                self._pending[key] = (frame, attr_row, attr_col)
                while len(self._pending) > PENDING_FRAMES:
                    self._pending.popitem(last=False)

    def _fill(self, s: _Series, index: int, pixels: tuple[np.ndarray, float, float]) -> None:
        """Give the held frame at ``index`` its pixels (under the lock); past ``max_bytes`` the bound: that frame and
        the ones after are not held (counted among the runs), logged once as an error naming the setting."""
        uid = s.held[index][0]
        frame, attr_row, attr_col = pixels
        if s.held_bytes + frame.nbytes <= self.max_bytes:
            s.held[index] = (uid, frame, attr_row, attr_col)
            s.held_bytes += frame.nbytes
            return
        self._cut(s, index)

    def _cut(self, s: _Series, index: int, why: str = "") -> None:
        """Hold no frame of ``s`` from ``index`` on (under the lock): the bound (``why`` ""), or ``why`` their
        pixels cannot come; those frames are counted among the runs, logged once as an error."""
        a = self.address
        uid = s.held[index][0]
        s.full_at, s.unheld = index, why
        cut, s.held = s.held[index:], s.held[:index]
        s.held_bytes -= sum(f.nbytes for _, f, _, _ in cut if f is not None)
        for u, *_ in cut:  # not held: counted only
            s.add_recent(u, s.order.pop(u))
        s.awaiting = {k: j for k, j in s.awaiting.items() if j < index}
        held = f"{index} frames held ({s.held_bytes / 2**20:.1f} MiB, [stream] buffer_mib = {self.max_bytes / 2**20:g})"
        msg = (f"stream buffer: series {s.number} of PV {a.image}: {held}; uniqueId {uid} and the frames after it are "
               "not held: a streaming job that subscribes after them fails; " + (why or "raise buffer_mib"))
        log.error("%s", msg)
        self.errors.append(msg)

    def _forget_old_rows(self) -> None:
        """A new series: keep only the rows that came after the last series' newest frame (this scan's, posted
        before its first frame). The scan before's rows share its uniqueIds: kept, a row of this scan that has not
        come yet would be answered with the scan before's position instead of waited for."""
        self._rows = {u: r for u, r in self._rows.items() if u in self._rows_since_frame}
        self._rows_pruned_to = len(self._rows)

    def _maybe_prune_rows(self, earlier: _Series | None = None) -> None:
        """Let go the rows no job can ask for, now and then (amortized: the rows grew by :data:`PRUNE_ROWS_EVERY`
        more than twice those kept last time), or now when ``earlier``, a series just ended, is given: those of
        frames of the current series seen past its bound or its release (``runs``); those of ``earlier``'s frames
        (but the rows that came after its newest frame, of this series: before its first frame); then, beyond
        :data:`ROWS_SLACK`, the oldest rows of frames not seen (positions posted without their frames)."""
        if earlier is None and len(self._rows) <= 2 * self._rows_pruned_to + PRUNE_ROWS_EVERY:
            return
        s = self._series
        rows = {u: r for u, r in self._rows.items() if u in s.order or not s.in_runs(u) and (
            earlier is None or u in self._rows_since_frame or not earlier.has(u))}
        extra = [u for u in rows if u not in s.order]
        for u in extra[:max(0, len(extra) - ROWS_SLACK)]:
            del rows[u]
        self._rows, self._rows_pruned_to = rows, len(rows)
        self._rows_since_frame &= rows.keys()

    def _on_positions(self, v: Any) -> None:
        uid, row, col = table_columns(v, ("uniqueId", "row_m", "col_m"), str(self.address.positions))
        with self._cond:
            for u, r, c in zip(uid.astype(np.int64).tolist(), row.tolist(), col.tolist(), strict=True):
                self._rows.pop(u, None)  # the newest last (_maybe_prune_rows lets the oldest go)
                self._rows[u] = (float(r), float(c))
                self._rows_since_frame.add(u)
            self._maybe_prune_rows()
            self._cond.notify_all()

    def _on_status(self, v: Any) -> None:
        """The scan ended (1) or was aborted (2): let its held frames go ``release_after_s`` later; and the pixel
        monitor open again (then, or at a 0 once the series stopped holding): the next scan's first frames come."""
        code = status_code(v)
        with self._cond:
            # a scan ended or starts: the next one's first frames may come (before its BUSY reached the bridge)
            if code in (1, 2) or (code == 0 and self._series.seen and not self._series.holding):
                self._expect_scan = True
                self._cond.notify_all()
        if code not in (1, 2):
            return
        with self._cond:
            number = self._series.number
            timer = threading.Timer(self.release_after_s, self._release_ended, (number, code))
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _release_ended(self, number: int, code: int) -> None:
        with self._cond:
            s = self._series
            if s.number != number or s.released:
                return  # the next scan began (and let it go), or a job's handover did
            # an answer in progress, or a handover's next chunk may follow: ask again later (a job that asked and
            # then failed, or never took its last chunk, leaves them held no longer than this)
            if self._waiting or time.monotonic() - s.answered_at < self.wait_s:
                timer = threading.Timer(self.wait_s, self._release_ended, (number, code))
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
                return
            held, size = s.pixels_held(), s.held_bytes
            s.release(f"the scan {'ended' if code == 1 else 'was aborted'} {self.release_after_s:g} s before")
            self._cond.notify_all()
        log.info("stream buffer: series %d %s: %d frames (%.1f MiB) let go", number,
                 "ended" if code == 1 else "aborted", held, size / 2**20)

    # -- the RPC (the server's thread) ---------------------------------------------------------------------------
    def rpc(self, pv: Any, op: Any) -> None:
        """Answer one request (``through``, ``series``, ``start``, ``max_bytes``): see :meth:`answer`; refuse it when
        the client's address (``op.peer()``: the TCP peer; ``op.account()`` is whatever name the client claims, so
        it is not asked) is not among :attr:`clients`."""
        refusal = self.refusal(str(op.peer()))
        if refusal:
            op.done(error=refusal)
            return
        try:
            req = op.value()
            op.done(self.answer(int(req["through"]), int(req["series"]), int(req["start"]),
                                int(req["max_bytes"]) or CHUNK_BYTES))
        except Exception as exc:
            op.done(error=f"{type(exc).__name__}: {exc}")

    def refusal(self, peer: str) -> str:
        """"" when the client at ``peer`` ("HOST:PORT", as p4p's ``op.peer()``) is among :attr:`clients`; else why
        it is refused (its address and the setting), logged at WARNING the first time for each address."""
        ip = peer_address(peer)
        if ip is not None and any(ip.version == net.version and ip in net for net in self.clients):
            return ""
        shown = str(ip) if ip is not None else repr(peer[:80])
        allowed = ", ".join(str(net) for net in self.clients)
        why = (f"the bridge's frame buffer {self.pv_name} refuses the client {shown}: not in [stream] buffer_clients "
               f"({allowed}); add its address or network there (docs/streaming.md)")
        with self._cond:
            self.refused += 1
            first = shown not in self._refused and len(self._refused) < MAX_REFUSED_LOGGED
            if first:
                self._refused.add(shown)
        if first:
            log.warning("stream buffer: %s", why)
        return why

    def answer(self, through: int, series: int, start: int, max_bytes: int) -> Any:
        """The frames held that reached the bridge before uniqueId ``through`` in its series, from the ``start``-th
        on, at most ``max_bytes`` (at least one frame; one shape and type per answer), with their positions rows
        (raw) or attributes. ``series`` -1 on the first request; later ones repeat the first answer's. ``next``:
        where the next request starts, -1 when done. ``error`` instead when they cannot be had. The arguments come
        from the network: ``start`` below 0 is refused, ``max_bytes`` is at most :data:`CHUNK_BYTES`."""
        a = self.address
        max_bytes = min(max_bytes, CHUNK_BYTES)
        if start < 0:
            raise ValueError(f"start {start}: expected 0 or more (the first request's 0, then the answers' next)")
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while True:
                s = self._series
                error = ""
                wanted: list[tuple[int, np.ndarray | None, float, float]] = []
                if series >= 0 and s.number > series:  # series only grow: this job's scan ended before it asked
                    error = (f"uniqueId {through} is of the bridge's series {s.number}, a later scan's, not of this "
                             f"job's scan's series {series}: that scan ended before the job subscribed")
                elif series > s.number:  # its scan's first frame has not reached the bridge yet: wait for it
                    error = (f"the bridge's series {series} (this job's scan) did not begin within {self.wait_s:g} "
                             f"s (the bridge is on series {s.number})")
                elif not s.has(through):
                    error = (f"uniqueId {through} did not reach the bridge within {self.wait_s:g} s (its monitor of "
                             f"{a.image} may have been disconnected)")
                else:
                    before = s.order.get(through)  # None: past the bound, an ask or a release (see them below)
                    index = s.index(through)  # None: long past them
                    nth = f"{index + 1}-th" if index is not None else f"more than {RECENT_UIDS} frames after them"
                    if before is not None and series < 0 and s.asked_at is None and not self.keep_after_handover:
                        s.asked_at = before  # the job is past the frames after its first: hold no more
                        self._cond.notify_all()  # nor receive their pixels (_switch)
                    if s.released:
                        error = f"the bridge let this scan's held frames go ({s.released})"
                        break
                    if s.joined_at is not None:
                        error = (f"the bridge's monitor of {a.image} (re)connected while this scan acquired (its "
                                 f"first frame since was uniqueId {s.joined_at}): the frames before it are held "
                                 "nowhere")
                        break
                    if s.full_at is not None and (before is None or before > s.full_at):
                        error = (f"the bridge held only the first {len(s.held)} frames of this scan ("
                                 f"{s.unheld or f'[stream] buffer_mib = {self.max_bytes / 2**20:g}'}) and this job's "
                                 f"first frame was the {nth}" + ("" if s.unheld else ": raise buffer_mib"))
                        break
                    if s.asked_at is not None and (before is None or before > len(s.held)):  # earlier ask
                        error = (f"the bridge held only the first {len(s.held)} frames of this scan (an earlier "
                                 f"job, whose first frame was the {s.asked_at + 1}-th, asked for them) and this "
                                 f"job's first frame was the {nth}: the frames between are held nowhere")
                        break
                    assert before is not None  # past the bound, an ask or a release: one of the errors above
                    wanted = s.held[:before]
                    # the job's own first frame's row too: it may be the value its positions monitor found at
                    # connect, which it does not take (it may be a row of the scan before)
                    missing = [u for u in [*(u for u, *_ in wanted), through] if a.positions and u not in self._rows]
                    no_pixels = [u for u, f, _, _ in wanted if f is None]
                    if not missing and not no_pixels:
                        break
                    error = (f"the positions rows of {len(missing)} frames (uniqueId {missing[0]}, ...) did not reach "
                             f"the bridge within {self.wait_s:g} s" if missing else
                             f"the pixels of {len(no_pixels)} frames (uniqueId {no_pixels[0]}, ...) did not reach "
                             f"the bridge within {self.wait_s:g} s (its pixel monitor of {a.image} is "
                             f"{self.pixel_monitor}: it was not open when they came)")
                remaining = deadline - time.monotonic()
                if (series >= 0 and s.number > series) or remaining <= 0:
                    break
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1
            row, col = self._rows.get(through, (float("nan"), float("nan")))
            value: dict[str, Any] = {"series": s.number, "next": -1, "error": error, "through_row_m": row,
                                     "through_col_m": col}
            if not error:
                s.answered_at = time.monotonic()
                value.update(self._chunk(wanted, start, max_bytes))
                if value["next"] == -1 and not self.keep_after_handover:  # the job has them all: let them go
                    held, size = s.pixels_held(), s.held_bytes
                    s.release(f"handed to the job whose first frame was uniqueId {through}")
                    self._cond.notify_all()
                    log.info("stream buffer: series %d: %d frames before uniqueId %d handed to its job; %d frames "
                             "(%.1f MiB) let go", s.number, before, through, held, size / 2**20)
        from p4p.wrapper import Value

        return Value(self._answer_type, value)

    def _chunk(self, wanted: list[tuple[int, Any, float, float]], start: int, max_bytes: int) -> dict[str, Any]:
        if start >= len(wanted):
            return {"uniqueId": np.zeros(0, np.int64)}
        first = wanted[start][1]
        end, size = start, 0
        while end < len(wanted):
            frame = wanted[end][1]
            if frame.shape != first.shape or frame.dtype != first.dtype or (end > start and
                                                                           size + frame.nbytes > max_bytes):
                break
            size += frame.nbytes
            end += 1
        part = wanted[start:end]
        uids = [u for u, *_ in part]
        rows = [self._rows.get(u, (float("nan"), float("nan"))) for u in uids]
        stacked = np.ascontiguousarray(np.stack([f for _, f, _, _ in part]))
        return {"uniqueId": np.asarray(uids, np.int64), "rows": first.shape[0], "cols": first.shape[1],
                "dtype": stacked.dtype.str, "value": stacked.reshape(-1).view(np.uint8),
                "row_m": np.asarray([r for r, _ in rows]), "col_m": np.asarray([c for _, c in rows]),
                "attr_row": np.asarray([x for *_, x, _ in part], np.float64),
                "attr_col": np.asarray([x for *_, x in part], np.float64),
                "next": end if end < len(wanted) else -1}


@dataclass
class Held:
    """What :func:`fetch_held` got: frames (uid, frame (rows, cols), attribute row/col or NaN) in the order they
    reached the bridge, and the positions rows (uid -> raw row, col) of those frames and of the job's first frame
    that the bridge had."""

    frames: list[tuple[int, np.ndarray, float, float]]
    rows: dict[int, tuple[float, float]]


def _answer_reader(v: Any, pv: str) -> Any:
    """A reader of the answer ``v``'s fields: ``field(name, kind)`` -> the field as ``int``, ``str``, ``float`` or
    a 1-D numpy array of dtype ``kind``; a :class:`LiveSourceError` naming ``pv`` and the field when it is missing
    or not of that kind (the answer comes from the network: whatever answers at ``buffer_at=``)."""

    def field(name: str, kind: Any) -> Any:
        try:
            raw = v[name]
            if isinstance(kind, type):  # int, float or str (a numpy dtype compares equal to int and float)
                if isinstance(raw, (bytes, np.ndarray, list, tuple)) or (kind is str) != isinstance(raw, str):
                    raise TypeError(f"a {type(raw).__name__}")
                return kind(raw)
            arr = np.asarray(raw)
            if arr.ndim != 1 or arr.dtype != kind:
                raise TypeError(f"an array of {arr.dtype} with {arr.ndim} dimensions")
            return arr
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            want = kind.__name__ if isinstance(kind, type) else f"a 1-D {kind} array"
            raise LiveSourceError(f"the bridge's buffer {pv}: a malformed answer: field '{name}' "
                                  f"({type(exc).__name__}: {str(exc)[:120]}); expected {want}") from None

    return field


def _read_chunk(v: Any, pv: str, *, through: int, series: int, start: int, max_bytes: int,
                seen: set[int]) -> tuple[int, int, list[tuple[int, np.ndarray, float, float]],
                                         dict[int, tuple[float, float]]]:
    """One chunk of the buffer's answer ``v`` to the request from ``start`` (``series``: -1 on the first, then the
    first answer's), every field checked: ``(series, next, frames, rows)``. ``seen``: the uniqueIds of the chunks
    before (updated). A :class:`LiveSourceError` naming ``pv`` and the field that is wrong: the bridge's own
    error; a series other than the one asked for; a uniqueId twice (a series never holds one twice: the counter
    beginning again starts a new one) or the job's own first frame (``through``); ``rows``/``cols`` outside
    1..:data:`MAX_FRAME_SIDE_PX`; ``dtype`` not an integer or float type of at most 8 bytes; ``value`` not
    ``len(uniqueId) * rows * cols`` items of it, or more than ``max_bytes`` in a chunk of more than one frame;
    ``row_m``/``col_m``/``attr_row``/``attr_col`` not one per frame; ``next`` neither -1 nor ``start`` plus the
    frames of this chunk. The uniqueIds need not increase: a detector's frames out of order reach the bridge out
    of order, and are handed over as they reached it."""
    field = _answer_reader(v, pv)

    def bad(name: str, why: str) -> LiveSourceError:
        return LiveSourceError(f"the bridge's buffer {pv}: a malformed answer: field '{name}' {why}")

    error = field("error", str)
    if error:
        raise LiveSourceError(f"the bridge's buffer {pv}: {error[:2000]}")
    answered = field("series", int)
    if answered < 0 or (series >= 0 and answered != series):
        raise bad("series", f"is {answered}, not the series {series} asked for" if series >= 0 else
                  f"is {answered}: a series number is 0 or more")
    uids = field("uniqueId", np.dtype(np.int64))
    n = int(uids.size)
    nxt = field("next", int)
    if nxt != -1 and (n == 0 or nxt != start + n):
        raise bad("next", f"is {nxt} after {n} frames from {start}: expected -1 (done) or {start + n}")
    rows: dict[int, tuple[float, float]] = {}
    through_rc = (field("through_row_m", float), field("through_col_m", float))
    if all(np.isfinite(through_rc)):
        rows[through] = through_rc
    if not n:
        return answered, nxt, [], rows
    for u in uids.tolist():
        if u == through or u in seen:
            raise bad("uniqueId", f"holds uniqueId {u} twice or the job's own first frame ({through}); a series "
                                  "holds each uniqueId once, before the job's first frame")
        seen.add(u)
    shape = (field("rows", int), field("cols", int))
    for name, side in zip(("rows", "cols"), shape, strict=True):
        if not 1 <= side <= MAX_FRAME_SIDE_PX:
            raise bad(name, f"is {side}: expected 1 to {MAX_FRAME_SIDE_PX} pixels")
    text = field("dtype", str)
    try:
        dtype = np.dtype(text[:32])
    except (TypeError, ValueError):
        raise bad("dtype", f"{text[:32]!r} is not a numpy type") from None
    if dtype.kind not in FRAME_KINDS or dtype.itemsize > 8 or dtype.fields is not None or dtype.shape:
        raise bad("dtype", f"{text[:32]!r} is not an integer or float pixel type of at most 8 bytes")
    data = field("value", np.dtype(np.uint8))
    want = n * shape[0] * shape[1] * dtype.itemsize
    if data.size != want:
        raise bad("value", f"holds {data.size} bytes; {n} frames of {shape[0]} x {shape[1]} {dtype} are {want}")
    if n > 1 and data.size > max_bytes:
        raise bad("value", f"holds {data.size} bytes in {n} frames; a chunk of more than one frame is at most "
                           f"{max_bytes} (max_bytes)")
    per_frame = [field(name, np.dtype(np.float64)) for name in ("row_m", "col_m", "attr_row", "attr_col")]
    for name, arr in zip(("row_m", "col_m", "attr_row", "attr_col"), per_frame, strict=True):
        if arr.size != n:
            raise bad(name, f"has {arr.size} values for {n} frames")
    rr, rc, ar, ac = per_frame
    stack = data.view(dtype).reshape(n, *shape)
    frames = []
    for j, u in enumerate(uids.tolist()):
        frames.append((u, stack[j], float(ar[j]), float(ac[j])))
        if np.isfinite(rr[j]) and np.isfinite(rc[j]):
            rows[u] = (float(rr[j]), float(rc[j]))
    return answered, nxt, frames, rows


def fetch_held(ctx: Any, pv: str, through: int, *, series: int = -1, timeout_s: float = WAIT_S + 5.0,
               max_bytes: int = CHUNK_BYTES, max_frames: int = 1 << 20,
               cancelled: Callable[[], bool] | None = None) -> Held:
    """Ask the bridge's buffer ``pv`` (through the p4p client ``ctx``) for the frames of the series of uniqueId
    ``through`` that reached it before that frame; ``series`` >= 0: only if that is the bridge's series ``series``
    (a replacement job's scan). Each chunk's RPC waits at most ``timeout_s``; a chunk of more than one frame is at
    most ``max_bytes``, and more than ``max_frames`` frames in all is refused (the job's ``-liveBuffer``).
    ``cancelled()``, asked before each chunk, True: stop. Raises :class:`LiveSourceError` with the bridge's reason,
    or naming the field of an answer that is malformed (:func:`_read_chunk`)."""
    request_type, _ = _types()
    from p4p.wrapper import Value

    frames: list[tuple[int, np.ndarray, float, float]] = []
    rows: dict[int, tuple[float, float]] = {}
    seen: set[int] = set()
    start = 0
    while start >= 0:
        if cancelled is not None and cancelled():
            raise LiveSourceError(f"the bridge's buffer {pv}: the fetch was stopped after {len(frames)} frames")
        try:
            v = ctx.rpc(pv, Value(request_type, {"through": through, "series": series, "start": start,
                                                  "max_bytes": max_bytes}), timeout=timeout_s)
        except Exception as exc:
            raise LiveSourceError(f"the bridge's buffer {pv}: {type(exc).__name__}: {str(exc)[:2000]}") from None
        series, start, part, part_rows = _read_chunk(v, pv, through=through, series=series, start=start,
                                                     max_bytes=max_bytes, seen=seen)
        frames.extend(part)
        rows.update(part_rows)
        if len(frames) > max_frames:
            raise LiveSourceError(f"the bridge's buffer {pv}: more than {max_frames} frames before uniqueId "
                                  f"{through} (-liveBuffer); the answer is refused")
    return Held(frames, rows)

"""``ptychopy simioc --stream pva|swmr``: play one simulated scan frame by frame at a frame rate, as a detector.

``--stream pva`` serves, on a private p4p server (``--pva-port``), the PVs ``-liveSource=pva://...`` reads
(``ptychopy/pva_source.py``), as areaDetector's NDPluginPva and a scan record would:

- ``<P>Pva1:Image``: NTNDArray, one update per frame, ``uniqueId`` 1, 2, ... (scan point + 1);
- ``<P>Scan:Positions``: NTTable ``uniqueId``, ``row_m``, ``col_m``: the positions of the frames about to be posted
  (posted before them); with ``--positions attrs`` instead the NDAttributes ``PosRow``, ``PosCol`` (metres) of each
  frame, as an areaDetector attributes file would attach motor readbacks;
- ``<P>Scan:Planned``: NTTable ``row_m``, ``col_m``: the planned scan;
- ``<P>Scan:Status``: NTScalar int, 0 acquiring, 1 ended, 2 aborted.

The scan starts once a client monitors the image PV (plus ``--start-delay`` s), or at once with
``--start-delay -1``; after it the server keeps serving for ``--linger`` s. ``--stream swmr --out FILE`` writes
the same scan into an HDF5 file with SWMR (:mod:`reconstruction.live.simwrite`'s layout).

Faults for tests: ``--abort-after K``, ``--stop-after K`` (stop without ending: a stall), ``--shuffle B``,
``--duplicate J``, ``--drop J`` (frame J is never sent), ``--reshape-at J`` (frame J is sent with one row fewer).
``--distinct K`` cycles K simulated frames through a larger scan (ingest benchmarks: 90,000 frames of 256^2
without simulating each one). Prints one JSON line at the end: frames sent, first/last frame times (Unix s), rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IMAGE, POSITIONS, PLANNED, STATUS = "Pva1:Image", "Scan:Positions", "Scan:Planned", "Scan:Status"
POSITION_ATTRS = ("PosRow", "PosCol")  # --positions attrs: the NDAttributes of each frame
DTYPES: dict[str, type[np.floating[Any]] | type[np.unsignedinteger[Any]]] = {
    "float32": np.float32, "uint16": np.uint16, "uint32": np.uint32}


def live_source_address(prefix: str, attrs: bool = False) -> str:
    """The ``-liveSource`` value that reads what :class:`PvaStreamer` serves under ``prefix``."""
    if attrs:
        return (f"pva://{prefix}{IMAGE}?attrs={','.join(POSITION_ATTRS)}&planned={prefix}{PLANNED}"
                f"&status={prefix}{STATUS}")
    return f"pva://{prefix}{IMAGE}?scan={prefix}Scan:"


class _FirstClient:
    """SharedPV handler that notes whether a client monitors the image PV (set at the first, cleared after the
    last)."""

    def __init__(self) -> None:
        self.connected = threading.Event()

    def onFirstConnect(self, pv: Any) -> None:  # noqa: N802 (p4p's name)
        self.connected.set()

    def onLastDisconnect(self, pv: Any) -> None:  # noqa: N802 (p4p's name)
        self.connected.clear()


class PvaStreamer:
    """The four PVs of the module docstring on a p4p server with configuration ``conf``."""

    def __init__(self, prefix: str, planned_m: np.ndarray, conf: dict[str, str]):
        from p4p.nt import NTNDArray, NTScalar, NTTable
        from p4p.server import Server
        from p4p.server.thread import SharedPV
        from p4p.wrapper import Value

        self.prefix = prefix
        self.first_client = _FirstClient()
        self._nd = NTNDArray()
        self._positions_nt = NTTable([("uniqueId", "i"), ("row_m", "d"), ("col_m", "d")])
        planned_nt = NTTable([("row_m", "d"), ("col_m", "d")])
        self._value_cls = Value
        self.image = SharedPV(nt=self._nd, wrap=self._wrap_frame, initial=np.zeros((1, 1), dtype=np.float32),
                              handler=self.first_client)
        self.positions = SharedPV(nt=self._positions_nt, initial=[])
        self.planned = SharedPV(nt=planned_nt, initial=[{"row_m": float(r), "col_m": float(c)}
                                                        for r, c in planned_m])
        self.status = SharedPV(nt=NTScalar("i"), initial=0)
        self.server = Server(providers=[{prefix + IMAGE: self.image, prefix + POSITIONS: self.positions,
                                         prefix + PLANNED: self.planned, prefix + STATUS: self.status}],
                             conf=conf, useenv=False)

    def post_positions(self, uids: list[int], positions_m: np.ndarray) -> None:
        rows = [{"uniqueId": u, "row_m": float(p[0]), "col_m": float(p[1])} for u, p in zip(uids, positions_m,
                                                                                              strict=True)]
        self.positions.post(rows, timestamp=time.time())

    def _wrap_frame(self, value: Any, **kws: Any) -> Any:
        return value if isinstance(value, self._value_cls) else self._nd.wrap(value, **kws)

    def post_frame(self, uid: int, frame: np.ndarray, position_m: np.ndarray | None = None) -> None:
        """One NTNDArray update: ``frame`` (rows, cols) with ``uniqueId`` uid, as NDPluginPva posts it; with
        ``position_m``, the NDAttributes PosRow and PosCol (metres)."""
        rows, cols = frame.shape
        sec, frac = divmod(time.time(), 1.0)
        dims = [{"size": n, "offset": 0, "fullSize": n, "binning": 1, "reverse": False} for n in (cols, rows)]
        fields: dict[str, Any] = {
            "value": (self._nd._code2u[frame.dtype.char], frame.ravel()), "uniqueId": uid,
            "compressedSize": frame.nbytes, "uncompressedSize": frame.nbytes, "dimension": dims,
            "timeStamp": {"secondsPastEpoch": int(sec), "nanoseconds": int(frac * 1e9)}}
        if position_m is not None:
            fields["attribute"] = [{"name": name, "value": float(v), "descriptor": "motor readback (m)"}
                                   for name, v in zip(POSITION_ATTRS, position_m, strict=True)]
        self.image.post(self._value_cls(self._nd.type, fields))

    def post_status(self, code: int) -> None:
        self.status.post(code, timestamp=time.time())

    def post_planned(self, planned_m: np.ndarray) -> None:
        self.planned.post([{"row_m": float(r), "col_m": float(c)} for r, c in planned_m], timestamp=time.time())

    def close(self) -> None:
        self.server.stop()


class ScanStream:
    """``simioc --live-pva PORT``: each scan the IOC plays also goes out over pvAccess, on the PVs of
    :class:`PvaStreamer` (the same as ``--stream pva``): :meth:`begin` posts the scan's plan and status 0 before
    ``BUSY`` rises, :meth:`append` a frame (uniqueId = scan point + 1) after its positions row, :meth:`end` the
    status 1 or 2. The server and its PVs stay up between scans."""

    def __init__(self, prefix: str, conf: dict[str, str]):
        self.streamer = PvaStreamer(prefix, np.zeros((0, 2)), conf)
        self.positions_m = np.zeros((0, 2))

    def begin(self, planned_m: np.ndarray) -> ScanStream:
        self.positions_m = np.asarray(planned_m, dtype=np.float64)
        self.streamer.post_planned(self.positions_m)
        self.streamer.post_status(0)
        return self

    def wait_s(self, limit_s: float) -> float:
        """Seconds until a client monitors the image PV, at most ``limit_s`` (a streaming job listening); what a
        detector does not do, and what the scan's frames need over pvAccess, which keeps no history."""
        t0 = time.monotonic()
        self.streamer.first_client.connected.wait(max(0.0, limit_s))
        return time.monotonic() - t0

    def append(self, frame: np.ndarray, index: int) -> None:
        self.streamer.post_positions([index + 1], self.positions_m[index:index + 1])
        self.streamer.post_frame(index + 1, frame)

    def end(self, aborted: bool = False) -> None:
        self.streamer.post_status(2 if aborted else 1)

    def close(self) -> None:
        self.streamer.close()


def stream_order(n: int, args: argparse.Namespace) -> list[int]:
    """Scan points in the order they are sent (shuffled, a duplicate, a dropped one), cut at abort/stop."""
    from reconstruction.live.simwrite import frame_order

    order = frame_order(n, args.shuffle, args.duplicate)
    if args.drop is not None:
        order = [j for j in order if j != args.drop]
    return order


def play_pva(streamer: PvaStreamer, frames: np.ndarray, positions_m: np.ndarray, order: list[int], *,
             rate_hz: float, abort_after: int | None, stop_after: int | None, reshape_at: int | None,
             attrs: bool = False) -> dict[str, Any]:
    """Send the frames of ``order`` (scan points; frame ``j % len(frames)``) at ``rate_hz``; the status at the end."""
    limit = len(order)
    for cut in (abort_after, stop_after):
        if cut is not None:
            limit = min(limit, cut)
    streamer.post_status(0)
    t0 = time.time()
    sent, first_s, last_s = 0, 0.0, 0.0
    k = len(frames)
    while sent < limit:
        due = min(limit, int((time.time() - t0) * rate_hz) + 1)
        if due > sent:
            chosen = order[sent:due]
            if not attrs:
                streamer.post_positions([j + 1 for j in chosen], positions_m[chosen])
            for j in chosen:
                frame = frames[j % k]
                streamer.post_frame(j + 1, frame[:-1] if j == reshape_at else frame,
                                    positions_m[j] if attrs else None)
            last_s = time.time()
            first_s = first_s or last_s
            sent = due
        time.sleep(max(0.0, t0 + (sent + 1) / rate_hz - time.time()))
    how = "ended"
    if stop_after is not None and sent >= stop_after:
        how = "stopped"
    elif abort_after is not None and sent >= abort_after:
        how = "aborted"
        streamer.post_status(2)
    else:
        streamer.post_status(1)
    span = last_s - first_s
    return {"frames": sent, "first_frame_unix_s": first_s, "last_frame_unix_s": last_s, "how": how,
            "rate_hz": (sent - 1) / span if span > 0 else 0.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("streaming one scan frame by frame (--stream)")
    g.add_argument("--stream", choices=("pva", "swmr"), help="play one scan as a detector stream: NTNDArray over "
                   "pvAccess (--pva-port) or an HDF5 file with SWMR (--out), then exit")
    g.add_argument("--scan", default="./ptycho -size=64 -scanDims=40,40 -photons=1e6 -seed=0",
                   help="the scan as a command string (-size, -scanDims, -step, -beamSize, -photons, -seed)")
    g.add_argument("--rate", type=float, default=200.0, help="frames per second (default 200)")
    g.add_argument("--out", type=Path, help="--stream swmr: the HDF5 file to write")
    g.add_argument("--positions", choices=("table", "attrs"), default="table", help="positions as the NTTable PV "
                   "Scan:Positions (default) or as NDAttributes PosRow, PosCol of each frame")
    g.add_argument("--jitter-m", type=float, default=0.0, help="the measured positions (table or attributes) miss "
                   "the planned ones by up to this many metres per axis (uniform, seed 0)")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="pixel type sent over pvAccess "
                   "(integer types round the counts)")
    g.add_argument("--distinct", type=int, default=0, help="simulate only this many frames and cycle them "
                   "(0 = every frame of the scan)")
    g.add_argument("--start-delay", type=float, default=0.5, help="seconds after the first client monitors the "
                   "image before the scan starts (-1: start at once)")
    g.add_argument("--linger", type=float, default=2.0, help="seconds the server stays up after the scan")
    g.add_argument("--abort-after", type=int, help="mark the scan aborted after this many frames")
    g.add_argument("--stop-after", type=int, help="stop after this many frames without ending the scan")
    g.add_argument("--shuffle", type=int, default=1, help="send frames out of order within blocks of this size")
    g.add_argument("--duplicate", type=int, help="send this scan point twice")
    g.add_argument("--drop", type=int, help="never send this scan point (a lost frame)")
    g.add_argument("--reshape-at", type=int, help="send this scan point with one row fewer (a shape change)")


def simulated_scan(cmdstr: str, distinct: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames (K, n, n) float32 counts, planned positions (N, 2) metres) of the scan ``cmdstr``; K = N, or
    ``distinct`` frames simulated at the first positions when > 0."""
    from reconstruction.parameters import Parameters
    from reconstruction.positions import positions_m_from_parameters
    from reconstruction.simulate import simulate_from_parameters

    params = Parameters.from_cmdstr(cmdstr)
    positions_m = positions_m_from_parameters(params)
    if distinct and distinct < positions_m.shape[0]:
        rows = max(1, int(np.ceil(distinct / params.experiment.scan_dims[1])))
        small = params.replace({"experiment.scan_dims": (rows, params.experiment.scan_dims[1])})
        frames = simulate_from_parameters(small).data.intensities[:distinct]
    else:
        frames = simulate_from_parameters(params).data.intensities
    return np.ascontiguousarray(frames, dtype=np.float32), positions_m


def main(args: argparse.Namespace) -> int:
    """Run ``--stream``; prints one JSON line (what was sent)."""
    from reconstruction.live.simwrite import write_scan

    if args.rate <= 0:
        raise SystemExit(f"ptychopy simioc: --rate {args.rate}: expected > 0 frames/s")
    frames, positions_m = simulated_scan(args.scan, args.distinct)
    n = positions_m.shape[0]
    for flag in ("duplicate", "drop", "reshape_at"):
        j = getattr(args, flag)
        if j is not None and not 0 <= j < n:
            raise SystemExit(f"ptychopy simioc: --{flag.replace('_', '-')} {j}: the scan has points 0..{n - 1}")
    order = stream_order(n, args)
    if args.stream == "swmr":
        if args.out is None:
            raise SystemExit("ptychopy simioc --stream swmr: give the file with --out")
        if args.distinct or args.drop is not None or args.reshape_at is not None or args.jitter_m:
            raise SystemExit("ptychopy simioc --stream swmr: --distinct, --drop, --reshape-at and --jitter-m are "
                             "pvAccess only")
        report = write_scan(args.out, frames, positions_m, rate_hz=args.rate, order=order,
                            abort_after=args.abort_after, stop_after=args.stop_after)
        print(json.dumps(report), flush=True)
        return 0
    if args.pva_port is None:
        raise SystemExit("ptychopy simioc --stream pva: give the server port with --pva-port")
    from .simioc_pva import pva_server_conf

    dtype = DTYPES[args.dtype]
    sent_frames = frames
    if dtype is not np.float32:
        top = float(np.iinfo(np.dtype(dtype)).max)
        sent_frames = np.rint(np.clip(frames, 0, top)).astype(dtype)
    streamer = PvaStreamer(args.prefix, positions_m, pva_server_conf(args.pva_port, args.interface))
    address = live_source_address(args.prefix, args.positions == "attrs")
    print(json.dumps({"serving": address, "port": args.pva_port, "frames": len(order)}), flush=True)
    try:
        if args.start_delay >= 0:
            streamer.first_client.connected.wait()
            time.sleep(args.start_delay)
        measured_m = positions_m + args.jitter_m * np.random.default_rng(0).uniform(-1, 1, positions_m.shape)
        report = play_pva(streamer, sent_frames, measured_m, order, rate_hz=args.rate, abort_after=args.abort_after,
                          stop_after=args.stop_after, reshape_at=args.reshape_at, attrs=args.positions == "attrs")
        print(json.dumps(report), flush=True)
        time.sleep(max(0.0, args.linger))
    finally:
        streamer.close()
    return 0

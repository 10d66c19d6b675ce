"""``benchmarks/live_streaming.py --ingest``: how fast a live run takes frames in (see that module's docstring)."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconstruction.live import FrameBatch, planned_from_parameters  # noqa: E402
from reconstruction.live.run import StreamingRun  # noqa: E402
from reconstruction.parameters import Parameters  # noqa: E402

COLS = 300  # scan columns; rows = frames / COLS
STEP_PX = 16  # scan step in object pixels


class TimedSource:
    """A live source that notes when each polled batch arrived (slot order = arrival order)."""

    def __init__(self, source: Any):
        self.source = source
        self.name = source.name
        self.counts: list[int] = []
        self.times: list[float] = []

    @property
    def planned(self) -> Any:
        return self.source.planned

    @property
    def dropped(self) -> int:
        return int(getattr(self.source, "dropped", 0))

    def poll(self) -> FrameBatch | None:
        batch = self.source.poll()
        if batch is not None and len(batch):
            self.counts.append(len(batch))
            self.times.append(time.monotonic())
        return batch

    def state(self) -> str:
        return str(self.source.state())

    def close(self) -> None:
        self.source.close()

    def arrival_s(self) -> np.ndarray:
        """Arrival time (monotonic s) of each slot."""
        return np.repeat(np.asarray(self.times), np.asarray(self.counts, dtype=np.int64))


class TimedRun(StreamingRun):
    """A streaming run that notes the host time spent taking frames in (without the run's allocation at the first
    frames, ``start_s``) and the largest batch taken at once."""

    ingest_s = 0.0
    start_s = 0.0
    largest_take = 0

    def _ingest(self, batches: list[FrameBatch]) -> None:
        t0 = time.perf_counter()
        super()._ingest(batches)
        self.ingest_s += time.perf_counter() - t0
        self.largest_take = max(self.largest_take, sum(len(b) for b in batches))

    def _start(self, first: np.ndarray, positions_px: np.ndarray) -> None:
        t0 = time.perf_counter()
        super()._start(first, positions_px)
        self.start_s = time.perf_counter() - t0
        self.ingest_s -= self.start_s


def scan_cmdstr(size: int, frames: int, photons: float) -> str:
    """A raster of about ``frames`` points, COLS wide, stepping STEP_PX object pixels."""
    rows = max(1, math.ceil(frames / COLS))
    pixel_m = Parameters.from_cmdstr(f"./ptycho -size={size}").pixel_size_m
    step = STEP_PX * pixel_m
    return (f"./ptycho -size={size} -qxy={size // 2},{size // 2} -scanDims={rows},{COLS} -step={step:.6g},{step:.6g} "
            f"-beamSize={size * pixel_m * 0.4:.6g} -photons={photons:g} -seed=0")


def write_distinct(path: Path, cmdstr: str, distinct: int) -> None:
    """The first ``distinct`` simulated frames of the scan as uint16 counts in ``path`` (/entry/data/data)."""
    import h5py

    from epics_bridge.simioc_stream import simulated_scan

    frames, _ = simulated_scan(cmdstr, distinct)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.rint(np.clip(frames, 0, 65535)).astype(np.uint16),
                         chunks=(1, *frames.shape[1:]))


def open_source(kind: str, params: Parameters, cmdstr: str, rate: float, args: argparse.Namespace, tmp: Path
                ) -> tuple[Any, subprocess.Popen[str] | None]:
    plan = planned_from_parameters(params)
    if kind == "replay":
        from reconstruction.live.replay import ReplaySource

        return ReplaySource(tmp / "distinct.h5", "/entry/data/data", plan, rate, cycle=True), None
    from epics_bridge.simioc_pva import pva_client_env
    from ptychopy.pva_source import PvaSource

    port = importlib.import_module("benchmarks.latency.procs").free_port_pair()  # (by name: mypy sees it twice)
    os.environ.update(pva_client_env(port))
    server = subprocess.Popen([sys.executable, "-m", "ptychopy", "simioc", "--stream", "pva", "--pva-port", str(port),
                               "--prefix", f"b{port}:", "--scan", cmdstr, "--rate", str(rate), "--distinct",
                               str(args.distinct), "--dtype", "uint16", "--start-delay", "1.0", "--linger", "2"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = server.stdout.readline() if server.stdout else ""
    if not line.startswith("{"):
        server.kill()
        raise RuntimeError(f"simioc --stream pva did not start: {line!r}")
    source = PvaSource(json.loads(line)["serving"], plan, connect_s=30.0, queue_size=args.queue,
                       max_pending=args.max_frames)
    return source, server


def one_run(kind: str, rate: float, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    frames = min(int(rate * args.seconds), args.max_frames)
    cmdstr = scan_cmdstr(args.size, frames, args.photons)
    if kind == "replay" and not (tmp / "distinct.h5").exists():
        write_distinct(tmp / "distinct.h5", cmdstr, args.distinct)
    params = Parameters.from_cmdstr(
        f"{cmdstr} -sqrtData=1 -algorithm={args.algorithm} -updateProbe=1 -phaseConstraint=0 -device={args.device} "
        f"-liveFinish=0 -liveWindow={args.window} -liveStall=15 -liveBuffer={args.max_frames} -jobID=ingest")
    raw, server = open_source(kind, params, cmdstr, rate, args, tmp)
    source = TimedSource(raw)
    steps: list[tuple[float, int]] = []  # (end of the epoch, slots it held)
    run = TimedRun(params, source)
    t0 = time.perf_counter()
    try:
        run.run(lambda _p, _s: steps.append((time.monotonic(), run._k)))
    except BaseException:
        if server is not None:
            server.kill()  # it may still wait for a client or be streaming
        raise
    finally:
        source.close()
    sent = {}
    if server is not None:
        out = server.communicate(timeout=60)[0]
        sent = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    wall_s = time.perf_counter() - t0
    arrival = source.arrival_s()
    n = run.summary.planned
    received = run.summary.received
    first = float(arrival[0]) if arrival.size else 0.0
    span = float(arrival[-1] - arrival[0]) if arrival.size > 1 else 0.0
    settled = steps[0][0] + args.warmup if steps else 0.0  # the allocation at the first frames, and its backlog
    lags = np.array([t - arrival[k - 1] for t, k in steps if k and t >= settled])
    setup_s = (steps[0][0] - first) if steps else float("nan")
    dropped = source.dropped + max(0, int(sent.get("frames", n)) - received)
    achieved = (received - 1) / span if span > 0 else 0.0
    p95 = float(np.percentile(lags, 95)) if lags.size else float("inf")
    upload = run._upload
    row = {
        "source": kind, "device": args.device, "size": args.size, "rate_target": rate, "frames_planned": n,
        "frames_sent": int(sent.get("frames", n)), "frames_received": received, "frames_dropped": dropped,
        "duplicates": len(run.summary.duplicates), "outcome": run.summary.outcome,
        "rate_achieved": round(achieved, 1), "stream_s": round(span, 2), "wall_s": round(wall_s, 2),
        "epochs_live": run.summary.live_iterations, "window": args.window, "algorithm": args.algorithm,
        "lag_p50_s": round(float(np.median(lags)), 3) if lags.size else None,
        "lag_p95_s": round(p95, 3) if lags.size else None,
        "lag_max_s": round(float(lags.max()), 3) if lags.size else None,
        "setup_s": round(setup_s, 2), "allocate_s": round(run.start_s, 2),
        "ingest_us_per_frame": round(1e6 * run.ingest_s / max(1, received), 1),
        "largest_take_frames": run.largest_take, "h2d_copies": upload.copies if upload is not None else 0,
        "staging_frames": upload.capacity if upload is not None else 0,
        "server_rate": round(float(sent.get("rate_hz", 0.0)), 1) if sent else None,
    }
    row["sustained"] = bool(received == n and dropped == 0 and achieved >= 0.97 * rate and p95 <= 1.0)
    print("INGEST " + json.dumps(row), flush=True)
    _release(run)
    return row


def _release(run: StreamingRun) -> None:
    if run.rec is not None:
        run.rec.close()
    run.rec = None
    run._amplitudes = None
    run._upload = None
    gc.collect()
    try:
        import cupy as cp  # type: ignore[import-not-found]

        cp.get_default_memory_pool().free_all_blocks()
        cp.get_default_pinned_memory_pool().free_all_blocks()
    except ImportError:
        pass


def ingest_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="live_streaming.py --ingest")
    ap.add_argument("--sources", default="replay,pva")
    ap.add_argument("--rates", default="3000,4500,6000", help="frames/s, ascending (the ramp)")
    ap.add_argument("--seconds", type=float, default=30.0, help="stream length at each rate")
    ap.add_argument("--max-frames", type=int, default=100_000, help="at most this many frames per run (the device "
                    "holds them all: 100,000 x 256^2 float32 = 26 GB)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--algorithm", default="LSQML")
    ap.add_argument("--window", type=int, default=1000, help="-liveWindow: frames each epoch visits")
    ap.add_argument("--distinct", type=int, default=256, help="distinct simulated frames, cycled")
    ap.add_argument("--photons", type=float, default=1e6)
    ap.add_argument("--queue", type=int, default=20000, help="pvAccess monitor queue (frames): holds the frames "
                    "that come while the run allocates its device arrays at the first frames")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after the first epoch left out of the lag "
                    "(the run allocates at the first frames; the frames that came meanwhile are taken in then)")
    ap.add_argument("--json", default="", help="write the rows here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [k for k in args.sources.split(",") if k]:
            for rate in [float(r) for r in args.rates.split(",") if r]:
                try:
                    row = one_run(kind, rate, args, Path(tmp))
                except Exception as exc:  # a run that failed ends its source's ramp; say why
                    row = {"source": kind, "rate_target": rate, "sustained": False,
                           "error": f"{type(exc).__name__}: {exc}"}
                    print("INGEST " + json.dumps(row), flush=True)
                rows.append(row)
                if not row["sustained"]:
                    break
    print("\n| source | target frames/s | achieved | frames received / planned | dropped | lag p50 / p95 / max s "
          "| ingest us/frame | H2D copies | sustained |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['source']} | {r['rate_target']:.0f} | error: {r['error'][:80]} | | | | | | no |")
            continue
        print(f"| {r['source']} | {r['rate_target']:.0f} | {r['rate_achieved']:.0f} | {r['frames_received']:,} / "
              f"{r['frames_planned']:,} | {r['frames_dropped']} | {r['lag_p50_s']} / {r['lag_p95_s']} / "
              f"{r['lag_max_s']} | {r['ingest_us_per_frame']} | {r['h2d_copies']} | "
              f"{'yes' if r['sustained'] else 'no'} |")
    for kind in dict.fromkeys(r["source"] for r in rows):
        ok = [r["rate_target"] for r in rows if r["source"] == kind and r["sustained"]]
        print(f"highest sustained rate, {kind}: {max(ok):.0f} frames/s" if ok else
              f"highest sustained rate, {kind}: none of the ramp")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0

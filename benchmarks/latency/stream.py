"""Streaming mode of the latency benchmark (issue 21): first frame acquired -> first image in the browser.

    python -m benchmarks.latency.stream --scans 5 [--rows 40 --cols 40 --point-time 0.005] [--nrmse] [--source pva]

Real processes on loopback, embedded mode (``ptychopy serve`` with the bridge and the worker inside it, SQLite):
``simioc --live-file`` plays a scan and writes its frames into an SWMR file as it goes (each frame's write time in
``/entry/scan/acquired_unix_s``); the bridge opens the streaming job when ``scan2.BUSY`` rises; Chromium (Playwright,
``/usr/bin/chromium``), logged in, opens the job page as soon as the job exists and records, at every image it
draws while the scan acquires, the time and how many frames the image holds (``window.ptychopyLiveDraws``, from
the frames' ``live`` header; frames arrive in scan order, so the image's newest frame is known), and the time of
each drawing (``window.ptychopyDrawStats``: ``page_draw_ms_p50`` of the last 100, ``page_draw_ms_max``).

``--source pva``: ``simioc --live-pva`` streams each scan over pvAccess instead (a private loopback port pair), its
first frame posted right after ``BUSY`` rises (``sim:LiveWait`` = 0: a detector that starts with the scan, before the
job's monitor connects), and the bridge opens the job on ``pva://ptysim:Pva1:Image?scan=ptysim:Scan:`` with its
buffer of the scan's first frames (``[stream] buffer_mib``, ptychopy/pva_buffer.py; ``--buffer-mib 0``: off). A
frame's acquisition time is its NTNDArray time stamp (when simioc posted it), read by a monitor of this process
(:class:`PostTimes`); ``frames_from_buffer``: the frames the job got from the bridge's buffer. Per scan:

- ``first_image_s``: first frame written -> first image drawn in the browser;
- ``lag_max_s``: the image's staleness, just before each new image is drawn: that draw's time minus the write
  time of the newest frame the previous image held (the image shown lags the newest frame by at most this);
  ``lag_at_production_max_s``: the same at the moment the worker produced each image (the browser's share is the
  difference); ``load_average_1min`` of the machine at the end of the scan (the targets are for 2 free cores);
- frames planned / received / dropped, the outcome;
- ``written_after_edge_s``: result file written minus the IOC's time stamp of ``scan2.BUSY`` 1 -> 0, and the same
  without the finishing iterations (``overhead_s``);
- with ``--nrmse`` (first scan): the final object's NRMSE against a batch reconstruction of the scan's row files
  (the batch job's data) with as many epochs as the streaming job ran.

Writes ``results/latency-stream[-tag].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from epics_bridge.simioc_pva import pva_client_env

from .procs import REPO, wait_for
from .rig import PREFIX, Rig, RigOptions

CHROMIUM = "/usr/bin/chromium"
ACQUIRED = "/entry/scan/acquired_unix_s"


def job_row(rig: Rig, job_id: int) -> dict[str, Any]:
    """The job's status, message, stream (``live``), result path and parameters, from the embedded SQLite."""
    conn = sqlite3.connect(f"file:{rig.sqlite_path}?mode=ro", uri=True, timeout=5)
    try:
        r = conn.execute("SELECT status, message, live, result_path, parameters FROM jobs_job WHERE id = ?",
                         (job_id,)).fetchone()
    finally:
        conn.close()
    return {"status": r[0], "message": r[1], "live": json.loads(r[2] or "{}"), "result_path": r[3],
            "parameters": json.loads(r[4])}


def acquired_times(live_file: Path) -> np.ndarray:
    """When each frame of the scan's SWMR file was written (Unix s), in scan order."""
    with h5py.File(live_file, "r", libver="latest", swmr=True) as f:
        return np.asarray(f[ACQUIRED][()], dtype=np.float64)


class PostTimes:
    """A pvAccess monitor of the image PV in this process: each frame's NTNDArray time stamp (Unix s) by uniqueId,
    for the scan being played (:meth:`clear` before it). ``conf``: the client variables reaching simioc."""

    def __init__(self, image_pv: str, conf: dict[str, str]):
        from p4p.client.thread import Context

        self._ctx = Context("pva", nt=False, conf=conf, useenv=False)
        self._lock = threading.Lock()
        self._times: dict[int, float] = {}
        self._first = True
        self._sub = self._ctx.monitor(image_pv, self._on, request="field(uniqueId,timeStamp)record[queueSize=2000]")

    def _on(self, v: Any) -> None:
        if isinstance(v, Exception):
            return
        with self._lock:
            if self._first:  # the value held at connect: an older frame
                self._first = False
                return
            self._times[int(v["uniqueId"])] = float(v["timeStamp.secondsPastEpoch"]) + \
                1e-9 * float(v["timeStamp.nanoseconds"])

    def clear(self) -> None:
        with self._lock:
            self._times.clear()

    def acquired(self, n: int) -> np.ndarray:
        """(n,) the post time of scan points 0..n-1 (uniqueId j + 1); NaN for a frame this monitor missed."""
        with self._lock:
            return np.asarray([self._times.get(j + 1, np.nan) for j in range(n)], dtype=np.float64)

    def close(self) -> None:
        self._sub.close()
        self._ctx.close()


def scan_name(row: dict[str, Any]) -> str:
    """The scan's name (``scan7``) from the job's file pattern: the live file or, over pvAccess, the row files."""
    return re.sub(r"(_live\.h5|_data_#\d+d\.h5)$", "", Path(row["parameters"]["data"]["file_pattern"]).name)


def staleness_s(draws: list[list[float]], acquired: np.ndarray) -> list[float]:
    """For consecutive draws (time, frames in the image): the next draw's time minus the write time of the newest
    frame the earlier image held; the last image's own lag at its draw closes the list."""
    out = []
    for first, second in zip(draws, draws[1:], strict=False):
        out.append(second[0] - float(acquired[int(first[1]) - 1]))
    if draws:
        out.append(draws[-1][0] - float(acquired[int(draws[-1][1]) - 1]))
    return out


def batch_nrmse(row: dict[str, Any], data_dir: Path, scan_name: str, epochs: int) -> tuple[float, float]:
    """(NRMSE of the streaming job's object against a batch run of the scan's row files, the batch run's s)."""
    from reconstruction import Parameters
    from reconstruction.driver import Reconstruction
    from reconstruction.io import read_result
    from reconstruction.metrics import illuminated_region, object_nrmse

    params = Parameters.from_dict(row["parameters"]).replace({
        "data.live_source": "none", "data.file_pattern": str(data_dir / f"{scan_name}_data_#06d.h5"),
        "reconstruction.iterations": int(epochs)})
    t0 = time.perf_counter()
    rec = Reconstruction.from_parameters(params)
    for _ in rec:
        pass
    batch = rec.result()
    batch_s = time.perf_counter() - t0
    live = read_result(row["result_path"])
    n = batch.probe.shape[-1]
    p2 = (np.abs(batch.probe) ** 2).sum(axis=0)
    illum = np.zeros(batch.object.shape, dtype=np.float64)
    for r, c in np.floor(batch.positions_px + 0.5).astype(int):
        illum[r:r + n, c:c + n] += p2
    return float(object_nrmse(batch.object, live.object, illuminated_region(illum))), batch_s


def play_and_watch(rig: Rig, page: Any, *, timeout_s: float = 180.0, posts: PostTimes | None = None
                   ) -> dict[str, Any]:
    """Play one scan, watch its streaming job in ``page`` (logged in), and measure it (see the module); ``posts``:
    the frames' post times over pvAccess (else the SWMR file's write times)."""
    last = max((j["id"] for j in rig.jobs_after(0)), default=0)
    if posts is not None:
        posts.clear()
    rig.ioc_put("sim:Go", 1)
    job = wait_for(lambda: rig.jobs_after(last), 30, "the streaming job (opened at the scan's start)")[0]
    job_id = int(job["id"])
    page.goto(f"/jobs/{job_id}/")
    page_loaded = time.time()
    wait_for(lambda: job_row(rig, job_id)["status"] in ("done", "failed", "cancelled"), timeout_s,
             f"job {job_id} to finish")
    page.wait_for_function("document.getElementById('live').dataset.status === 'done' || "
                           "document.getElementById('live').dataset.status === 'failed'", timeout=30_000)
    draws = page.evaluate("window.ptychopyLiveDraws || []")
    timing = page.evaluate("window.ptychopyDrawStats || null")  # live.js: each drawing's time (ms)
    row = job_row(rig, job_id)
    name = scan_name(row)
    if posts is None:
        acquired = acquired_times(rig.data_dir / f"{name}_live.h5")
    else:
        acquired = posts.acquired(rig.opts.rows * rig.opts.cols)
    _busy, edge_ts = rig.ioc_timestamp("scan2.BUSY")
    written = os.stat(row["result_path"]).st_mtime if row["result_path"] else None
    live = row["live"]
    lags = staleness_s(draws, acquired)
    out: dict[str, Any] = {
        "job": job_id, "scan": name, "status": row["status"], "message": row["message"],
        "frames_planned": live.get("frames_planned"), "frames_received": live.get("frames_received"),
        "frames_dropped": live.get("frames_dropped"), "outcome": live.get("outcome"),
        "frames_from_buffer": live.get("frames_from_buffer"), "frames_timed": int(np.isfinite(acquired).sum()),
        "frames_written": int(acquired.size), "write_rate_hz": (acquired.size - 1) / (acquired[-1] - acquired[0]),
        "first_image_s": (draws[0][0] - float(acquired[0])) if draws else None,
        "first_image_produced_s": (draws[0][2] - float(acquired[0])) if draws else None,
        "job_created_s": job["created"] - float(acquired[0]), "page_loaded_s": page_loaded - float(acquired[0]),
        "images_while_acquiring": len(draws), "lag_max_s": max(lags) if lags else None,
        "lag_at_production_max_s": max((d[2] - float(acquired[int(d[1]) - 1]) for d in draws), default=None),
        "load_average_1min": os.getloadavg()[0],
        "delivery_max_s": max((d[3] - d[2] for d in draws), default=None),  # produced -> received by the page
        "wait_to_draw_max_s": max((d[4] - d[3] for d in draws), default=None),  # received -> drawing starts
        "drawing_max_s": max((d[0] - d[4] for d in draws), default=None),  # the drawing itself (Plotly)
        "lag_p95_s": float(np.percentile(lags, 95)) if lags else None,
        # the page's own timing of its drawings (performance.now() around each; the last 100 of the scan's)
        "page_draw_ms_p50": float(np.percentile(timing["recent_ms"], 50)) if timing and timing["recent_ms"] else None,
        "page_draw_ms_max": timing["max_ms"] if timing else None,
        "live_iterations": live.get("live_iterations"), "finish_iterations": live.get("finish_iterations"),
        "finish_s": live.get("finish_s"),
        "written_after_edge_s": None if written is None else written - edge_ts,
    }
    if written is not None and live.get("finish_s") is not None:
        out["overhead_s"] = out["written_after_edge_s"] - float(live["finish_s"])
    # each image: [drawn, frames in it, produced, received, drawing started] relative to the first frame (s)
    out["draws"] = [[round(float(d[0]) - float(acquired[0]), 3), int(d[1]),
                     *(round(float(x) - float(acquired[0]), 3) for x in d[2:])] for d in draws]
    out["_row"] = row
    return out


def open_browser(rig: Rig, pw: Any) -> tuple[Any, Any]:
    """Chromium logged in to the rig's site: (browser, page)."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
    page = browser.new_context(base_url=rig.base_url, viewport={"width": 1400, "height": 1000}).new_page()
    page.goto("/accounts/login/")
    page.fill("input[name=username]", rig.username)
    page.fill("input[name=password]", rig.password)
    page.locator("form button[type=submit], form input[type=submit]").first.click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url, timeout=15000)
    return browser, page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency.stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=5)
    p.add_argument("--warmup", type=int, default=0, help="scans played first and reported apart (the server's "
                   "first job, the page's first load)")
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--cols", type=int, default=40)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--point-time", type=float, default=0.005, help="s per point (0.005 = 200 frames/s)")
    p.add_argument("--finish", type=int, default=20, help="finishing iterations")
    p.add_argument("--window", type=int, default=200, help="-liveWindow: frames each epoch visits while acquiring")
    p.add_argument("--nrmse", action="store_true", help="compare the first scan with a batch reconstruction")
    p.add_argument("--source", choices=("swmr", "pva"), default="swmr", help="the SWMR live file, or pvAccess "
                   "(simioc --live-pva, the first frame at BUSY, the bridge's buffer of the first frames)")
    p.add_argument("--buffer-mib", type=float, default=None, help="--source pva: [stream] buffer_mib (0: off)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    import tempfile

    from playwright.sync_api import sync_playwright

    work = args.workdir or Path(tempfile.mkdtemp(prefix="latency-stream-"))
    opts = RigOptions(mode="embedded", workdir=work, rows=args.rows, cols=args.cols, size_px=args.size,
                      point_time_s=args.point_time, stream=True, finish_iterations=args.finish,
                      live_window=args.window, stream_pva=args.source == "pva",
                      stream_buffer_mib=args.buffer_mib, live_wait_s=0.0 if args.source == "pva" else None)
    rig = Rig(opts)
    scans: list[dict[str, Any]] = []
    warmups: list[dict[str, Any]] = []
    posts: PostTimes | None = None
    try:
        rig.start()
        if rig.live_pva_port is not None:
            posts = PostTimes(f"{PREFIX}Pva1:Image", pva_client_env(rig.live_pva_port))
        with sync_playwright() as pw:
            browser, page = open_browser(rig, pw)
            try:
                for i in range(args.warmup + args.scans):
                    s = play_and_watch(rig, page, posts=posts)
                    row = s.pop("_row")
                    if i < args.warmup:  # the server's first job and the page's first load: reported apart
                        s["warmup"] = True
                        warmups.append(s)
                        print(json.dumps(s), flush=True)
                        continue
                    if args.nrmse and i == args.warmup:
                        epochs = int(s["live_iterations"] or 0) + int(s["finish_iterations"] or 0)
                        s["nrmse_vs_batch"], s["batch_s"] = batch_nrmse(row, rig.data_dir, s["scan"], epochs)
                    scans.append(s)
                    print(json.dumps(s), flush=True)
            finally:
                browser.close()
    finally:
        if posts is not None:
            posts.close()
        rig.stop()
    firsts = [s["first_image_s"] for s in scans if s["first_image_s"] is not None]
    lags = [s["lag_max_s"] for s in scans if s["lag_max_s"] is not None]
    summary = {"scans": len(scans), "first_image_p50_s": float(np.percentile(firsts, 50)),
               "first_image_p95_s": float(np.percentile(firsts, 95)),
               "first_image_s": [round(x, 3) for x in firsts], "lag_max_per_scan_s": [round(x, 3) for x in lags],
               "lag_max_s": max(lags, default=None), "dropped": sum(s["frames_dropped"] or 0 for s in scans),
               "not_done": [s["job"] for s in scans if s["status"] != "done" or s["message"]],
               "received": sum(s["frames_received"] or 0 for s in scans),
               "load_average_1min": [round(s["load_average_1min"], 2) for s in scans],
               "written_after_edge_max_s": max((s["written_after_edge_s"] or 0 for s in scans), default=None),
               "overhead_max_s": max((s.get("overhead_s", float("nan")) for s in scans), default=None),
               "warmup": [{k: w[k] for k in ("first_image_s", "lag_max_s", "frames_dropped", "load_average_1min")}
                          for w in warmups]}
    print("SUMMARY " + json.dumps(summary), flush=True)
    out = REPO / "benchmarks" / "latency" / "results" / f"latency-stream{('-' + args.tag) if args.tag else ''}.json"
    out.write_text(json.dumps({"options": vars(args) | {"workdir": str(work)}, "scans": scans, "warmup": warmups,
                               "summary": summary},
                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

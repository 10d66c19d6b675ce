"""``python -m benchmarks.latency --mode embedded|production --scans 20 --viewers 1,20 [--submit http]
[--burst 20 --gap-s 0.02]``.

Starts the whole path for each mode (see :mod:`benchmarks.latency.rig`), plays ``--scans`` scans for each viewer
count, then (with ``--burst N``) N scans back to back ``--gap-s`` apart, and writes ``latency-<mode>.json.gz``
(every time stamp) and ``latency-<mode>.md`` (the table) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .procs import REPO
from .rig import EXAMPLE_CONFIG, Rig, RigOptions, bridge_config
from .run import burst_hops, hops, play_burst, play_one

#: issue 11's targets (seconds), and issue 16's PV edge -> job running; ``queued_to_first_frame`` depends on the mode.
TARGETS: dict[str, float] = {"edge_to_queued": 1.0, "edge_to_started": 1.0, "frame_latency_20": 0.2}
FIRST_FRAME_TARGET = {"production": 3.0, "embedded": 2.0}

ROWS = [
    ("edge_to_classified", "PV edge -> scan classified (debounce)"),
    ("edge_to_file_complete", "PV edge -> file confirmed complete"),
    ("file_complete_to_queued", "file complete -> job row queued"),
    ("edge_to_queued", "**PV edge -> job queued**"),
    ("queued_to_started", "job queued -> worker started"),
    ("edge_to_started", "**PV edge -> job running**"),
    ("started_to_first_produced", "worker started -> first frame produced"),
    ("first_produced_to_recv", "first frame produced -> received"),
    ("started_to_first_frame", "worker started -> first frame received"),
    ("queued_to_first_frame", "**job queued -> first frame received**"),
    ("queued_to_first_frame_all_viewers", "job queued -> first frame in the last viewer"),
    ("queued_to_viewers_connected", "(benchmark) job queued -> all viewers connected"),
]


def stats(values: list[float]) -> dict[str, Any]:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    a = np.asarray(xs, dtype=float)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def summarize(mode: str, scans: list[dict[str, Any]], viewer_counts: list[int]) -> dict[str, Any]:
    per = [dict(s, hops=hops(s)) for s in scans]
    out: dict[str, Any] = {}
    for v in viewer_counts + [0]:
        group = [s for s in per if v == 0 or s["viewers"] == v]
        key = "all" if v == 0 else f"viewers_{v}"
        table: dict[str, Any] = {name: stats([s["hops"][name] for s in group]) for name, _ in ROWS}
        table["frame_latency"] = stats([x for s in group for x in s["hops"]["frame_latencies"]])
        table["frame_latency_steady"] = stats([x for s in group for x in s["hops"]["frame_latencies_steady"]])
        table["ws_handshake"] = stats([x for s in group for x in s["hops"]["ws_handshakes"]])
        table["frame_interval"] = stats([x for s in group for x in s["hops"]["frame_intervals"]])
        table["run_s"] = stats([s["hops"]["run_s"] for s in group])
        table["scans"] = len(group)
        table["failed_jobs"] = sum(1 for s in group if s["status"] != "done")
        table["viewer_errors"] = sum(1 for s in group for v_ in s["viewer_logs"] if v_["error"])
        out[key] = table
    return out


def verdicts(mode: str, summary: dict[str, Any]) -> list[tuple[str, float, float | None, bool | None]]:
    res: list[tuple[str, float, float | None, bool | None]] = []
    p95 = summary["all"]["edge_to_queued"]["p95"]
    res.append(("PV edge -> job queued, p95", TARGETS["edge_to_queued"], p95, None if p95 is None else p95 <= 1.0))
    if "edge_to_started" in summary["all"]:  # results written before issue 16 lack it
        p95 = summary["all"]["edge_to_started"]["p95"]
        res.append(("PV edge -> job running, p95", TARGETS["edge_to_started"], p95,
                    None if p95 is None else p95 <= TARGETS["edge_to_started"]))
    target = FIRST_FRAME_TARGET[mode]
    p95 = summary["all"]["queued_to_first_frame"]["p95"]
    res.append(("job queued -> first frame, p95", target, p95, None if p95 is None else p95 <= target))
    big = max((int(k.split("_")[1]) for k in summary if k.startswith("viewers_")), default=0)
    if big:
        for name, what in (("frame_latency", "all running frames"),
                           ("frame_latency_steady", "once all viewers are connected")):
            p95 = summary[f"viewers_{big}"][name]["p95"]
            res.append((f"frame latency with {big} viewers ({what}), p95", TARGETS["frame_latency_20"], p95,
                        None if p95 is None else p95 <= 0.2))
    return res


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    mode, summary = result["mode"], result["summary"]
    keys = [k for k in summary if k.startswith("viewers_")]
    load = "/".join(f"{x:.1f}" for x in result.get("load_avg_after", ()))
    lines = [f"### {mode} mode", "",
             f"{result['date']} · {result['machine']} (1/5/15-min load after the run {load}) · "
             f"commit {result.get('commit', '')} · `{result['command']}`", "",
             f"{result['config_note']}", ""]
    head = "| hop (ms) | " + " | ".join(f"{k.split('_')[1]} viewer(s): p50 / p95 / max" for k in keys) + " |"
    lines += [head, "|---|" + "---|" * len(keys)]

    def row(label: str, name: str) -> str:
        cells = []
        for k in keys:
            s = summary[k][name]
            cells.append(f"{_ms(s['p50'])} / {_ms(s['p95'])} / {_ms(s['max'])} (n={s['n']})")
        return f"| {label} | " + " | ".join(cells) + " |"

    for name, label in ROWS:
        lines.append(row(label, name))
    lines.append(row("**frame produced -> received (during the run)**", "frame_latency"))
    lines.append(row("frame produced -> received, once every viewer is connected", "frame_latency_steady"))
    lines.append(row("(benchmark) websocket handshake, per viewer", "ws_handshake"))
    lines.append(row("interval between running frames at viewer 0", "frame_interval"))
    lines.append(row("job run time (started -> finished)", "run_s"))
    lines += ["", "| target | limit | measured p95 | met |", "|---|---|---|---|"]
    for what, limit, got, ok in verdicts(mode, summary):
        lines.append(f"| {what} | {limit * 1000:,.0f} ms | {_ms(got)} ms | "
                     f"{'–' if ok is None else ('yes' if ok else '**no**')} |")
    fails = sum(summary[k]["failed_jobs"] for k in keys)
    errs = sum(summary[k]["viewer_errors"] for k in keys)
    lines += ["", f"Jobs not done: {fails}; viewer errors: {errs}.", ""]
    for b in result.get("bursts", []):
        lines += burst_markdown(b)
    return "\n".join(lines)


def burst_summary(burst: dict[str, Any]) -> dict[str, Any]:
    h = burst_hops(burst)
    return dict({k: h[k] for k in ("scans", "complete", "not_complete", "jobs", "queued_twice",
                                   "complete_without_job", "jobs_not_done")},
                gap_s=burst["gap_s"], timed_out=burst["timed_out"],
                edge_to_queued=stats(h["edge_to_queued"]), edge_to_started=stats(h["edge_to_started"]),
                queued_to_started=stats(h["queued_to_started"]))


def burst_markdown(burst: dict[str, Any]) -> list[str]:
    """The back-to-back table: exactly-once counts and the hops of every complete scan."""
    b = burst_summary(burst)
    once = (not b["queued_twice"] and not b["complete_without_job"] and b["jobs"] == b["complete"]
            and not b["not_complete"])
    lines = [f"#### Back to back: {b['scans']} scans {b['gap_s'] * 1000:g} ms apart", "",
             f"Complete scan ends journalled: {b['complete']} (others {b['not_complete']}); jobs: {b['jobs']}; "
             f"queued twice: {len(b['queued_twice'])}; complete without a job: {len(b['complete_without_job'])}; "
             f"jobs not done: {b['jobs_not_done']}{'; TIMED OUT' if b['timed_out'] else ''}. "
             f"Each queued exactly once: **{'yes' if once else 'no'}**.", "",
             "| hop (ms) | p50 / p95 / max |", "|---|---|"]
    for name, label in (("edge_to_queued", "PV edge -> job queued"),
                        ("queued_to_started", "job queued -> worker started (waits for the jobs ahead)"),
                        ("edge_to_started", "PV edge -> job running")):
        st = b[name]
        lines.append(f"| {label} | {_ms(st['p50'])} / {_ms(st['p95'])} / {_ms(st['max'])} (n={st['n']}) |")
    return lines + [""]


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{socket.gethostname()}: {os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, CPU worker"


async def run_mode(opts: RigOptions, scans: int, viewer_counts: list[int], warmup: int, *, burst: int = 0,
                   gap_s: float = 0.02, bursts: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Start the rig, play the scans (each with its viewers), then ``burst`` scans back to back (appended to
    ``bursts``); the scans' time stamps."""
    rig = Rig(opts)
    out: list[dict[str, Any]] = []
    try:
        rig.start()
        last_id = 0
        for k in range(warmup):  # the first job in a process pays one-time imports: reported apart
            s = await play_one(rig, 1, last_id)
            last_id = s["job"]
            s["warmup"] = True
            out.append(s)
            opts.log(f"[{opts.mode}] warm-up scan {k + 1}: job {s['job']} {s['status']}")
        for v in viewer_counts:
            for k in range(scans):
                s = await play_one(rig, v, last_id)
                last_id = s["job"]
                s["warmup"] = False
                out.append(s)
                h = hops(s)
                opts.log(f"[{opts.mode}] {v} viewer(s) scan {k + 1}/{scans}: job {s['job']} {s['status']}; "
                         f"edge->queued {_ms(h['edge_to_queued'])} ms, queued->first frame "
                         f"{_ms(h['queued_to_first_frame'])} ms, frames {len(h['frame_latencies'])} "
                         f"p95 {_ms(stats(h['frame_latencies'])['p95'])} ms")
        if burst:
            b = await play_burst(rig, burst, gap_s, last_id)
            if bursts is not None:
                bursts.append(b)
            bs = burst_summary(b)
            opts.log(f"[{opts.mode}] burst of {burst} scans {gap_s * 1000:g} ms apart: {bs['complete']} complete, "
                     f"{bs['jobs']} jobs, queued twice {len(bs['queued_twice'])}; edge->queued p95 "
                     f"{_ms(bs['edge_to_queued']['p95'])} ms, edge->running p95 {_ms(bs['edge_to_started']['p95'])} ms")
    except BaseException:
        for p in rig.procs:
            print(f"--- {p.name} ---\n{p.tail(30)}", file=sys.stderr)
        raise
    finally:
        rig.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    p.add_argument("--mode", default="embedded,production", help="embedded, production or both (comma list)")
    p.add_argument("--scans", type=int, default=20, help="scans per viewer count (default 20)")
    p.add_argument("--viewers", default="1,20", help="viewer counts, comma list (default 1,20)")
    p.add_argument("--warmup", type=int, default=1, help="scans before the measured ones (default 1)")
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--cols", type=int, default=12)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=None, help="override the template's -i")
    p.add_argument("--debounce-s", type=float, default=None, help="override [bridge] debounce_s")
    p.add_argument("--stable-checks", type=int, default=None, help="override [file_check] stable_checks")
    p.add_argument("--file-backoff-s", type=float, default=None, help="override [file_check] initial_backoff_s")
    p.add_argument("--worker-timeout-ms", type=int, default=None,
                   help="dramatiq_worker_timeout for the production worker (default: Dramatiq's 1000)")
    p.add_argument("--web-conn-max-age", type=float, default=None,
                   help="experiment: Daphne with CONN_MAX_AGE=N (benchmarks.latency.settings_conn_reuse)")
    p.add_argument("--embedded-bridge", choices=("inprocess", "process"), default="inprocess",
                   help="embedded mode: the bridge inside the server (default) or as its own process on the same "
                        "SQLite")
    p.add_argument("--submit", choices=("django", "http"), default="django",
                   help="how the bridge process submits: submit_job on the database (default) or the JSON API with "
                        "a bridge token and no database settings (embedded mode: with --embedded-bridge process)")
    p.add_argument("--burst", type=int, default=0, help="then play N scans back to back (simioc sim:Burst)")
    p.add_argument("--gap-s", type=float, default=0.02, help="seconds between the burst's scans (default 0.02)")
    p.add_argument("--no-stamp", action="store_true", help="run the unmodified entry points (no t_produced)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "latency" / "results"))
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    viewer_counts = [int(v) for v in args.viewers.split(",") if v.strip()]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.latency " + " ".join(argv if argv is not None else sys.argv[1:])
    rc = 0
    for mode in modes:
        if mode not in ("embedded", "production"):
            p.error(f"unknown mode {mode!r}")
        work = Path(tempfile.mkdtemp(prefix=f"ptychopy-latency-{mode}-"))
        opts = RigOptions(mode=mode, workdir=work, rows=args.rows, cols=args.cols, size_px=args.size,
                          iterations=args.iterations, debounce_s=args.debounce_s, stable_checks=args.stable_checks,
                          file_backoff_s=args.file_backoff_s, stamp=not args.no_stamp,
                          worker_timeout_ms=args.worker_timeout_ms, web_conn_max_age=args.web_conn_max_age,
                          embedded_bridge=args.embedded_bridge, submit=args.submit,
                          log=lambda msg: print(msg, flush=True))
        t0 = time.monotonic()
        load_before = os.getloadavg()
        bursts: list[dict[str, Any]] = []
        try:
            scans = asyncio.run(run_mode(opts, args.scans, viewer_counts, args.warmup, burst=args.burst,
                                         gap_s=args.gap_s, bursts=bursts))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        measured = [s for s in scans if not s.get("warmup")]
        tmp_cfg = Path(tempfile.mkdtemp(prefix="ptychopy-latency-cfg-"))
        try:
            _, cfg = bridge_config(RigOptions(mode=mode, workdir=tmp_cfg, iterations=args.iterations,
                                              debounce_s=args.debounce_s, stable_checks=args.stable_checks,
                                              file_backoff_s=args.file_backoff_s),
                                   {"journal": tmp_cfg / "j", "state": tmp_cfg / "s"})
        finally:
            shutil.rmtree(tmp_cfg, ignore_errors=True)
        note = (f"Scan {args.rows}x{args.cols} positions at {args.size}^2 (HDF5, one file per row), bridge "
                f"configuration {EXAMPLE_CONFIG.relative_to(REPO)} with debounce_s={cfg['bridge']['debounce_s']}, "
                f"file_check stable_checks={cfg['file_check']['stable_checks']} / initial_backoff_s="
                f"{cfg['file_check']['initial_backoff_s']}, template `{cfg['parameters']['template']}`; "
                f"frame rate 5 Hz; {args.scans} scans per viewer count after {args.warmup} warm-up scan(s); "
                f"dramatiq_worker_timeout={args.worker_timeout_ms or 'default (1000 ms)'}; "
                + (f"embedded bridge {args.embedded_bridge}; " if mode == "embedded" else "bridge its own process; ")
                + "bridge submits over "
                f"{'the JSON API (token, no database settings)' if args.submit == 'http' else 'the database'}; "
                f"Daphne CONN_MAX_AGE={0 if args.web_conn_max_age is None else args.web_conn_max_age:g}; "
                f"producer stamp {'off' if args.no_stamp else 'on (benchmarks/latency/hooks.py)'}.")
        result = dict(mode=mode, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(),
                      command=command, config_note=note,
                      load_avg_before=load_before, load_avg_after=os.getloadavg(),
                      commit=_commit(), wall_s=time.monotonic() - t0,
                      summary=summarize(mode, measured, viewer_counts), scans=scans, bursts=bursts,
                      burst_summaries=[burst_summary(b) for b in bursts])
        suffix = f"-{args.tag}" if args.tag else ""
        with gzip.open(out_dir / f"latency-{mode}{suffix}.json.gz", "wt") as fh:
            fh.write(json.dumps(result, separators=(",", ":")))
        md = markdown(result)
        (out_dir / f"latency-{mode}{suffix}.md").write_text(md)
        print(md, flush=True)
    return rc


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
    except OSError:
        return ""

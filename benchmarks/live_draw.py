"""The live page's drawing time per frame, in Chromium, without a server (issue 21: the browser's share of the lag);
and the comparison page's drawing time (``--compare``).

    python -m benchmarks.live_draw [--frames 30] [--size 256] [--modes 3] [--rate 5] [--json out.json]
                                   [--static DIR]   # another tree's frontend/static, e.g. before a change
    python -m benchmarks.live_draw --compare [--size 256] [--runs 5] [--static DIR]

The job page's scripts (``frontend/static``: Plotly, display.js, live.js) run in a page served by Playwright's
routing, with the page's elements as ``jobs/detail.html`` has them; a stand-in WebSocket hands live.js binary
frames made by ``webapp.live.frames.encode_frame``: a ``size``^2 object (amplitude and phase), ``modes`` probe modes
(amplitude and phase, each ``size``/2 square), the measured and model diffraction patterns (``size``/2 square),
100 scan positions and the error curve, each frame a new iterate (every image changes). Frames are pushed at
``rate`` frames/s (the worker's default is 5/s).

Per frame it reports the time of the animation-frame callback that drew it (``performance.now()`` around every
``requestAnimationFrame`` callback, wrapped before the page's scripts load, so any version of live.js is timed the
same way) and, where live.js keeps them, its own ``window.ptychopyDrawStats``. The figures go to
benchmarks/RESULTS.md ("Issue 21").

``--compare``: the comparison page (/jobs/compare/?a=&b=) with the view's data
(``webapp.jobs.comparison_page.ComparisonView.page_data``) for two noisy copies of the simulation's test object
(``size``^2, B shifted by (1.3, -2.6) px: three images of at most 256 px, and the FRC). Plotly and display.js load
first; then compare.js runs as an inline script, and each run reports the main thread's busy time from just before
it until the page has drawn and gone quiet (Chrome's ``Performance.getMetrics`` TaskDuration: scripts, style,
layout, paint of every task, however the drawing is split into tasks), and the synchronous part
(``performance.now()`` around the script). Figures: benchmarks/RESULTS.md ("Viewer costs").
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from reconstruction.compare import compare_objects, fourier_shift
from reconstruction.test_object import make_test_object
from webapp.jobs.comparison_page import ComparisonView
from webapp.live.frames import FrameImage, downsample_errors, encode_frame, positions_header

REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "frontend" / "static"
ORIGIN = "http://live.test"
CHROMIUM = os.environ.get("PTYCHOPY_TEST_CHROMIUM", "/usr/bin/chromium")

#: The job page's live section (frontend/templates/jobs/detail.html) with the elements live.js reads.
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/static/ptychopy/site.css">
<script src="/static/vendor/plotly-cartesian-2.min.js" defer></script>
<script src="/static/ptychopy/display.js" defer></script>
<script src="/static/ptychopy/panel-hover.js" defer></script>
<script src="/static/ptychopy/live.js" defer></script></head><body>
<section class="live card" id="live" data-ws="/ws/jobs/1/" data-job="1" data-status-at-load="running">
  <div class="stats"><span id="st-status"></span><span id="st-iteration"></span><span id="st-iterations"></span>
    <span id="st-error"></span><span id="st-rate"></span><span id="st-eta"></span>
    <div id="st-live-box" hidden><span id="st-frames"></span><span id="st-dropped"></span>
      <span id="st-phase"></span></div>
    <span id="st-conn"></span></div>
  <div class="progress"><div id="st-bar"></div></div>
  <p id="partial" hidden></p><p id="st-message" hidden></p><p id="waiting">Loading the latest images…</p>
  <div class="tools" id="tools" hidden>
    <button type="button" id="profile-toggle" aria-pressed="false">Line profile</button><span id="profile-hint"></span>
    <input type="number" id="diffraction-index"><button id="diffraction-show">Show</button>
    <select id="scan-colour"><option value="error" selected>error</option><option value="order">order</option></select>
    <span id="diffraction-hint"></span><div id="display-controls"></div></div>
  <div id="scrubber" hidden><input type="range" id="scrub"><span id="scrub-label"></span>
    <button id="scrub-live">Live</button>
    <select id="compare-it-a"></select><select id="compare-it-b"></select></div>
  <div class="plots" id="plots" hidden>
    <div class="plot" id="plot-object_amplitude"></div><div class="plot" id="plot-object_phase"></div>
    <div class="plot" id="plot-errors"></div></div>
</section><section id="details"></section></body></html>"""

#: Before the page's scripts: a WebSocket that takes its messages from ``window.ptychopyTestFrames`` (pushed by
#: ``ptychopyTestPush(i)``), the time of every animation-frame callback (``window.ptychopyRafMs``), and the
#: Plotly calls each plot got (``window.ptychopyPlotlyCalls``: "method plot-id" -> {n: calls, ms: their synchronous
#: time}; caught when the Plotly bundle defines ``window.Plotly``, so any version of live.js is counted the same way).
INIT = """(() => {
  window.ptychopyRafMs = [];
  const calls = window.ptychopyPlotlyCalls = {};
  let plotly;
  Object.defineProperty(window, "Plotly", { configurable: true, get: () => plotly, set: v => {
    ["newPlot", "react", "restyle", "relayout", "update", "extendTraces", "redraw"].forEach(m => {
      const f = v[m];
      if (typeof f === "function") v[m] = function (gd) {
        const id = m + " " + (typeof gd === "string" ? gd : (gd && gd.id) || "?");
        const c = calls[id] = calls[id] || { n: 0, ms: 0 }, t0 = performance.now();
        try { return f.apply(this, arguments); } finally { c.n += 1; c.ms += performance.now() - t0; } };
    });
    plotly = v; } });
  const raf = window.requestAnimationFrame.bind(window);
  window.requestAnimationFrame = cb => raf(t => { const t0 = performance.now(); cb(t);
    window.ptychopyRafMs.push([t0, performance.now() - t0]); });
  class TestSocket {
    constructor(url) { this.url = url; this.readyState = 0; window.ptychopyTestSocket = this;
      setTimeout(() => { this.readyState = 1; if (this.onopen) this.onopen(); }, 0); }
    send(m) { (window.ptychopyTestSent = window.ptychopyTestSent || []).push(m); }
    close() {}
  }
  TestSocket.OPEN = 1;
  window.WebSocket = TestSocket;
  window.ptychopyTestFrames = [];
  window.ptychopyTestAdd = b64 => { const s = atob(b64), a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    window.ptychopyTestFrames.push(a.buffer); return window.ptychopyTestFrames.length; };
  window.ptychopyTestPush = i => window.ptychopyTestSocket.onmessage({ data: window.ptychopyTestFrames[i].slice(0) });
})();"""


def _u8(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = float(values.min()), float(values.max())
    return np.round(255 * (values - lo) / (hi - lo or 1)).astype(np.uint8), lo, hi


def sample_frame(
    seq: int, size: int = 256, modes: int = 3, pixel_m: float = 20e-9, images: dict[str, np.ndarray] | None = None,
    iterations_per_frame: int = 1, scan_chunk: int = 0, binning: int | None = None, status: str = "running",
) -> bytes:
    """One binary live frame (``webapp/live/frames.py``) of the ``seq``-th frame: a ``size``^2 object, ``modes``
    probe modes and two diffraction patterns of (``size``/2)^2, 100 positions, the errors so far (``seq`` + 1 times
    ``iterations_per_frame`` iterations, downsampled to 500 points as the worker does). Every image changes with
    ``seq``; ``images`` (name -> uint8 array, or (uint8 array, vmin, vmax); vmin 0, vmax 255 when not given) replaces
    generated ones; ``binning`` goes into the header (``diffraction_binning``) when given; ``status`` is the job's.
    ``scan_chunk`` > 0:
    each frame carries new Fourier errors for that many positions (the worker measures a chunk a frame), so the
    scan's colours change every frame; 0: the same errors in every frame."""
    rng = np.random.default_rng(seq)
    yy, xx = np.mgrid[0:size, 0:size] / size
    amp = (
        0.5
        + 0.4 * np.sin(2 * np.pi * (3 * xx + seq / 10)) * np.cos(2 * np.pi * 2 * yy)
        + 0.05 * rng.random((size, size))
    )
    phase = 1.5 * np.sin(2 * np.pi * (xx + yy + seq / 20)) + 0.1 * rng.random((size, size))
    frame: list[FrameImage] = []
    for name, values in (("object_amplitude", amp), ("object_phase", phase)):
        u8, lo, hi = _u8(values)
        frame.append(FrameImage(name, u8, lo, hi, pixel_m))
    half = size // 2
    py, px = (np.mgrid[0:half, 0:half] - half / 2) / half
    for m in range(modes):
        pa = np.exp(-((px - 0.05 * m) ** 2 + py**2) / 0.02) * (1 + 0.01 * seq) + 0.01 * rng.random((half, half))
        pp = np.arctan2(py, px + 0.1 * m) + 0.01 * seq
        for kind, values in (("amplitude", pa), ("phase", pp)):
            u8, lo, hi = _u8(values)
            frame.append(FrameImage(f"probe_{kind}_{m}", u8, lo, hi, pixel_m))
    for name in ("diffraction_measured", "diffraction_model"):
        u8, lo, hi = _u8(np.log10(1 + 1e4 * np.exp(-(px**2 + py**2) / 0.01) * (1 + rng.random((half, half)))))
        frame.append(FrameImage(name, u8, lo, hi))
    if images:
        given = {name: v if isinstance(v, tuple) else (v, 0.0, 255.0) for name, v in images.items()}
        frame = [
            FrameImage(img.name, *given[img.name], img.pixel_m) if img.name in given else img for img in frame
        ]
    grid = np.stack(np.meshgrid(np.arange(10), np.arange(10), indexing="ij"), -1).reshape(-1, 2) * 10.0 + 64
    its = (seq + 1) * iterations_per_frame
    error_iterations, errors = downsample_errors([1.0 / (1 + k / iterations_per_frame) for k in range(its)])
    position_errors = np.linspace(0.1, 0.2, 100)
    if scan_chunk:
        start = (seq * scan_chunk) % 100
        position_errors[start : start + scan_chunk] *= 1 + 0.3 * np.sin(seq)
    header: dict[str, Any] = {
        "seq": seq,
        "iteration": its,
        "iterations": max(1000, 2 * its),
        "status": status,
        "error": errors[-1],
        "errors": errors,
        "error_iterations": error_iterations,
        "rate_per_s": 5.0,
        "eta_s": 100.0,
        "t_produced": time.time(),
        "probe_power": _powers(seq, modes),
        "pixel_size_m": pixel_m,
        "diffraction_position": 45,
        "n_positions": 100,
        "positions": positions_header(grid, grid, 1, refined=False, errors=position_errors),
    }
    if binning is not None:
        header["diffraction_binning"] = binning
    return encode_frame(header, frame)


def _powers(seq: int, modes: int) -> list[float]:
    """Each mode's share of the probe's power, shifting with ``seq`` (the probe panels' titles change)."""
    w = np.array([0.5**m for m in range(modes)]) * (1 + 0.01 * seq * np.arange(modes))
    return [round(float(x), 6) for x in w / w.sum()]


def serve(page: Any, pages: dict[str, str], static: Path = STATIC) -> None:
    """Answer ``page``'s requests to ``ORIGIN``: ``pages`` (path -> HTML) and ``/static/`` from ``static``."""

    def route(r: Any) -> None:
        path = r.request.url[len(ORIGIN) :].split("?")[0]
        if path.startswith("/static/"):
            file = (static / path[len("/static/") :]).resolve()
            if static.resolve() in file.parents and file.is_file():
                kind = {".js": "text/javascript", ".css": "text/css"}.get(file.suffix, "application/octet-stream")
                r.fulfill(status=200, body=file.read_bytes(), content_type=kind)
                return
            r.fulfill(status=404, body="")
        elif path in pages:
            r.fulfill(status=200, body=pages[path], content_type="text/html")
        else:
            r.fulfill(status=404, body="")

    page.route(f"{ORIGIN}/**", route)


def open_page(context: Any, static: Path = STATIC) -> Any:
    """A page of ``context`` (Playwright) showing the live view over the stand-in socket, its scripts loaded
    from ``static`` (the repository's ``frontend/static``, or another tree's to compare)."""
    page = context.new_page()
    page.add_init_script(INIT)
    serve(page, {"/jobs/1/": PAGE}, static)
    page.goto(f"{ORIGIN}/jobs/1/")
    page.wait_for_function("() => window.ptychopyTestSocket && window.ptychopyTestSocket.readyState === 1")
    return page


def add_frames(page: Any, frames: list[bytes]) -> None:
    """Hand the frames to the page (``ptychopyTestPush(i)`` then delivers frame i)."""
    for data in frames:
        page.evaluate("b => window.ptychopyTestAdd(b)", base64.b64encode(data).decode())


def push(page: Any, index: int, seq: int) -> None:
    """Deliver frame ``index`` and wait until live.js drew it (its ``data-seq``)."""
    page.evaluate("i => window.ptychopyTestPush(i)", index)
    page.wait_for_function(f"() => document.getElementById('live').dataset.seq === '{seq}'", timeout=60000)


def measure(
    frames: int = 30, size: int = 256, modes: int = 3, rate: float = 5.0, static: Path = STATIC,
    iterations_per_frame: int = 1, scan_chunk: int = 0, height: int = 1000,
) -> dict[str, Any]:
    """Per-frame drawing times of the live page over ``frames`` frames (the first, which builds the plots,
    reported apart): the animation-frame callbacks' time (``draw_ms``) and the main thread's busy time from one
    frame's arrival to the next one's (``busy_ms``: Chrome's TaskDuration, so work a page defers to timers counts
    too), in a window ``height`` px tall (3000: every plot in view, the error curve and the scan included)."""
    from playwright.sync_api import sync_playwright

    data = [sample_frame(k, size, modes, iterations_per_frame=iterations_per_frame, scan_chunk=scan_chunk)
            for k in range(frames)]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": height})
            page = open_page(context, static)
            add_frames(page, data)
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            draws: list[float] = []
            busy: list[float] = []
            for k in range(frames):
                t0 = time.monotonic()
                n0 = page.evaluate("() => window.ptychopyRafMs.length")
                b0 = task_seconds(cdp)
                push(page, k, k)
                page.wait_for_timeout(50)  # any animation frame the drawing asked for
                draws.append(page.evaluate("n => window.ptychopyRafMs.slice(n).reduce((a, r) => a + r[1], 0)", n0))
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))
                busy.append(1000 * (task_seconds(cdp) - b0))
            stats = page.evaluate("() => window.ptychopyDrawStats || null")
            calls = page.evaluate("() => window.ptychopyPlotlyCalls")
        finally:
            browser.close()
    rest, busy_rest = draws[1:], busy[1:]
    return {
        "frames": frames,
        "size": size,
        "modes": modes,
        "rate_per_s": rate,
        "iterations_per_frame": iterations_per_frame,
        "scan_chunk": scan_chunk,
        "height_px": height,
        "first_ms": round(draws[0], 1),
        "median_ms": round(statistics.median(rest), 1),
        "p95_ms": round(float(np.percentile(rest, 95)), 1),
        "max_ms": round(max(rest), 1),
        "busy_median_ms": round(statistics.median(busy_rest), 1),
        "busy_p95_ms": round(float(np.percentile(busy_rest, 95)), 1),
        "draw_ms": [round(d, 1) for d in draws],
        "busy_ms": [round(b, 1) for b in busy],
        "plotly_calls": calls,
        "plotly_ms_per_frame": {  # the Plotly calls' synchronous time per frame, by plot
            plot: round(sum(c["ms"] for k, c in calls.items() if k.split(" ", 1)[1] == plot) / frames, 1)
            for plot in sorted({k.split(" ", 1)[1] for k in calls})
        },
        "load_average_1min": os.getloadavg()[0],
        "page_stats": stats,
    }


#: The comparison card of frontend/templates/jobs/compare.html, without compare.js (the benchmark runs it).
COMPARE_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/static/ptychopy/site.css">
<script src="/static/vendor/plotly-cartesian-2.min.js" defer></script>
<script src="/static/ptychopy/display.js" defer></script></head><body><main>
<section class="card" id="comparison"><dl class="facts"><dd id="compare-resolution"></dd></dl>
  <div class="plots" id="compare-plots">
    <div class="plot" id="plot-phase_a"></div><div class="plot" id="plot-phase_b"></div>
    <div class="plot" id="plot-phase_difference"></div><div class="plot" id="plot-frc"></div></div>
  <script id="compare-data" type="application/json">DATA</script></section></main></body></html>"""

#: Runs compare.js (its text) as an inline script: the synchronous part's milliseconds.
RUN_COMPARE = """src => { const s = document.createElement('script'); s.textContent = src;
    const t0 = performance.now(); document.body.appendChild(s); return performance.now() - t0; }"""


def compare_page_data(size: int = 256, pixel_m: float = 20e-9) -> dict[str, Any]:
    """The comparison page's data for two noisy copies of a ``size``^2 test object, B shifted by (1.3, -2.6) px."""
    rng = np.random.default_rng(0)
    truth = make_test_object((size, size), seed=1).astype(np.complex128)
    moved = fourier_shift(truth, (1.3, -2.6))
    a = truth + 0.02 * (rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape))
    b = moved + 0.02 * (rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape))
    return ComparisonView(compare_objects(a, b, pixel_m)).page_data()


def open_compare(context: Any, data: dict[str, Any], static: Path = STATIC) -> Any:
    """A page of ``context`` with the comparison card, Plotly and display.js loaded, compare.js not yet run."""
    page = context.new_page()
    html = COMPARE_PAGE.replace("DATA", json.dumps(data).replace("</", "<\\/"))
    serve(page, {"/jobs/compare/": html}, static)
    page.goto(f"{ORIGIN}/jobs/compare/")
    page.wait_for_function("() => window.Plotly && window.ptychopyDisplay")
    return page


def run_compare(page: Any, static: Path = STATIC) -> float:
    """Run compare.js in ``page`` and wait until it has drawn; the synchronous part's milliseconds."""
    sync_ms = page.evaluate(RUN_COMPARE, (static / "ptychopy" / "compare.js").read_text())
    page.wait_for_function("() => document.getElementById('comparison').dataset.drawn === '1'")
    return float(sync_ms)


def task_seconds(cdp: Any) -> float:
    """The page's main-thread busy time so far (Chrome's TaskDuration, seconds) through a CDP session with
    ``Performance.enable`` sent."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def measure_compare(size: int = 256, runs: int = 5, static: Path = STATIC) -> dict[str, Any]:
    """Main-thread busy time of drawing the comparison page, ``runs`` times (a fresh page each)."""
    from playwright.sync_api import sync_playwright

    data = compare_page_data(size)
    busy, sync = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            for _ in range(runs):
                page = open_compare(context, data, static)
                cdp = context.new_cdp_session(page)
                cdp.send("Performance.enable")
                page.wait_for_timeout(300)  # the page's own start-up settles
                t0 = task_seconds(cdp)
                sync.append(run_compare(page, static))
                page.wait_for_timeout(500)  # promises, afterplot paints, the responsive resize
                busy.append(1000 * (task_seconds(cdp) - t0))
                types = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                      ".map(d => d.data.map(t => t.type).join('+'))")
                page.close()
        finally:
            browser.close()
    return {
        "size": size,
        "images": [img["shape"] for img in data["images"]],
        "runs": runs,
        "busy_ms_median": round(statistics.median(busy), 1),
        "busy_ms": [round(b, 1) for b in busy],
        "sync_ms_median": round(statistics.median(sync), 1),
        "trace_types": types,
        "load_average_1min": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--modes", type=int, default=3)
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--iterations-per-frame", type=int, default=1, help="iterations between two frames")
    p.add_argument("--scan-chunk", type=int, default=0, help="positions whose Fourier error each frame changes")
    p.add_argument("--height", type=int, default=1000, help="the window's height (3000: every plot in view)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--static", type=Path, default=STATIC, help="the static files to serve (another tree's to compare)")
    p.add_argument("--compare", action="store_true", help="the comparison page's drawing instead")
    p.add_argument("--runs", type=int, default=5, help="--compare: fresh pages drawn")
    a = p.parse_args(argv)
    if a.compare:
        result = measure_compare(a.size, a.runs, a.static)
        result["date_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        if a.json:
            a.json.write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    load0 = os.getloadavg()[0]
    out = measure(a.frames, a.size, a.modes, a.rate, a.static, a.iterations_per_frame, a.scan_chunk, a.height)
    out["load_average_1min_start"] = load0
    out["date_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    summary = {k: v for k, v in out.items() if k not in ("draw_ms", "busy_ms", "page_stats", "plotly_calls")}
    print(json.dumps(summary))
    print("draw ms per frame:", out["draw_ms"])
    print("busy ms per frame:", out["busy_ms"])
    print("Plotly calls:", json.dumps(out["plotly_calls"]))
    if out["page_stats"]:
        print("ptychopyDrawStats:", json.dumps({k: v for k, v in out["page_stats"].items() if k != "frames"}))


if __name__ == "__main__":
    main()

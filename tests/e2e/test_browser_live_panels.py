"""The live page's image panels in Chromium (issue 20 follow-ups), over benchmarks/live_draw.py's stand-in socket (no
server): hovering a pixel shows where it is and its value in the panel's unit from the frame's preview, with no
request; the colour bars' labels stay inside their panel and clear of the neighbours' axes at 1400 and 1000 px;
the probe titles follow the power shares without a Plotly relayout; a finished job's diffraction click answered 503
(an earlier click still simulates the scan) is asked again after its Retry-After.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from benchmarks.live_draw import add_frames, open_page, push, sample_frame

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

# move the pointer to the centre of image pixel (row, col) of a panel, through Plotly's axes
POINT_JS = """([id, row, col]) => { const d = document.getElementById(id), L = d._fullLayout, t = d.data[0];
    const b = d.getBoundingClientRect();
    return [b.left + L.xaxis._offset + L.xaxis.l2p(t.x0 + col * t.dx),
            b.top + L.yaxis._offset + L.yaxis.l2p(t.y0 + row * t.dy)]; }"""

BOX_JS = """id => { const b = document.querySelector('#' + id + ' .panel-hover');
    return b && !b.hidden ? {text: b.innerText, row: +b.dataset.row, col: +b.dataset.col, value: +b.dataset.value}
                          : null; }"""


def hover(pg, plot_id: str, row: int, col: int) -> dict:  # type: ignore[no-untyped-def]
    """The hover box of ``plot_id`` with the pointer on image pixel (row, col)."""
    pg.mouse.move(0, 0)
    pg.mouse.move(*pg.evaluate(POINT_JS, [plot_id, row, col]))
    pg.wait_for_function(f"() => {{ const b = document.querySelector('#{plot_id} .panel-hover');"
                         f" return b && !b.hidden && b.dataset.row === '{row}' && b.dataset.col === '{col}'; }}")
    box = pg.evaluate(BOX_JS, plot_id)
    assert box is not None
    return box


def test_hovering_a_pixel_shows_its_position_and_value_in_the_panels_unit_from_the_preview(browser) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    obj = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    probe = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    pattern = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    ranges = {"object_amplitude": (obj, 0.2, 1.4), "object_phase": (obj[::-1].copy(), -2.5, 3.0),
              "probe_amplitude_0": (probe, 0.0, 40.0), "probe_phase_0": (probe.T.copy(), -3.14, 3.14),
              "diffraction_measured": (pattern, 0.0, 4.5), "diffraction_model": (pattern, 0.0, 4.5)}
    later = {**ranges, "object_amplitude": (255 - obj, 0.2, 1.4)}
    frames = [sample_frame(0, size=64, modes=1, images=ranges, binning=4),
              sample_frame(1, size=64, modes=1, images=later, binning=4)]
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    try:
        pg = add_and_show(context, frames)
        requests: list[str] = []
        pg.on("request", lambda r: requests.append(r.url))
        # 20 nm pixels: the 64 px object is 1.28 µm across, so the axes (and the hover) are in nm
        for plot_id, name, row, col in (("plot-object_amplitude", "object_amplitude", 20, 30),
                                        ("plot-object_phase", "object_phase", 41, 7),
                                        ("plot-probe_amplitude_0", "probe_amplitude_0", 9, 22),
                                        ("plot-probe_phase_0", "probe_phase_0", 16, 3)):
            box = hover(pg, plot_id, row, col)
            pixels, lo, hi = ranges[name]
            value = lo + (hi - lo) * int(pixels[row, col]) / 255
            x_nm, y_nm = (col + 0.5) * 20, (row + 0.5) * 20
            assert box["value"] == pytest.approx(value, rel=1e-6), (name, box)
            assert f"x {x_nm:g} nm, y {y_nm:g} nm" in box["text"], (name, box["text"])
            shown = re.search(r"(amplitude|phase) (-?[\d.e+-]+)( rad)?", box["text"])
            assert shown and float(shown.group(2)) == pytest.approx(value, abs=1e-3 * max(1, abs(value)))
            assert (shown.group(3) == " rad") == ("phase" in name), box["text"]
            assert "preview value, to 1/255 of the range" in box["text"]
            assert f"±{float(f'{(hi - lo) / 510:.2g}'):g}" in box["text"], box["text"]
        # the diffraction panel: counts (log10(1 + counts) on its range), summed over 4 x 4 detector pixels; rows and
        # columns as its axes (no sample-plane size)
        box = hover(pg, "plot-diffraction_measured", 12, 19)
        counts = 10 ** (4.5 * int(pattern[12, 19]) / 255) - 1
        assert box["value"] == pytest.approx(counts, rel=1e-6) and "row 12, col 19" in box["text"], box
        assert re.search(r"[\d.e+]+ counts \(the sum of 4 × 4 detector pixels\)", box["text"]), box["text"]
        assert "preview value, to 1/255 of the log10 range" in box["text"]
        # a new frame while the pointer rests: the box shows the new value there
        box = hover(pg, "plot-object_amplitude", 5, 6)
        push(pg, 1, 1)
        pg.wait_for_function("() => +document.querySelector('#plot-object_amplitude .panel-hover').dataset.value"
                             f" !== {box['value']}")
        newer = pg.evaluate(BOX_JS, "plot-object_amplitude")
        assert newer["value"] == pytest.approx(0.2 + 1.2 * (255 - int(obj[5, 6])) / 255, rel=1e-6)
        assert requests == []  # read from the frame the page holds: no request
        pg.mouse.move(2, 2)  # off the plots: the box goes
        pg.wait_for_function("() => document.querySelector('#plot-object_amplitude .panel-hover').hidden")
    finally:
        context.close()


def add_and_show(context, frames: list[bytes]):  # type: ignore[no-untyped-def]
    pg = open_page(context)
    add_frames(pg, frames)
    push(pg, 0, 0)
    settled(pg)
    return pg


def settled(pg) -> None:  # type: ignore[no-untyped-def]
    """Wait (at most 5 s) until every plot is as wide as its grid cell: Plotly's size follows the page's layout
    (before, a plot kept the width its cell had when first drawn; the layout test checks the outcome)."""
    with contextlib.suppress(PlaywrightTimeout):
        pg.wait_for_function("""() => Array.from(document.querySelectorAll('.plot')).every(d =>
            d._fullLayout && Math.abs(d._fullLayout.width - d.clientWidth) < 1)""", timeout=5000)
    pg.wait_for_timeout(200)


# every image panel's colour-bar labels in page coordinates, where display.js paintUnder draws them (from the
# plot's axes: the bar 10 px right of the plot area over the middle 90 % of its height, each label 27 px right of
# the plot area, 11 px text centred on its tick, the five ticks evenly spaced), the axis labels of every plot (tick
# labels and titles), each plot's box and its Plotly drawing's box
LAYOUT_JS = """() => { const plots = Array.from(document.querySelectorAll('.plot'));
    const rect = r => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom});
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = "11px 'Open Sans', verdana, arial, sans-serif";
    return plots.map(d => { const b = d.getBoundingClientRect(), L = d._fullLayout, sc = d.ptychopyScale;
        const bar = !sc || !L ? [] : sc.ticktext.map((text, i) => {
            const x = b.left + L.xaxis._offset + L.xaxis._length + 27;
            const y = b.top + L.yaxis._offset + L.yaxis._length * (0.05 + 0.9 * (1 - i / (sc.ticktext.length - 1)));
            return {text: text, left: x, right: x + ctx.measureText(text).width, top: y - 7, bottom: y + 7}; });
        return {id: d.id, box: rect(b), svg: rect(d.querySelector('.main-svg').getBoundingClientRect()), bar: bar,
                axes: Array.from(d.querySelectorAll('.xtick text, .ytick text, .g-xtitle text, .g-ytitle text'))
                        .map(t => rect(t.getBoundingClientRect())).filter(r => r.right > r.left)}; }); }"""


def overlaps(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.parametrize("width", [1400, 1000])
def test_colour_bar_labels_stay_inside_their_panel_and_clear_of_the_neighbours_axes(browser, width: int) -> None:  # type: ignore[no-untyped-def]
    # a 128 px object, two probe modes (a probe amplitude's range starts near 1e-5: the longest labels)
    context = browser.new_context(viewport={"width": width, "height": 1400})
    try:
        pg = add_and_show(context, [sample_frame(0, size=128, modes=2)])
        plots = pg.evaluate(LAYOUT_JS)
        images = [p for p in plots if p["bar"]]
        assert {"plot-object_amplitude", "plot-object_phase", "plot-probe_amplitude_1",
                "plot-diffraction_model"} <= {p["id"] for p in images}
        for p in images:
            for label in p["bar"]:
                inside = p["box"]["left"] <= label["left"] and label["right"] <= p["box"]["right"]
                assert inside, (width, p["id"], label)
                for other in plots:
                    if other["id"] == p["id"]:
                        continue
                    hit = [a for a in other["axes"] if overlaps(label, a)]
                    assert not hit, (width, p["id"], label, other["id"], hit)
        for p in plots:  # Plotly's drawing fits its grid cell (it reached into the next one when the columns changed)
            assert p["box"]["left"] <= p["svg"]["left"] and p["svg"]["right"] <= p["box"]["right"] + 0.5, (width, p)
    finally:
        context.close()


def test_probe_titles_follow_the_power_without_a_plotly_relayout(browser) -> None:  # type: ignore[no-untyped-def]
    frames = [sample_frame(k, size=32, modes=3) for k in range(6)]
    context = browser.new_context(viewport={"width": 1400, "height": 3000})
    try:
        pg = add_and_show(context, frames)
        for k in range(1, 6):
            push(pg, k, k)
        titles = pg.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('.plot .panel-title'))
            .map(t => [t.parentNode.id, t.textContent]))""")
        calls = pg.evaluate("() => Object.keys(window.ptychopyPlotlyCalls)")
        assert not [c for c in calls if c.startswith("relayout plot-probe")], calls
        # the newest frame's shares (benchmarks.live_draw._powers(5, 3)), to 3 digits
        w = np.array([1, 0.5, 0.25]) * (1 + 0.05 * np.arange(3))
        for mode, share in enumerate(w / w.sum()):
            assert titles[f"plot-probe_amplitude_{mode}"] == (
                f"Probe mode {mode} amplitude ({float(f'{100 * share:.3g}'):g} % of the power)"), titles
        assert titles["plot-probe_phase_2"] == "Probe mode 2 phase (rad)" and titles["plot-object_amplitude"] == (
            "Object amplitude")
        # a title is set only when its text changed: each of the 10 panels' once, then the 3 amplitudes' every frame
        stats = pg.evaluate("() => window.ptychopyDrawStats.panels")
        assert stats["titles_changed"] == 10 + 3 * 5, stats
    finally:
        context.close()


def test_a_finished_jobs_click_answered_503_being_prepared_is_asked_again_after_retry_after(browser) -> None:  # type: ignore[no-untyped-def]
    pattern = np.arange(32 * 32, dtype=np.uint32).reshape(32, 32).astype(np.uint8)
    image = {"shape": [32, 32], "vmin": 0.0, "vmax": 4.0, "bdata": base64.b64encode(pattern.tobytes()).decode()}
    body = {"position": 7, "n_positions": 100, "binning": 2, "log_range": [0.0, 4.0],
            "images": [{"name": "diffraction_measured", **image}, {"name": "diffraction_model", **image}]}
    asked: list[float] = []

    def answer(route) -> None:  # type: ignore[no-untyped-def]
        asked.append(time.monotonic())
        if len(asked) == 1:  # as webapp/jobs/views.py answers while another request holds the cache file's lock
            route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="application/json",
                          body=json.dumps({"error": "job 1's position 7 is being prepared: the simulated scan is being "
                                                    "prepared by an earlier request (waited 3 s for it): try again in "
                                                    "a few seconds"}))
        else:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    try:
        pg = open_page(context)
        pg.route("**/jobs/1/diffraction/?position=7", answer)
        add_frames(pg, [sample_frame(0, size=64, modes=1, status="done")])
        push(pg, 0, 0)
        pg.fill("#diffraction-index", "7")
        pg.locator("#diffraction-show").click()
        pg.wait_for_function("() => /being prepared.*asking again in 1 s/"
                             ".test(document.getElementById('diffraction-hint').textContent)", timeout=5000)
        pg.wait_for_function("() => document.getElementById('live').dataset.diffractionPosition === '7'",
                             timeout=10000)
        assert len(asked) == 2 and asked[1] - asked[0] >= 0.9
        assert "result's model" in (pg.locator("#diffraction-hint").text_content() or "")
        box = hover(pg, "plot-diffraction_model", 3, 5)  # the answer's binning reaches the hover
        assert "(the sum of 2 × 2 detector pixels)" in box["text"]
        assert box["value"] == pytest.approx(10 ** (4 * int(pattern[3, 5]) / 255) - 1, rel=1e-6)
    finally:
        context.close()

"""The job page's states in Chromium, checked by structure (elements, texts, sizes), not by pixels.

One worker serves the queue, so a long job keeps a second one queued: the running page's duration ticks and its
connection says "live"; the queued page has no plot but a placeholder, its queue position and an estimated start;
a failed job shows no plot but its reason, and never "live"; a finished job says it is closed; cancel and delete
ask first (dismissing keeps the job); the history fits a 1400 px window with a long path label and shows why a job
failed. Screenshots are kept under test-output/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.test_browser import log_in
from tests.support.processes import TEST_OUTPUT
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(240)]

LONG_LABEL = "/data/beamline/2026-12/" + "/".join(f"very_long_sample_folder_{k:02d}" for k in range(12)) + "/scan.h5"


def shot(pg, name: str, part: str = "#live") -> None:  # type: ignore[no-untyped-def]
    """The whole page under test-output/; with PTYCHOPY_DOC_SCREENSHOTS=<folder> also the ``part`` the docs show,
    as a JPEG (docs/img/ is made this way)."""
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(TEST_OUTPUT / f"browser-page-{name}.png"), full_page=True)
    folder = os.environ.get("PTYCHOPY_DOC_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        pg.locator(part).first.screenshot(path=str(Path(folder) / f"job-page-{name}.jpg"), type="jpeg", quality=70)


def conn_text(pg) -> str:  # type: ignore[no-untyped-def]
    return (pg.locator("#st-conn").text_content() or "").strip()


def wait_conn(pg, pattern: str) -> str:  # type: ignore[no-untyped-def]
    pg.wait_for_function(f"() => /{pattern}/.test(document.getElementById('st-conn').textContent)", timeout=20000)
    return conn_text(pg)


def test_job_page_states_queue_estimate_confirmations_and_history(  # type: ignore[no-untyped-def]
        page, prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    timed = api.submit(small_sim_cmdstr(30, size=32, scan=4, job_id="timed"), label="timed")
    assert api.wait_status(timed["id"], {"done", "failed", "cancelled"}, 90)["status"] == "done"
    # -device=gpu on a machine without one fails on the worker before the first iteration
    failed = api.submit(small_sim_cmdstr(30, size=32, scan=4, job_id="nogpu", extra="-device=gpu"), label="no gpu")
    failed_row = api.wait_status(failed["id"], {"done", "failed", "cancelled"}, 90)
    assert failed_row["status"] == "failed" and failed_row["message"], failed_row
    running = api.submit(small_sim_cmdstr(3000, job_id="long"), label="long")
    api.wait_status(running["id"], {"running"}, 60)
    queued = api.submit(small_sim_cmdstr(40, job_id="queued"), label=LONG_LABEL)
    pg = page
    log_in(pg, alice)
    try:
        # running: "live", a duration that ticks, plots drawn
        pg.goto(f"/jobs/{running['id']}/")
        assert wait_conn(pg, "live") == "live"
        pg.locator("#plot-object_amplitude canvas.image-under").first.wait_for(timeout=30000)
        first = pg.locator("#duration").text_content()
        pg.wait_for_timeout(2200)
        assert pg.locator("#duration").text_content() != first, "the duration did not tick"

        # queued: no plot, a placeholder, its place in the queue and an estimate of when it starts
        pg.goto(f"/jobs/{queued['id']}/")
        assert "waiting for a worker" in wait_conn(pg, "waiting")
        assert pg.locator("#plots").is_hidden() and pg.locator("#plots .main-svg").count() == 0
        assert "Queued" in (pg.locator("#waiting").text_content() or "")
        assert pg.locator("#waiting").is_visible()
        assert pg.locator("#queue-position").text_content() == "1"
        assert pg.evaluate("() => document.documentElement.scrollWidth") <= 1400  # the long label wraps here too
        wait_s = float(pg.locator("#queue-eta").get_attribute("data-wait-s") or "nan")
        assert 0 < wait_s < 3600, wait_s  # the long job's rest, at its own rate
        assert "Estimated from" in (pg.locator("#queue-info").text_content() or "")
        shot(pg, "queued")
        # cancel asks first: dismissing keeps the job queued
        messages: list[str] = []
        pg.once("dialog", lambda d: (messages.append(d.message), d.dismiss()))
        pg.locator("#cancel-form button[type=submit]").click()
        pg.wait_for_timeout(300)
        assert messages and "Cancel job" in messages[0]
        assert api.job(queued["id"])["status"] == "queued"
        # delete asks first as well
        pg.once("dialog", lambda d: (messages.append(d.message), d.dismiss()))
        pg.locator("form[action$='/delete/'] button[type=submit]").click()
        pg.wait_for_timeout(300)
        assert len(messages) == 2 and "Delete job" in messages[1]
        assert api.get(f"/api/v1/jobs/{queued['id']}/").status == 200

        # failed before its first iteration: a sentence instead of plots, the reason, never "live"
        pg.goto(f"/jobs/{failed['id']}/")
        assert "closed" in wait_conn(pg, "closed")
        assert pg.locator("#plots").is_hidden() and pg.locator("#plots .main-svg").count() == 0
        assert "failed before its first iteration" in (pg.locator("#waiting").text_content() or "")
        assert failed_row["message"][:40] in (pg.locator("#st-message").text_content() or "")
        shot(pg, "failed")

        # done: images drawn, the connection says it is closed
        pg.goto(f"/jobs/{timed['id']}/")
        assert "closed" in wait_conn(pg, "closed")
        pg.locator("#plot-object_amplitude canvas.image-under").first.wait_for(timeout=10000)
        assert "live" not in conn_text(pg)

        # history: fits 1400 px with a long path label, says why a job failed
        pg.goto("/")
        width = pg.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 1400, f"the history is {width} px wide"
        assert pg.locator("td.label", has_text=LONG_LABEL[:30]).count() == 1
        reason = pg.locator(f"tr:has(a[href='/jobs/{failed['id']}/']) .reason")
        assert reason.is_visible() and (reason.text_content() or "").strip()[:30] == failed_row["message"][:30]
        shot(pg, "history", "table.jobs")

        # the confirmed cancel goes through
        pg.goto(f"/jobs/{queued['id']}/")
        pg.once("dialog", lambda d: d.accept())
        pg.locator("#cancel-form button[type=submit]").click()
        pg.wait_for_url(re.compile(rf"/jobs/{queued['id']}/$"))
        assert api.wait_status(queued["id"], {"cancelled"}, 30)["status"] == "cancelled"
    finally:
        for job in (running, queued):
            api.post(f"/api/v1/jobs/{job['id']}/cancel/")
        api.wait_status(running["id"], {"done", "failed", "cancelled"}, 60)


def plot_state(pg, plot_id: str) -> dict:  # type: ignore[no-untyped-def]
    """What Plotly drew in one plot: axis titles and ranges, shapes, annotations, trace types, and the title."""
    return pg.evaluate("""id => { const d = document.getElementById(id); const L = d._fullLayout;
        return {x: L.xaxis.title.text, y: L.yaxis.title.text, xr: L.xaxis.range, yr: L.yaxis.range,
                shapes: (d.layout.shapes || []).map(s => [s.x0, s.x1]),
                notes: (d.layout.annotations || []).map(a => a.text),
                types: d.data.map(t => t.type), data: Object.assign({}, d.dataset),
                // a live image panel's title is an element over the plot (display.js panelTitle)
                title: (d.querySelector('.panel-title') || {textContent: L.title.text}).textContent}; }""",
                       plot_id)


def click_scan_position(pg, index: int) -> None:  # type: ignore[no-untyped-def]
    """A mouse click on point ``index`` of the scan plot (every position shown: stride 1)."""
    pg.locator("#plot-positions").scroll_into_view_if_needed()
    xy = pg.evaluate("""i => { const d = document.getElementById('plot-positions'), L = d._fullLayout;
        const t = d.data[0], b = d.getBoundingClientRect();
        return [b.left + L.xaxis._offset + L.xaxis.l2p(t.x[i]), b.top + L.yaxis._offset + L.yaxis.l2p(t.y[i])]; }""",
                     index)
    pg.mouse.click(*xy)


def heatmap_scale(pg, plot_id: str) -> dict:  # type: ignore[no-untyped-def]
    """The colorscale, the range of the image's 0..255 it spans and the colour bar's labels of an image panel (the
    page colours the pixels and draws the colour bar from them: live.js ``ptychopyScale``), and the scale the page
    chose."""
    return pg.evaluate("""id => { const d = document.getElementById(id); const t = d.ptychopyScale;
        return {stops: t.stops, zmin: t.zmin, zmax: t.zmax, ticktext: t.ticktext, scale: d.dataset.scale}; }""",
                       plot_id)


def test_object_and_probe_in_physical_units_with_scale_bars_every_mode_and_the_scan(  # type: ignore[no-untyped-def]
        page, prod_stack: ProductionStack, alice: User) -> None:
    from reconstruction import Parameters

    api = ApiClient(prod_stack.base_url, alice.token)
    job = api.submit(small_sim_cmdstr(40, job_id="units", extra="-probeModes=2 -updateModes=1"), label="units")
    assert api.wait_status(job["id"], {"done", "failed", "cancelled"}, 120)["status"] == "done"
    pixel_m = Parameters.from_dict(api.job(job["id"])["parameters"]).pixel_size_m
    pg = page
    log_in(pg, alice)
    pg.goto(f"/jobs/{job['id']}/")
    for plot_id in ("plot-object_amplitude", "plot-object_phase", "plot-probe_amplitude_1", "plot-probe_phase_1"):
        pg.locator(f"#{plot_id} canvas.image-under").first.wait_for(timeout=20000)

    for plot_id, width_px in (("plot-object_amplitude", None), ("plot-probe_amplitude_0", 64),
                              ("plot-probe_phase_1", 64)):
        st = plot_state(pg, plot_id)
        unit = st["data"]["unit"]
        per_m = {"nm": 1e9, "µm": 1e6}[unit]
        assert (st["x"], st["y"]) == (f"x ({unit})", f"y ({unit})"), st
        pixels = st["xr"][1] / (pixel_m * per_m)  # the axis spans whole reconstruction pixels from 0
        assert abs(st["xr"][0]) < 1e-9 and abs(pixels - round(pixels)) < 1e-3, st
        if width_px is not None:
            assert round(pixels) == width_px
        else:  # the object cropped to the 10 x 10 scan of 6 px steps and its 64 px windows
            assert 100 <= round(pixels) <= 130, pixels
        assert unit == ("nm" if st["xr"][1] / per_m < 2e-6 else "µm")
        # one scale bar of 1, 2 or 5 x 10^k, at most a fifth of the width, labelled with its length
        (bar,) = st["shapes"]
        length = bar[1] - bar[0]
        assert re.fullmatch(r"[125]0*(\.\d+)? " + unit, st["data"]["scaleBar"]) or \
            re.fullmatch(r"0\.0*[125] " + unit, st["data"]["scaleBar"]), st
        assert float(st["data"]["scaleBar"].split()[0]) == pytest.approx(length)
        assert 0 < length <= st["xr"][1] / 5 and st["notes"] == [st["data"]["scaleBar"]]

    # zoom and pan are shared by the object's panels, both ways, and a reset resets both
    full = plot_state(pg, "plot-object_phase")
    pg.evaluate("() => Plotly.relayout('plot-object_amplitude', "
                "{'xaxis.range': [0.5, 1.0], 'yaxis.range': [1.2, 0.6]})")
    pg.wait_for_function("() => document.getElementById('plot-object_phase')._fullLayout.xaxis.range[1] === 1.0")
    assert plot_state(pg, "plot-object_phase")["yr"] == [1.2, 0.6]
    pg.evaluate("() => Plotly.relayout('plot-object_phase', {'xaxis.range': [0.25, 0.75]})")
    pg.wait_for_function("() => document.getElementById('plot-object_amplitude')._fullLayout.xaxis.range[0] === 0.25")
    pg.locator("#plot-object_amplitude .nsewdrag").first.dblclick()  # Plotly's reset, as a user does it
    pg.wait_for_function("() => document.getElementById('plot-object_phase')._fullLayout.xaxis.range[0] === 0")
    for plot_id in ("plot-object_phase", "plot-object_amplitude"):
        reset = plot_state(pg, plot_id)
        assert reset["xr"] == pytest.approx(full["xr"]) and reset["yr"] == pytest.approx(full["yr"]), reset
        assert reset["yr"][0] > reset["yr"][1]  # rows still run downwards

    # a line profile: two clicks on the object; its length in the panel's unit, drawn on both panels
    amp = plot_state(pg, "plot-object_amplitude")
    unit, step = amp["data"]["unit"], pixel_m * {"nm": 1e9, "µm": 1e6}[amp["data"]["unit"]]
    pg.locator("#profile-toggle").click()
    ends = [(20, 30), (60, 90)]  # (row, col) of two object pixels
    for row, col in ends:
        xy = pg.evaluate("""([x, y]) => { const d = document.getElementById('plot-object_amplitude');
            const L = d._fullLayout, b = d.getBoundingClientRect();
            return [b.left + L.xaxis._offset + L.xaxis.l2p(x), b.top + L.yaxis._offset + L.yaxis.l2p(y)]; }""",
                         [(col + 0.5) * step, (row + 0.5) * step])
        pg.mouse.click(*xy)
        pg.wait_for_timeout(150)
    pg.locator("#plot-profile .scatterlayer .trace").first.wait_for(timeout=5000)
    prof = plot_state(pg, "plot-profile")
    expected = step * ((ends[1][0] - ends[0][0]) ** 2 + (ends[1][1] - ends[0][1]) ** 2) ** 0.5
    assert prof["data"]["unit"] == unit and float(prof["data"]["length"]) == pytest.approx(expected, rel=0.02)
    assert prof["x"] == f"distance ({unit})" and prof["types"] == ["scatter", "scatter"]
    assert int(prof["data"]["samples"]) >= 72 and f"length {float(prof['data']['length']):.4g}"[:10] in prof["title"]
    for plot_id in ("plot-object_amplitude", "plot-object_phase"):
        assert len(plot_state(pg, plot_id)["shapes"]) == 2  # the scale bar and the line

    # colormap, scale and range of each object panel
    assert pg.locator("#display-controls fieldset.display-controls").count() == 2
    linear = heatmap_scale(pg, "plot-object_amplitude")
    assert linear["stops"][16][1] == "rgb(128,128,128)"  # Greys, linear: the middle value is mid grey
    pg.select_option("select[name=object_amplitude-scale]", "log")
    log = heatmap_scale(pg, "plot-object_amplitude")
    assert log["scale"] == "log" and log["stops"][16][1] != linear["stops"][16][1]
    assert [p for p, _ in log["stops"]] == [p for p, _ in linear["stops"]]  # same values, other colours
    pg.select_option("select[name=object_amplitude-scale]", "gamma")
    pg.fill("input[name=object_amplitude-gamma]", "0.5")
    pg.locator("input[name=object_amplitude-gamma]").dispatch_event("change")
    gamma = heatmap_scale(pg, "plot-object_amplitude")
    grey = round(0.5 ** 0.5 * 255)  # the middle value at gamma 0.5
    assert gamma["scale"] == "gamma" and gamma["stops"][16][1] == f"rgb({grey},{grey},{grey})"
    pg.select_option("select[name=object_phase-scale]", "log")  # phases go below zero: log falls back
    assert heatmap_scale(pg, "plot-object_phase")["scale"] == "linear"
    lo_text, hi_text = linear["ticktext"][0], linear["ticktext"][-1]
    lo, hi = float(lo_text), float(hi_text)
    pg.fill("input[name=object_amplitude-min]", f"{lo + 0.25 * (hi - lo):.3f}")
    pg.fill("input[name=object_amplitude-max]", f"{lo + 0.75 * (hi - lo):.3f}")
    pg.locator("input[name=object_amplitude-max]").dispatch_event("change")
    ranged = heatmap_scale(pg, "plot-object_amplitude")
    assert 50 < ranged["zmin"] < 78 and 178 < ranged["zmax"] < 205, ranged  # a quarter and three quarters of 255
    assert float(ranged["ticktext"][0]) == pytest.approx(lo + 0.25 * (hi - lo), abs=0.01)
    assert float(ranged["ticktext"][-1]) == pytest.approx(lo + 0.75 * (hi - lo), abs=0.01)
    pg.select_option("select[name=object_amplitude-map]", "Hot")
    assert heatmap_scale(pg, "plot-object_amplitude")["stops"][-1][1] == "rgb(255,255,255)"
    assert heatmap_scale(pg, "plot-object_amplitude")["stops"][8][1] != gamma["stops"][8][1]

    powers = [float(plot_state(pg, f"plot-probe_amplitude_{k}")["data"]["power"]) for k in (0, 1)]
    assert sum(powers) == pytest.approx(1, abs=2e-3) and powers[0] > powers[1] > 0
    assert "% of the power" in plot_state(pg, "plot-probe_amplitude_1")["title"]
    assert plot_state(pg, "plot-probe_phase_0")["title"].startswith("Probe mode 0 phase")

    # the measured and the model pattern of the central position, side by side
    for name in ("diffraction_measured", "diffraction_model"):
        st = plot_state(pg, f"plot-{name}")
        assert st["types"] == ["image"] and re.search(r"pattern, position \d+ \(log10 counts\)", st["title"]), st
        assert st["x"] == "column (px)" and st["xr"][1] == pytest.approx(63.5)  # 64 px patterns, not binned

    # the scan, for a run that does not refine it: 100 positions in the same unit system
    scan = plot_state(pg, "plot-positions")
    assert scan["types"] == ["scatter", "scatter"] and scan["data"]["points"] == "100"  # + the diffraction ring
    assert scan["x"] in ("x (nm)", "x (µm)") and scan["title"] == "Scan positions, Fourier error"
    assert scan["data"]["errorsMeasured"] == "100" and scan["data"]["colouring"] == "error"
    assert pg.locator("#plot-positions .scatterlayer .trace").first.locator(".point").count() == 100
    pg.select_option("#scan-colour", "order")
    pg.wait_for_function("() => document.getElementById('plot-positions').dataset.colouring === 'order'")
    assert plot_state(pg, "plot-positions")["title"] == "Scan positions"
    # the iteration scrubber replays the run's stored frames; "Live" goes back to the newest
    stored = pg.evaluate("id => fetch('/jobs/' + id + '/snapshots/').then(r => r.json())", job["id"])["iterations"]
    assert len(stored) >= 2 and stored[-1] == 40
    pg.locator("#scrubber").wait_for(state="visible", timeout=10000)
    pg.locator("#scrub").fill("0")
    pg.wait_for_function(f"() => document.getElementById('live').dataset.shownIteration === '{stored[0]}'")
    assert f"iteration {stored[0]}" in (pg.locator("#scrub-label").text_content() or "")
    early = heatmap_scale(pg, "plot-object_phase")["ticktext"]  # (the amplitude's range was fixed above)
    pg.locator("#scrub-live").click()
    pg.wait_for_function("() => document.getElementById('live').dataset.shownIteration === '40'")
    assert heatmap_scale(pg, "plot-object_phase")["ticktext"] != early  # another iterate, another range
    assert pg.locator("#st-iteration").text_content() == "40"  # the stats stayed live meanwhile
    shot(pg, "units")
    # two stored iterations side by side: the first and the last by default
    assert pg.locator("#compare-it-a").input_value() == str(stored[0])
    assert pg.locator("#compare-it-b").input_value() == "40"
    pg.select_option("#compare-it-a", str(stored[1]))
    pg.locator("#iteration-compare-form button[type=submit]").click()
    pg.wait_for_url(re.compile(rf"/jobs/{job['id']}/compare-iterations/\?a={stored[1]}&b=40$"))
    pg.wait_for_function("() => document.getElementById('comparison').dataset.drawn === '1'")
    assert f"iterations {stored[1]} (A) and 40 (B) of job {job['id']}" in (pg.locator("h1").text_content() or "")
    for name in ("phase_a", "phase_b", "phase_difference"):
        st = plot_state(pg, f"plot-{name}")
        assert st["types"] == ["image"] and st["x"] == f"x ({st['data']['unit']})" and len(st["shapes"]) == 1, st
    frc = plot_state(pg, "plot-frc")
    assert frc["types"] == ["scatter", "scatter"] and frc["x"].startswith("spatial frequency (1/")
    assert int(frc["data"]["rings"]) >= 20
    assert re.search(r"\d nm|\d µm", pg.locator("#compare-resolution").text_content() or "")
    shot(pg, "compare-iterations", "#comparison")


def test_the_diffraction_panel_shows_the_position_clicked_on_the_scan_or_typed_in(  # type: ignore[no-untyped-def]
        page, prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    job = api.submit(small_sim_cmdstr(3000, job_id="pick"), label="pick")
    api.wait_status(job["id"], {"running"}, 60)
    pg = page
    log_in(pg, alice)
    try:
        pg.goto(f"/jobs/{job['id']}/")
        assert wait_conn(pg, "live") == "live"
        pg.locator("#plot-positions .scatterlayer .point").first.wait_for(timeout=30000)
        pg.wait_for_function("() => document.getElementById('live').dataset.diffractionPosition !== ''")
        pg.wait_for_function("() => document.getElementById('plot-positions').dataset.errorsMeasured === '100'",
                             timeout=15000)  # 64 px patterns: 64 measured a frame on a CPU, all 100 in two frames
        middle = int(pg.evaluate("() => document.getElementById('live').dataset.diffractionPosition"))
        scan = plot_state(pg, "plot-positions")
        assert scan["data"]["colouring"] == "error" and scan["data"]["shownPosition"] == str(middle)
        errors = pg.evaluate("() => document.getElementById('plot-positions').data[0].marker.color")
        assert len(errors) == 100 and all(e is not None and 0 < e < 2 for e in errors)  # 64 px: all in one frame
        # a click on position 3 (the fourth point): the panel shows it from the next frame, ringed on the scan
        target = 3 if middle != 3 else 4
        click_scan_position(pg, target)
        pg.wait_for_function(f"() => document.getElementById('live').dataset.diffractionPosition === '{target}'",
                             timeout=15000)
        for name in ("diffraction_measured", "diffraction_model"):
            st = plot_state(pg, f"plot-{name}")
            assert f"position {target} (log10 counts)" in st["title"] and st["data"]["position"] == str(target)
        assert plot_state(pg, "plot-positions")["data"]["shownPosition"] == str(target)
        assert pg.locator("#diffraction-index").input_value() == str(target)
        # typed in: position 57, then one that is not in the scan (the page says so and asks for nothing)
        pg.fill("#diffraction-index", "57")
        pg.locator("#diffraction-show").click()
        pg.wait_for_function("() => document.getElementById('live').dataset.diffractionPosition === '57'",
                             timeout=15000)
        pg.fill("#diffraction-index", "100")
        pg.locator("#diffraction-index").press("Enter")
        assert "not one of this scan's positions (0 to 99)" in (pg.locator("#diffraction-hint").text_content() or "")
        pg.wait_for_timeout(600)
        assert pg.evaluate("() => document.getElementById('live').dataset.diffractionPosition") == "57"
        shot(pg, "diffraction")
    finally:
        api.post(f"/api/v1/jobs/{job['id']}/cancel/")
        api.wait_status(job["id"], {"done", "failed", "cancelled"}, 60)


def test_a_finished_jobs_diffraction_panel_shows_the_position_picked_from_its_result(  # type: ignore[no-untyped-def]
        page, prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    job = api.submit(small_sim_cmdstr(20, job_id="picked"), label="picked")
    assert api.wait_status(job["id"], {"done", "failed", "cancelled"}, 90)["status"] == "done"
    pg = page
    log_in(pg, alice)
    pg.goto(f"/jobs/{job['id']}/")
    assert "closed" in wait_conn(pg, "closed")
    pg.locator("#plot-positions .scatterlayer .point").first.wait_for(timeout=30000)
    middle = pg.evaluate("() => document.getElementById('live').dataset.diffractionPosition")
    target = 3 if middle != "3" else 4
    click_scan_position(pg, target)  # no worker runs it: the server makes the pair from the result file
    pg.wait_for_function(f"() => document.getElementById('live').dataset.diffractionPosition === '{target}'",
                         timeout=15000)
    for name in ("diffraction_measured", "diffraction_model"):
        st = plot_state(pg, f"plot-{name}")
        assert st["types"] == ["image"] and f"position {target} (log10 counts)" in st["title"], st
        assert st["data"]["position"] == str(target) and st["xr"][1] == pytest.approx(63.5)  # 64 px, not binned
    assert plot_state(pg, "plot-positions")["data"]["shownPosition"] == str(target)
    assert "result's model" in (pg.locator("#diffraction-hint").text_content() or "")
    pg.fill("#diffraction-index", "57")
    pg.locator("#diffraction-index").press("Enter")
    pg.wait_for_function("() => document.getElementById('live').dataset.diffractionPosition === '57'", timeout=15000)
    assert "position 57 (log10" in plot_state(pg, "plot-diffraction_model")["title"]
    shot(pg, "finished-diffraction")


def test_two_jobs_side_by_side_with_their_difference_and_frc(  # type: ignore[no-untyped-def]
        page, prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    ids = [api.submit(small_sim_cmdstr(30, job_id=f"cmp{seed}", extra=f"-seed={seed}"), label=f"cmp{seed}")["id"]
           for seed in (1, 2)]
    for job_id in ids:
        assert api.wait_status(job_id, {"done", "failed", "cancelled"}, 120)["status"] == "done"
    pg = page
    log_in(pg, alice)
    pg.goto(f"/jobs/{ids[0]}/")
    pg.fill("#compare-form input[name=b]", str(ids[1]))
    pg.locator("#compare-form button[type=submit]").click()
    pg.wait_for_url(re.compile(rf"/jobs/compare/\?a={ids[0]}&b={ids[1]}$"))
    pg.wait_for_function("() => document.getElementById('comparison').dataset.drawn === '1'")
    for name in ("phase_a", "phase_b", "phase_difference"):
        st = plot_state(pg, f"plot-{name}")
        unit = st["data"]["unit"]
        assert st["types"] == ["image"] and st["x"] == f"x ({unit})" and len(st["shapes"]) == 1, st
    frc = plot_state(pg, "plot-frc")
    assert frc["types"] == ["scatter", "scatter"] and frc["x"].startswith("spatial frequency (1/")
    assert int(frc["data"]["rings"]) >= 20 and "half period" in frc["title"]
    assert re.search(r"\d nm|\d µm", pg.locator("#compare-resolution").text_content() or "")
    shot(pg, "compare", "#comparison")
    # zoom shared by the three images: the left half of A's field
    half = plot_state(pg, "plot-phase_a")["xr"][1] / 2
    pg.evaluate("h => Plotly.relayout('plot-phase_a', {'xaxis.range': [0, h]})", half)
    pg.wait_for_function("h => document.getElementById('plot-phase_difference')._fullLayout.xaxis.range[1] === h",
                         arg=half)

    # a half-set FRC of job A: two new jobs on the scan's halves; the page waits for them, then draws the FRC
    # against the 1/2-bit curve
    pg.goto(f"/jobs/{ids[0]}/")
    pg.locator("#half-set-form button[type=submit]").click()
    pg.wait_for_url(re.compile(r"/jobs/compare/\?a=\d+&b=\d+&threshold=half-bit$"))
    assert "Waiting for" in (pg.locator("#compare-pending").text_content() or "")
    pg.wait_for_function("() => document.getElementById('comparison') && "
                         "document.getElementById('comparison').dataset.drawn === '1'", timeout=120000)
    frc = pg.evaluate("() => document.getElementById('plot-frc').data.map(t => [t.name, t.y.length])")
    assert frc[1][0] == "1/2-bit threshold" and frc[1][1] == frc[0][1] >= 20
    assert "1/2-bit threshold" in (pg.locator("#compare-resolution").text_content() or "")
    assert "half-set FRC" in (pg.locator("h1").text_content() or "")
    shot(pg, "half-set", "#comparison")

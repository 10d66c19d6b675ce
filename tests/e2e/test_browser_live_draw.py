"""The live page colours each frame's uint8 images itself, into a canvas under Plotly's axes (issue 21), in Chromium.

No server: benchmarks/live_draw.py serves the page's scripts and hands live.js frames over a stand-in websocket.
Checked by structure and by the colours of single pixels read back from the canvas, not by screenshots: a known
frame's pixels take the colormap's colours (Greys linear, Viridis, gamma), the canvas follows a zoom, the draw
times are exposed, an unchanged image is not coloured again, and a panel out of view is coloured when it comes
into view.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.live_draw import add_frames, open_page, push, sample_frame

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

#: Viridis as display.js has it: evenly spaced stops.
VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"]


def viridis(value: int) -> np.ndarray:
    """The colour of byte ``value`` (range 0..255) on evenly spaced Viridis stops, interpolated in RGB."""
    stops = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in VIRIDIS], float)
    x = value / 255 * (len(stops) - 1)
    i = min(len(stops) - 2, int(x))
    return stops[i] + (x - i) * (stops[i + 1] - stops[i])


# the RGBA of the canvas under a panel at the centre of image pixel (row, col), through Plotly's axes
PIXEL_JS = """([id, row, col]) => { const d = document.getElementById(id), L = d._fullLayout;
    const t = d.data[0], c = d.querySelector('canvas.image-under'), k = c.width / L.width;
    const x = L.xaxis._offset + L.xaxis.l2p(t.x0 + col * t.dx), y = L.yaxis._offset + L.yaxis.l2p(t.y0 + row * t.dy);
    return Array.from(c.getContext('2d').getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data); }"""

# a zoom of a panel onto its image's columns 64..127
ZOOM_JS = """id => { const d = document.getElementById(id), t = d.data[0];
    return Plotly.relayout(d, {'xaxis.range': [t.x0 + 63.5 * t.dx, t.x0 + 127.5 * t.dx]}); }"""

# the RGBA of the canvas under a panel just inside the plot area's left edge, half way down
LEFT_EDGE_JS = """id => { const d = document.getElementById(id), L = d._fullLayout;
    const c = d.querySelector('canvas.image-under'), k = c.width / L.width;
    const y = L.yaxis._offset + L.yaxis._length / 2;
    return Array.from(c.getContext('2d').getImageData(Math.floor((L.xaxis._offset + 1) * k),
                                                     Math.floor(y * k), 1, 1).data); }"""


def test_a_known_frame_is_coloured_by_the_panels_colormap_under_plotlys_axes(browser) -> None:  # type: ignore[no-untyped-def]
    ramp = np.tile(np.arange(256, dtype=np.uint8), (16, 1))  # byte value = column
    frames = [
        sample_frame(k, size=64, modes=1, images={"object_amplitude": ramp, "object_phase": ramp}) for k in range(2)
    ]
    frames.append(sample_frame(2, size=64, modes=1, images={"object_amplitude": ramp, "object_phase": ramp}))
    context = browser.new_context(viewport={"width": 1400, "height": 360})
    try:
        pg = open_page(context)
        add_frames(pg, frames)
        push(pg, 0, 0)
        pg.locator("#plot-object_amplitude canvas.image-under").wait_for()
        pg.wait_for_timeout(100)
        st = pg.evaluate("""() => { const d = document.getElementById('plot-object_amplitude');
            const c = d.querySelector('canvas.image-under');
            return {types: d.data.map(t => t.type), first: c === c.parentNode.firstChild,
                    svgAfter: c.nextElementSibling.classList.contains('main-svg'),
                    stats: window.ptychopyDrawStats}; }""")
        # the pixels under Plotly's SVG, a transparent image trace of the frame's size for hover and clicks
        assert st["types"] == ["image"] and st["first"] and st["svgAfter"], st
        stats = st["stats"]
        assert stats["frames"] == 1 and 0 < stats["last_ms"] == stats["max_ms"] and stats["recent_ms"], stats
        # 2 object, 2 probe and 2 diffraction panels
        assert stats["panels"]["coloured"] == stats["panels"]["plotly_react"] == 6, stats

        for col in (0, 37, 128, 200, 255):  # Greys, linear over the frame's range: byte v is grey v
            rgba = pg.evaluate(PIXEL_JS, ["plot-object_amplitude", 8, col])
            assert rgba[3] == 255 and max(abs(c - col) for c in rgba[:3]) <= 1, (col, rgba)
            rgba = pg.evaluate(PIXEL_JS, ["plot-object_phase", 8, col])
            assert np.abs(np.array(rgba[:3]) - viridis(col)).max() <= 2, (col, rgba, viridis(col))

        # gamma 0.5: byte 128 is shown as sqrt(128 / 255) of white (to the colorscale's 33 stops)
        pg.select_option("select[name=object_amplitude-scale]", "gamma")
        pg.fill("input[name=object_amplitude-gamma]", "0.5")
        pg.locator("input[name=object_amplitude-gamma]").dispatch_event("change")
        rgba = pg.evaluate(PIXEL_JS, ["plot-object_amplitude", 8, 128])
        assert abs(rgba[0] - 255 * (128 / 255) ** 0.5) <= 2, rgba

        # a zoom onto columns 64..127: the canvas follows the axes (the plot's left edge shows byte ~64)
        pg.evaluate(ZOOM_JS, "plot-object_phase")
        left = pg.evaluate(LEFT_EDGE_JS, "plot-object_phase")
        assert np.abs(np.array(left[:3]) - viridis(64)).max() <= 3, (left, viridis(64))

        # the same object images again: not coloured again; panels out of view wait until they are in view
        before = pg.evaluate("() => Object.assign({}, window.ptychopyDrawStats.panels)")
        push(pg, 1, 1)
        after = pg.evaluate("() => Object.assign({}, window.ptychopyDrawStats.panels)")
        assert after["unchanged"] - before["unchanged"] >= 2, (before, after)
        assert after["hidden"] > before["hidden"], (before, after)  # the second row, below a 360 px window
        waiting = pg.evaluate("() => document.getElementById('plot-errors').dataset.drawnKey")
        push(pg, 2, 2)
        assert pg.evaluate("() => document.getElementById('plot-errors').dataset.drawnKey") == waiting
        pg.locator("#plot-errors").scroll_into_view_if_needed()
        pg.wait_for_function(f"() => document.getElementById('plot-errors').dataset.drawnKey !== {waiting!r}")
        assert pg.evaluate("() => window.ptychopyDrawStats.frames") == 3
    finally:
        context.close()


def test_the_error_curve_and_the_scan_are_not_redrawn_by_plotly_on_every_frame(browser) -> None:  # type: ignore[no-untyped-def]
    # 12 frames, each 5 iterations more (the curve only grows: appended to) and new Fourier errors for 25 positions
    frames = [sample_frame(k, size=32, modes=1, iterations_per_frame=5, scan_chunk=25) for k in range(12)]
    context = browser.new_context(viewport={"width": 1400, "height": 3000})  # every plot in view
    try:
        pg = open_page(context)
        add_frames(pg, frames)
        for k in range(12):
            push(pg, k, k)
            pg.wait_for_timeout(100)  # 10 frames/s: twice the worker's default
        newest = np.linspace(0.1, 0.2, 100)  # the newest frame's Fourier errors (sample_frame's rule)
        start = (11 * 25) % 100
        newest[start : start + 25] *= 1 + 0.3 * np.sin(11)
        # the last throttled drawing (at most once a second) of each plot shows the newest frame: the curve's 60
        # points, the scan's colours
        pg.wait_for_function("""want => { const e = document.getElementById('plot-errors');
            const p = document.getElementById('plot-positions');
            if (!e || !e.data || e.data[0].x.length !== 60 || !p || !p.data) return false;
            const c = p.data[0].marker.color;
            return Array.isArray(c) && c.length === want.length
                && c.every((v, i) => Math.abs(v - want[i]) <= 1e-3 * Math.abs(want[i])); }""",
                             arg=newest.tolist(), timeout=10000)
        calls = pg.evaluate("() => Object.fromEntries(Object.entries(window.ptychopyPlotlyCalls)"
                            ".map(([k, c]) => [k, c.n]))")
        # built once each; then the scan only recoloured and the curve only appended to, a few times in 2.4 s
        assert calls.get("react plot-positions") == 1 and calls.get("newPlot plot-positions") is None, calls
        assert 1 <= calls.get("restyle plot-positions", 0) <= 5, calls
        assert calls.get("react plot-errors") == 1 and 1 <= calls.get("extendTraces plot-errors", 0) <= 5, calls
        # and they show the newest frame: its 60 points of the curve, its Fourier errors
        shown = pg.evaluate("""() => ({x: Array.from(document.getElementById('plot-errors').data[0].x),
            colours: document.getElementById('plot-positions').data[0].marker.color,
            measured: document.getElementById('plot-positions').dataset.errorsMeasured})""")
        assert shown["x"] == list(range(1, 61)), shown["x"]
        np.testing.assert_allclose(shown["colours"], newest, rtol=1e-3)
        assert shown["measured"] == "100"
    finally:
        context.close()

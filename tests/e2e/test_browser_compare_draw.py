"""The comparison page colours its three images itself, into canvases under Plotly's axes, as the live page does
(display.js); Plotly draws only the FRC's curves. In Chromium, no server: benchmarks/live_draw.py (--compare) serves the
page's scripts with the view's data. Checked by structure and by single pixels read back from the canvases."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from benchmarks.live_draw import compare_page_data, open_compare, run_compare
from tests.e2e.test_browser_live_draw import LEFT_EDGE_JS, PIXEL_JS, ZOOM_JS, viridis

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_the_comparison_images_are_painted_canvases_with_no_plotly_heatmap(browser) -> None:  # type: ignore[no-untyped-def]
    data = compare_page_data(64)
    ramp = np.tile(np.arange(256, dtype=np.uint8), (16, 1))  # byte value = column
    for img in data["images"]:
        img.update(shape=[16, 256], bdata=base64.b64encode(ramp.tobytes()).decode())
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        pg = open_compare(context, data)
        run_compare(pg)
        pg.wait_for_function("() => document.querySelectorAll('.js-plotly-plot canvas.image-under').length === 3",
                             timeout=10000)
        types = pg.evaluate("() => Object.fromEntries(Array.from(document.querySelectorAll('.js-plotly-plot'))"
                            ".map(d => [d.id, d.data.map(t => t.type)]))")
        assert types == {"plot-phase_a": ["image"], "plot-phase_b": ["image"], "plot-phase_difference": ["image"],
                         "plot-frc": ["scatter", "scatter"]}, types
        for name in ("phase_a", "phase_b", "phase_difference"):
            st = pg.evaluate("""id => { const d = document.getElementById(id);
                const c = d.querySelector('canvas.image-under');
                return {first: !!c && c === c.parentNode.firstChild, unit: d.dataset.unit, bar: d.dataset.scaleBar,
                        shapes: d.layout.shapes.length, ticks: d.ptychopyScale.ticktext}; }""", f"plot-{name}")
            img = next(i for i in data["images"] if i["name"] == name)
            assert st["first"] and st["unit"] in ("nm", "µm") and st["bar"].endswith(st["unit"]), st
            assert st["shapes"] == 1, st  # the scale bar
            ends = [float(st["ticks"][0]), float(st["ticks"][-1])]  # the colour bar's labels: the value range
            assert ends == pytest.approx([img["vmin"], img["vmax"]], rel=1e-2, abs=1e-3), (st, img)
            assert max(len(t) for t in st["ticks"]) <= 8, st  # the live page's labels: they fit right of the bar
        for col in (0, 100, 255):  # the phases in Viridis, byte v at v / 255
            for name in ("phase_a", "phase_b"):
                rgba = pg.evaluate(PIXEL_JS, [f"plot-{name}", 8, col])
                assert np.abs(np.array(rgba[:3]) - viridis(col)).max() <= 2, (name, col, rgba)
        # the difference diverges: blue at the lowest byte, light grey in the middle, red at the highest
        low, mid, high = (pg.evaluate(PIXEL_JS, ["plot-phase_difference", 8, c])[:3] for c in (0, 128, 255))
        assert low[2] > 120 > low[0] and high[0] > 120 > high[2] and min(mid) > 200, (low, mid, high)

        # zoom shared: A zoomed onto columns 64..127, the difference's canvas follows (its left edge shows ~64)
        pg.evaluate(ZOOM_JS, "plot-phase_a")
        pg.wait_for_function("""() => { const a = document.getElementById('plot-phase_a')._fullLayout.xaxis.range;
            const b = document.getElementById('plot-phase_b')._fullLayout.xaxis.range; return a[0] === b[0]; }""")
        left = pg.evaluate(LEFT_EDGE_JS, "plot-phase_b")
        assert np.abs(np.array(left[:3]) - viridis(64)).max() <= 3, (left, viridis(64))
    finally:
        context.close()

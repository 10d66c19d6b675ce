/* The comparison page: A's phase, B's phase aligned onto it, their difference (all in the sample plane's unit,
 * zoom and pan shared), and the Fourier ring correlation against the spatial frequency with the threshold. The
 * data come with the page (webapp/jobs/comparison.py): uint8 images in base64 with their value range and pixel.
 * The images are coloured on the page as the live view's are (display.js): one 256-entry colour table per image
 * into a canvas painted under a Plotly plot that holds only a transparent image trace (axes, hover), the scale
 * bar and the colour bar's labels; Plotly draws curves only for the FRC.
 */
(function () {
  "use strict";

  const source = document.getElementById("compare-data");
  if (!source) return;
  const data = JSON.parse(source.textContent);
  const D = window.ptychopyDisplay;
  const config = { responsive: true, displaylogo: false, scrollZoom: true };
  const TITLES = { phase_a: "A: phase (rad)", phase_b: "B aligned: phase (rad)",
                   phase_difference: "A − B: phase difference (rad)" };
  const IMAGE_PLOTS = Object.keys(TITLES).map(function (k) { return "plot-" + k; });
  // blue below, red above: the difference's colours
  const DIVERGING = [[0, "#2c3e99"], [0.25, "#7f9bd9"], [0.5, "#e5e5e5"], [0.75, "#e0906a"], [1, "#a51c2a"]];
  const TICKS = [0, 64, 128, 191, 255];

  function bytes(b64) {
    const raw = atob(b64), out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  function drawImage(img) {
    const div = document.getElementById("plot-" + img.name);
    const rows = img.shape[0], cols = img.shape[1];
    const unit = D.lengthUnit(img.pixel_m * Math.max(rows, cols));
    const d = img.pixel_m * unit.perM;
    const width = d * cols, bar = D.niceLength(width);
    const axes = { unit: unit.name, width: width, height: d * rows, bar: bar, barText: D.fmtLength(bar, unit.name) };
    const colorscale = img.name === "phase_difference" ? DIVERGING : D.stops("Viridis");
    const pixels = document.createElement("canvas");
    D.colourInto(pixels, bytes(img.bdata), rows, cols, D.lookupTable(colorscale, 0, 255));
    const ticktext = TICKS.map(function (t) { return D.tickText(img.vmin + (img.vmax - img.vmin) * t / 255); });
    const colourBar = { strip: D.colourStrip(colorscale), zmin: 0, zmax: 255, tickvals: TICKS, ticktext: ticktext };
    const trace = { type: "image", source: D.transparentImage(rows, cols), x0: d / 2, dx: d, y0: d / 2, dy: d,
                    hovertemplate: "x %{x:.4g} " + unit.name + ", y %{y:.4g} " + unit.name + "<extra></extra>" };
    Plotly.newPlot(div, [trace], D.imageLayout(TITLES[img.name], axes), D.imagePlotConfig(config));
    D.followPlot(div, function () { D.paintUnder(div, pixels, [0, 0, width, d * rows], colourBar); });
    D.paintUnder(div, pixels, [0, 0, width, d * rows], colourBar);
    // the colours on the page, for tests: colorscale stops over the bytes 0..255 and the colour bar's labels
    div.ptychopyScale = { stops: colorscale, zmin: 0, zmax: 255, ticktext: ticktext, scale: "linear" };
    div.dataset.unit = unit.name;
    div.dataset.scaleBar = axes.barText;
    return div;
  }

  function drawFrc() {
    const s = data.summary, f = data.frc;
    const unit = D.lengthUnit(s.resolution_m * 10);
    const perUnit = f.frequency_per_m.map(function (q) { return q / unit.perM; });  // cycles per nm or µm
    const qRes = 1 / (2 * s.resolution_m * unit.perM);
    const traces = [
      { type: "scatter", mode: "lines", name: "FRC", x: perUnit, y: f.frc, line: { color: "#2563eb", width: 2 } },
      { type: "scatter", mode: "lines", x: perUnit, y: f.threshold,  // a constant, or the 1/2-bit curve per ring
        name: s.criterion === "1/2-bit" ? "1/2-bit threshold" : "threshold " + s.threshold.toFixed(3),
        line: { color: "#ef4444", dash: "dash", width: 1 } },
    ];
    const layout = {
      title: { text: "Fourier ring correlation: " + D.fmtLength(Number((s.resolution_m * unit.perM).toPrecision(3)), unit.name)
               + " half period", font: { size: 14 } },
      margin: { l: 50, r: 10, t: 36, b: 40 },
      xaxis: { title: { text: "spatial frequency (1/" + unit.name + ")" } }, yaxis: { title: { text: "FRC" }, range: [-0.2, 1.05] },
      shapes: [{ type: "line", xref: "x", yref: "paper", x0: qRes, x1: qRes, y0: 0, y1: 1, line: { color: "#6b7280", dash: "dot" } }],
      legend: { orientation: "h", y: -0.25 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    };
    const div = document.getElementById("plot-frc");
    Plotly.newPlot(div, traces, layout, config);
    div.dataset.unit = unit.name;
    div.dataset.rings = f.frc.length;
  }

  // zoom and pan shared by the three images
  let syncing = false;
  function link(div) {
    div.on("plotly_relayout", function (ev) {
      if (syncing) return;
      const update = {};
      Object.keys(ev).forEach(function (k) {
        if (/^[xy]axis\.(range|autorange)/.test(k)) update[k] = k === "yaxis.autorange" && ev[k] === true ? "reversed" : ev[k];
      });
      if (!Object.keys(update).length) return;
      syncing = true;
      Promise.all(IMAGE_PLOTS.filter(function (id) { return id !== div.id; })
        .map(function (id) { return Plotly.relayout(id, update); }))
        .finally(function () { syncing = false; });
    });
  }

  function start() {
    if (typeof Plotly === "undefined") { window.setTimeout(start, 50); return; }
    data.images.forEach(function (img) { link(drawImage(img)); });
    drawFrc();
    document.getElementById("comparison").dataset.drawn = "1";
  }
  start();
})();

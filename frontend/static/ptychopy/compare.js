/* The comparison page: A's phase, B's phase aligned onto it, their difference (all in the sample plane's unit,
 * zoom and pan shared), and the Fourier ring correlation against the spatial frequency with the threshold. The
 * data come with the page (webapp/jobs/comparison.py): uint8 images in base64 with their value range and pixel.
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

  function drawImage(img) {
    const div = document.getElementById("plot-" + img.name);
    const unit = D.lengthUnit(img.pixel_m * Math.max(img.shape[0], img.shape[1]));
    const d = img.pixel_m * unit.perM;
    const width = d * img.shape[1], bar = D.niceLength(width);
    const ticks = [0, 64, 128, 191, 255];
    const trace = {
      type: "heatmap", z: { dtype: "u1", bdata: img.bdata, shape: img.shape[0] + "," + img.shape[1] },
      zmin: 0, zmax: 255, zsmooth: false, colorscale: img.name === "phase_difference" ? "RdBu" : "Viridis",
      x0: d / 2, dx: d, y0: d / 2, dy: d,
      colorbar: { tickvals: ticks, thickness: 12, len: 0.9,
                  ticktext: ticks.map(function (t) { return (img.vmin + (img.vmax - img.vmin) * t / 255).toPrecision(3); }) },
      hovertemplate: "x %{x:.4g} " + unit.name + ", y %{y:.4g} " + unit.name + "<extra></extra>",
    };
    const x0 = 0.05 * width, y = 0.93 * d * img.shape[0];
    const layout = {
      title: { text: TITLES[img.name], font: { size: 14 } }, uirevision: "keep",
      margin: { l: 50, r: 10, t: 36, b: 40 },
      xaxis: { constrain: "domain", title: { text: "x (" + unit.name + ")" } },
      yaxis: { autorange: "reversed", scaleanchor: "x", constrain: "domain", title: { text: "y (" + unit.name + ")" } },
      shapes: [{ type: "rect", xref: "x", yref: "y", x0: x0, x1: x0 + bar, y0: y, y1: y + 0.015 * d * img.shape[0],
                 fillcolor: "#ffffff", line: { color: "#000000", width: 1 } }],
      annotations: [{ xref: "x", yref: "y", x: x0 + bar / 2, y: y, yanchor: "bottom", showarrow: false,
                      text: D.fmtLength(bar, unit.name), font: { size: 11 }, bgcolor: "rgba(255,255,255,0.75)" }],
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    };
    Plotly.newPlot(div, [trace], layout, config);
    div.dataset.unit = unit.name;
    div.dataset.scaleBar = D.fmtLength(bar, unit.name);
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

/* Live view of a running reconstruction.
 *
 * Binary websocket frames (see webapp/live/frames.py): 4-byte big-endian header length, JSON header, then
 * uint8 images. The newest frame wins; drawing happens at most once per animation frame with Plotly.react
 * and a constant uirevision, so zoom and pan survive updates. The socket reconnects with back-off; the server
 * sends the latest stored frame first, so a reconnect or a late viewer starts from the current state.
 */
(function () {
  "use strict";

  const root = document.getElementById("live");
  if (!root) return;
  const FINISHED = new Set(["done", "failed", "cancelled"]);
  const TITLES = { object_amplitude: "Object amplitude", object_phase: "Object phase (rad)" };
  const COLORS = { object_amplitude: "Greys", object_phase: "Viridis" };
  // a cyclic map for the probe's phase (its two ends meet)
  const PHASE_COLORS = [[0, "#e2d9e2"], [0.25, "#5e7fba"], [0.5, "#2f1436"], [0.75, "#b3573f"], [1, "#e2d9e2"]];
  const plotConfig = { responsive: true, displaylogo: false, scrollZoom: true };
  const decoder = new TextDecoder();

  let latest = null;      // newest parsed frame not yet drawn
  let drawScheduled = false;
  let lastSeq = -1;
  let finished = false;
  let socket = null;
  let backoffMs = 1000;
  let framesDrawn = 0;

  function el(id) { return document.getElementById(id); }

  function parseFrame(buffer) {
    const view = new DataView(buffer);
    const n = view.getUint32(0, false);
    const header = JSON.parse(decoder.decode(new Uint8Array(buffer, 4, n)));
    const start = 4 + n;
    const images = (header.images || []).map(function (img) {
      return Object.assign({}, img, { data: buffer.slice(start + img.offset, start + img.offset + img.length) });
    });
    return { header: header, images: images };
  }

  function fmtNumber(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return "—";
    return Number(x).toPrecision(digits || 4);
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "—";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }

  function colorbar(img) {
    const lo = img.vmin, hi = img.vmax;
    const ticks = [0, 64, 128, 191, 255];
    const text = ticks.map(function (t) {
      if (lo === null || hi === null) return "";
      return window.ptychopyDisplay.tickText(lo + (hi - lo) * t / 255);
    });
    return { tickvals: ticks, ticktext: text, thickness: 12, len: 0.9 };
  }

  // Physical units and the scale bar's length (shared with the comparison page: display.js).
  const lengthUnit = window.ptychopyDisplay.lengthUnit;
  const niceLength = window.ptychopyDisplay.niceLength;
  const fmtLength = window.ptychopyDisplay.fmtLength;

  const imageLayout = window.ptychopyDisplay.imageLayout;

  /* An image panel is a Plotly plot of one trace: a transparent image of the frame's size, which gives the axes
   * their extent and hover and clicks (the line profile) each pixel's centre in the axes' units; the hover box
   * (panel-hover.js) reads the pixel's value from the frame. The pixels are coloured through a 256-entry table
   * made from the panel's colorscale and range (display.js lookupTable) into a canvas under the plot's SVG, with
   * the colour bar beside it (display.js paintUnder). Plotly draws only when the plot itself changes (first frame,
   * size, units, the profile's shapes: Plotly.react); the title is an element over the plot (display.js
   * panelTitle: a probe mode's share of the power changes every frame, and a Plotly.relayout per title cost 9-11 ms
   * each), and a new frame otherwise costs one table look-up per pixel (issue 21: a heatmap per panel and frame
   * took 0.33 s a frame on a free machine and up to 1.2 s under load). A panel whose image and colours did not
   * change is not coloured again, and one out of view is coloured when it comes into view (its plot, title and
   * data attributes are kept current). */
  const panels = {};  // plot id -> what it shows: {fig, title, pixels, tableKey, table, strip, canvas, extent, bar}
  const drawCounts = { coloured: 0, unchanged: 0, hidden: 0, plotly_react: 0, titles_changed: 0,
                       errors_extended: 0, errors_redrawn: 0, scan_redrawn: 0, scan_recoloured: 0 };
  // Plots out of view (more than 200 px above or below the window, or hidden) are drawn when they come into view.
  const inView = {};  // plot id -> false while out of view (IntersectionObserver; unknown counts as in view)
  const pending = {};  // plot id -> the drawing left for when it comes into view
  const viewWatch = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      inView[e.target.id] = e.isIntersecting;
      const later = pending[e.target.id];
      if (e.isIntersecting && later) {
        delete pending[e.target.id];
        later();
      }
    });
  }, { rootMargin: "200px 0px" }) : null;

  // Draw a plot now with ``fn``, or when it comes into view if it was drawn before and is out of view now.
  function whenInView(div, fn) {
    if (viewWatch && !div.dataset.viewWatched) { div.dataset.viewWatched = "1"; viewWatch.observe(div); }
    if (div.dataset.drawnOnce && inView[div.id] === false) {
      pending[div.id] = fn;
      drawCounts.hidden += 1;
      return;
    }
    delete pending[div.id];
    fn();
    div.dataset.drawnOnce = "1";
  }

  let imageConfig = null;
  function imagePlotConfig() {
    return imageConfig || (imageConfig = window.ptychopyDisplay.imagePlotConfig(plotConfig));
  }

  const transparentImage = window.ptychopyDisplay.transparentImage;

  function drawImage(div, img, title, colorscale) {
    const unit = lengthUnit(img.pixel_m ? img.pixel_m * Math.max(img.shape[0], img.shape[1]) : null);
    const rows = img.shape[0], cols = img.shape[1];
    const cb = colorbar(img);
    const bar = { colorscale: typeof colorscale === "string" ? window.ptychopyDisplay.stops(colorscale) : colorscale,
                  zmin: 0, zmax: 255, tickvals: cb.tickvals, ticktext: cb.ticktext, scale: "linear" };
    const settings = displaySettings[img.name];
    if (settings && window.ptychopyDisplay) {  // the panel's colormap, scale and range (display.js)
      const sc = window.ptychopyDisplay.heatmapScale(img, settings);
      Object.assign(bar, { colorscale: sc.colorscale, zmin: sc.zmin, zmax: sc.zmax, tickvals: sc.colorbar.tickvals,
                           ticktext: sc.colorbar.ticktext, scale: sc.scale });
      div.dataset.scale = sc.scale;
      const chosen = document.querySelector("select[name='" + img.name + "-scale']");
      if (chosen) chosen.title = sc.scale === settings.scale ? "" : "log needs a range above 0: shown linear";
      div.dataset.range = sc.lo.toPrecision(4) + "," + sc.hi.toPrecision(4);
    }
    // the colours on the page, for tests: colorscale stops, the 0..255 range they span, the colour bar's labels
    div.ptychopyScale = { stops: bar.colorscale, zmin: bar.zmin, zmax: bar.zmax, ticktext: bar.ticktext,
                          scale: bar.scale };
    // pixel centres: column c at x0 + c dx, row r at y0 + r dy (rows run downwards)
    const pos = { x0: 0, dx: 1, y0: 0, dy: 1 };
    let axes = null;
    if (unit) {
      const d = img.pixel_m * unit.perM;
      Object.assign(pos, { x0: d / 2, dx: d, y0: d / 2, dy: d });
      const width = d * cols;
      const barLength = niceLength(width);
      axes = { unit: unit.name, width: width, height: d * rows, bar: barLength,
               barText: fmtLength(barLength, unit.name) };
    }
    const isObject = OBJECT_PLOTS.indexOf(div.id) >= 0;
    if (isObject) {
      objectImages[img.name] = img;
      geometry = { d: axes ? img.pixel_m * unit.perM : 1, px: !axes, unit: axes ? axes.unit : "px" };
    }
    div.dataset.unit = axes ? axes.unit : "px";
    div.dataset.scaleBar = axes ? axes.barText : "";
    div.dataset.extent = axes ? axes.width.toPrecision(4) : "";
    const fig = { bar: bar, pos: pos, rows: rows, cols: cols, axes: axes, shapes: isObject ? profileShapes() : null };
    if (!panels[div.id]) panels[div.id] = { canvas: document.createElement("canvas") };
    const panel = panels[div.id];
    panel.hover = { img: img, pos: pos, unit: axes ? axes.unit : null };  // what the hover box reads
    plotPanel(div, title, fig);  // the plot (title, axes, shapes) at once: the page's state stays current
    if (window.ptychopyHover) {
      window.ptychopyHover.attach(div, function () { return panels[div.id].hover; });
      window.ptychopyHover.refresh(div, function () { return panels[div.id].hover; });
    }
    whenInView(div, function () { colourPanel(div, img, fig); });
  }

  function plotPanel(div, title, fig) {
    const panel = panels[div.id], pos = fig.pos;
    const figKey = JSON.stringify([pos, fig.rows, fig.cols, fig.axes, fig.shapes]);
    if (figKey !== panel.fig) {
      // hoverinfo "none": Plotly finds the pixel under the pointer (its events), panel-hover.js shows the box
      const image = { type: "image", source: transparentImage(fig.rows, fig.cols), x0: pos.x0, dx: pos.dx,
                      y0: pos.y0, dy: pos.dy, hoverinfo: "none" };
      Plotly.react(div, [image], imageLayout(null, fig.axes, fig.shapes), imagePlotConfig());
      drawCounts.plotly_react += 1;
      panel.fig = figKey;
      window.ptychopyDisplay.followPlot(div, function () { paintPanel(div); });  // zoom, pan, resizes
      window.ptychopyDisplay.followSize(div);  // the grid's columns change as panels are added
    }
    if (title !== panel.title) {  // an element over the plot: no Plotly drawing
      window.ptychopyDisplay.panelTitle(div, title);
      drawCounts.titles_changed += 1;
      panel.title = title;
    }
  }

  function colourPanel(div, img, fig) {
    const panel = panels[div.id], bar = fig.bar, pos = fig.pos;
    const tableKey = JSON.stringify([bar.colorscale, bar.zmin, bar.zmax]);
    const pixels = new Uint8Array(img.data);
    if (tableKey === panel.tableKey && samePixels(pixels, panel.pixels)) {
      drawCounts.unchanged += 1;
    } else {
      if (tableKey !== panel.tableKey) {
        panel.table = window.ptychopyDisplay.lookupTable(bar.colorscale, bar.zmin, bar.zmax);
        panel.strip = window.ptychopyDisplay.colourStrip(bar.colorscale);
        panel.tableKey = tableKey;
      }
      window.ptychopyDisplay.colourInto(panel.canvas, pixels, fig.rows, fig.cols, panel.table);
      panel.pixels = pixels;
      drawCounts.coloured += 1;
    }
    panel.extent = [pos.x0 - pos.dx / 2, pos.y0 - pos.dy / 2, pos.dx * fig.cols, pos.dy * fig.rows];
    panel.bar = { strip: panel.strip, zmin: bar.zmin, zmax: bar.zmax, tickvals: bar.tickvals,
                  ticktext: bar.ticktext };
    paintPanel(div);
  }

  function paintPanel(div) {
    const panel = panels[div.id];
    if (panel && panel.extent) window.ptychopyDisplay.paintUnder(div, panel.canvas, panel.extent, panel.bar);
  }

  function samePixels(a, b) {
    if (!b || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  // What a probe or diffraction panel is called (its aria-label).
  function panelLabel(name) {
    const m = /^probe_(amplitude|phase)_(\d+)$/.exec(name);
    if (m) return "Probe mode " + m[2] + " " + m[1];
    return (name === "diffraction_measured" ? "Measured" : "Model") + " diffraction pattern";
  }

  function probeDiv(name, label) {
    let div = el("plot-" + name);
    if (!div) {
      div = document.createElement("div");
      div.className = "plot";
      div.id = "plot-" + name;
      div.setAttribute("aria-label", label);
      el("plots").insertBefore(div, el("plot-errors"));
    }
    return div;
  }

  // One scan position's measured pattern and the model's (log10(1 + counts) on one shared range, centred).
  // ``header.diffraction_binning``: detector pixels summed into each preview pixel along a side (the hover's counts).
  function drawDiffraction(img, header) {
    const which = img.name === "diffraction_measured" ? "Measured" : "Model";
    const div = probeDiv(img.name, panelLabel(img.name));
    drawImage(div, Object.assign({}, img, { binning: header.diffraction_binning || null }),
              which + " pattern, position " + header.diffraction_position + " (log10 counts)", "Viridis");
    div.dataset.position = header.diffraction_position;
  }

  // Each probe mode's amplitude and phase, titled with the mode's share of the probe's power.
  function drawProbe(img, header) {
    const m = /^probe_(amplitude|phase)_(\d+)$/.exec(img.name);
    if (!m) return;
    const mode = Number(m[2]);
    const power = (header.probe_power || [])[mode];
    const share = power === undefined ? "" : " (" + (100 * power).toPrecision(3) + " % of the power)";
    const div = probeDiv(img.name, panelLabel(img.name));
    if (m[1] === "amplitude") {
      drawImage(div, img, "Probe mode " + mode + " amplitude" + share, "Hot");
    } else {
      drawImage(div, img, "Probe mode " + mode + " phase (rad)", PHASE_COLORS);
    }
    if (power !== undefined) div.dataset.power = power;
  }

  /* ``fn`` with the newest arguments, at most once every ``ms``: a call within ``ms`` of the last run waits until
   * then (a newer call's arguments replace its own); ``.now(...)`` runs at once, ``.cancel()`` drops a wait. */
  function throttled(ms, fn) {
    let last = -Infinity, timer = null, args = null;
    function run() {
      window.clearTimeout(timer);
      timer = null;
      last = performance.now();
      const a = args;
      args = null;
      fn.apply(null, a);
    }
    function call() {
      args = arguments;
      if (timer) return;
      const wait = last + ms - performance.now();
      if (wait <= 0) run(); else timer = window.setTimeout(run, wait);
    }
    call.now = function () { args = arguments; run(); };
    call.cancel = function () { window.clearTimeout(timer); timer = null; args = null; };
    return call;
  }

  /* The error curve: appended to (Plotly.extendTraces) while a frame's points only add to those drawn, drawn
   * anew (Plotly.react) when the worker's downsampling to 500 points moved them; at most once a second, with the
   * newest frame's points (a finished job's last frame at once). Every frame redrew it before (Plotly.react,
   * 55-91 ms a frame of a 5 frames/s stream at loads of 7-10 on 2 cores: benchmarks/RESULTS.md "Viewer costs"). */
  const REDRAW_MS = 1000;
  const errorCurve = { drawn: null };
  const errorsLater = throttled(REDRAW_MS, function (next) {
    const div = el("plot-errors");
    whenInView(div, function () { plotErrors(div, next); });
  });

  function drawErrors(header) {
    const errs = header.errors || [];
    if (!errs.length) return;  // no empty log-scale plot before the first iteration
    const xs = header.error_iterations || errs.map(function (_, i) { return i + 1; });
    const key = xs.length + ":" + xs[xs.length - 1] + ":" + errs[errs.length - 1];
    if (key === el("plot-errors").dataset.drawnKey) return;  // unchanged
    const next = { xs: xs, ys: errs, key: key, seq: header.seq };
    if (FINISHED.has(header.status)) errorsLater.now(next); else errorsLater(next);
  }

  function plotErrors(div, next) {
    const drawn = errorCurve.drawn;
    if (drawn && div.data && extendsCurve(drawn, next)) {
      const n = drawn.xs.length;
      if (next.xs.length > n) Plotly.extendTraces(div, { x: [next.xs.slice(n)], y: [next.ys.slice(n)] }, [0]);
      drawCounts.errors_extended += 1;
    } else {
      const trace = { type: "scatter", mode: "lines", x: next.xs.slice(), y: next.ys.slice(),
                      line: { color: "#2563eb", width: 2 }, hovertemplate: "iteration %{x}: %{y:.4g}<extra></extra>" };
      const layout = {
        title: { text: "Error", font: { size: 14 } }, uirevision: "keep",
        margin: { l: 50, r: 10, t: 36, b: 40 }, datarevision: next.seq,
        xaxis: { title: { text: "iteration" } }, yaxis: { type: "log" },
        paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      };
      Plotly.react(div, [trace], layout, plotConfig);
      drawCounts.errors_redrawn += 1;
    }
    errorCurve.drawn = next;
    div.dataset.drawnKey = next.key;
  }

  // Whether curve ``b`` is curve ``a`` with points added at its end (the first points the same).
  function extendsCurve(a, b) {
    if (b.xs.length < a.xs.length) return false;
    for (let i = 0; i < a.xs.length; i++) if (a.xs[i] !== b.xs[i] || a.ys[i] !== b.ys[i]) return false;
    return true;
  }

  // Every frame carries every k-th scan position (a run that refines them also where they started, one that fits
  // their flux the flux): draw where each one is, coloured by how far it has moved (the moves are far smaller than
  // the scan, so colour shows them) or by scan order, and, with a flux fit, coloured by the flux it received.
  function scatterDiv(id, label) {
    let div = el(id);
    if (!div) {
      div = document.createElement("div");
      div.className = "plot";
      div.id = id;
      div.setAttribute("aria-label", label);
      el("plots").appendChild(div);
    }
    return div;
  }

  // Positions in object pixels -> the sample plane's unit (window corners; px when the frame has no pixel size).
  function scanAxes(pos, pixelM) {
    const span = Math.max(Math.max.apply(null, pos.row) - Math.min.apply(null, pos.row),
                          Math.max.apply(null, pos.col) - Math.min.apply(null, pos.col), 1);
    const unit = lengthUnit(pixelM ? span * pixelM : null);
    const k = unit ? pixelM * unit.perM : 1;
    return { unit: unit ? unit.name : "px", x: pos.col.map(function (c) { return c * k; }),
             y: pos.row.map(function (r) { return r * k; }) };
  }

  /* A scatter of the positions coloured by ``values``; with ``coloursOnly`` (the positions, titles and ring as
   * drawn) only the markers' colours change (Plotly.restyle), not the whole plot. */
  function drawScatter(div, pos, values, title, unit, hover, pixelM, marked, coloursOnly) {
    if (coloursOnly && div.data) {
      Plotly.restyle(div, { "marker.color": [values], customdata: [values] }, [0]);
      drawCounts.scan_recoloured += 1;
      return;
    }
    drawCounts.scan_redrawn += 1;
    const axes = scanAxes(pos, pixelM);
    const trace = {
      type: "scatter", mode: "markers", x: axes.x, y: axes.y, customdata: values,
      text: pos.row.map(function (_, i) { return String(i * pos.stride); }),
      marker: { size: 6, color: values, colorscale: "Viridis",
                colorbar: { title: { text: unit }, thickness: 12, len: 0.9 } },
      hovertemplate: "position %{text} at x %{x:.4g}, y %{y:.4g} " + axes.unit + ": " + hover + "<extra></extra>",
    };
    const traces = [trace];
    if (marked !== null && marked !== undefined && marked % pos.stride === 0 && marked / pos.stride < axes.x.length) {
      const i = marked / pos.stride;  // a ring around the position whose patterns the diffraction panel shows
      traces.push({ type: "scatter", mode: "markers", x: [axes.x[i]], y: [axes.y[i]], hoverinfo: "skip",
                    name: "diffraction", showlegend: false,
                    marker: { size: 14, color: "rgba(0,0,0,0)", line: { color: "#ef4444", width: 2 } } });
    }
    const layout = {
      title: { text: title + (pos.stride > 1 ? " (1 in " + pos.stride + ")" : ""), font: { size: 14 } },
      uirevision: "keep", margin: { l: 50, r: 10, t: 36, b: 40 }, showlegend: false,
      xaxis: { constrain: "domain", title: { text: "x (" + axes.unit + ")" } },
      yaxis: { autorange: "reversed", scaleanchor: "x", constrain: "domain", title: { text: "y (" + axes.unit + ")" } },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    };
    div.dataset.unit = axes.unit;
    Plotly.react(div, traces, layout, plotConfig);
    div.dataset.points = pos.row.length;
  }

  // The scan is always drawn, coloured (the "Colour" menu) by each position's Fourier error (the worker measures
  // a chunk of them per frame: reconstruction/position_errors.py), by how far a refined position moved, or by
  // scan order. A click on a position asks for its patterns in the diffraction panel.
  function scanColouring(pos) {
    const menu = el("scan-colour");
    const wanted = menu ? menu.value : "error";
    if (wanted === "error" && pos.error) return "error";
    if ((wanted === "moved" || wanted === "error") && pos.refined) return "moved";
    return "order";
  }

  // A frame that changes only the values colouring the scan (its Fourier errors: a chunk a frame) recolours it at
  // most once a second (Plotly.restyle of the markers' colours; a Plotly.react a frame before).
  const recolourLater = throttled(REDRAW_MS, function (pos, pixelM, shown) {
    drawPositions(pos, pixelM, shown, true);
  });

  function drawPositions(pos, pixelM, shown, coloursOnly) {
    const div = scatterDiv("plot-positions", "scan positions");
    if (!coloursOnly) div.dataset.drawnKey = "";  // what a frame drew (drawFrameImages sets it after this)
    const how = scanColouring(pos);
    const moved = pos.refined
      ? pos.row.map(function (r, i) { return Math.hypot(r - pos.row0[i], pos.col[i] - pos.col0[i]); }) : null;
    // how far refinement moved the positions, whatever colours the plot (read by tests/e2e/test_browser.py)
    div.dataset.maxMovedPx = moved ? Math.max.apply(null, moved.concat([0])).toFixed(3) : "";
    if (how === "error") {
      const measured = pos.error.filter(function (e) { return e !== null; });
      drawScatter(div, pos, pos.error, "Scan positions, Fourier error", "error", "error %{customdata:.4g}",
                  pixelM, shown, coloursOnly);
      div.dataset.errorMin = measured.length ? Math.min.apply(null, measured).toPrecision(4) : "";
      div.dataset.errorMax = measured.length ? Math.max.apply(null, measured).toPrecision(4) : "";
      div.dataset.errorsMeasured = measured.length;
    } else if (how === "moved") {
      drawScatter(div, pos, moved, "Scan positions, refined", "moved (px)", "moved %{customdata:.2f} px", pixelM, shown,
                  coloursOnly);
    } else {
      const order = pos.row.map(function (_, i) { return i * pos.stride; });
      drawScatter(div, pos, order, "Scan positions", "scan order", "scan order", pixelM, shown, coloursOnly);
    }
    div.dataset.colouring = how;
    div.dataset.stride = pos.stride;
    div.dataset.shownPosition = shown === null || shown === undefined ? "" : shown;
    if (!div.dataset.clickLinked && div.on) {
      div.dataset.clickLinked = "1";
      div.on("plotly_click", function (ev) {
        const pt = ev.points && ev.points[0];
        if (pt && pt.curveNumber === 0) choosePosition(pt.pointNumber * Number(div.dataset.stride));
      });
    }
    if (pos.flux) {
      const div = scatterDiv("plot-flux", "fitted flux per position");
      drawScatter(div, pos, pos.flux, "Fitted flux per position", "relative", "flux %{customdata:.3f}", pixelM, null,
                  coloursOnly);
      div.dataset.fluxMin = Math.min.apply(null, pos.flux).toFixed(3);
      div.dataset.fluxMax = Math.max.apply(null, pos.flux).toFixed(3);
    }
  }

  // A streaming job (docs/streaming.md): frames received of those planned, dropped, the phase, and how far the
  // image lags the newest frame in it (root.dataset.lagS, read by the tests).
  function drawLive(h) {
    const live = h.live;
    if (!live) return;
    el("st-live-box").hidden = false;
    el("st-frames").textContent = live.frames_received + " / " + live.frames_planned;
    el("st-dropped").textContent = live.frames_dropped;
    el("st-phase").textContent = live.outcome && live.phase !== "acquiring" ? live.phase + " (" + live.outcome + ")" : live.phase;
    root.dataset.framesInImage = live.frames_in_image;
    const partial = /^partial:/.test(h.message || "");
    el("partial").hidden = !partial;
  }

  // The diffraction panel's position: a click on the scan or an index typed in; while the job runs the worker
  // shows it from its next frame (webapp/live/viewer_choice.py; one choice per job, shared by its viewers); once it
  // has finished, the server makes the pair from the result file (webapp/jobs/diffraction.py).
  let nPositions = null;
  function choosePosition(index) {
    const hint = el("diffraction-hint");
    if (!Number.isInteger(index) || index < 0 || (nPositions !== null && index >= nPositions)) {
      hint.textContent = "Position " + index + " is not one of this scan's positions (0 to " +
        (nPositions === null ? "?" : nPositions - 1) + ").";
      return;
    }
    if (finished || FINISHED.has(root.dataset.statusAtLoad)) {
      showFinishedPosition(index);
      return;
    }
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      hint.textContent = "Not connected: choose the position again once the page says connected.";
      return;
    }
    socket.send(JSON.stringify({ diffraction_position: index }));
    el("diffraction-index").value = String(index);
    hint.textContent = "Asked for position " + index + "…";
  }

  // A finished job: the measured pattern and the model of its result file, from /jobs/<id>/diffraction/. A 503
  // (an earlier click still simulates the scan: the server waits a few seconds at most) is asked again after its
  // Retry-After, up to 20 times, unless another position was asked for meanwhile.
  let finishedWanted = null;
  function showFinishedPosition(index, retries) {
    const hint = el("diffraction-hint");
    retries = retries || 0;
    finishedWanted = index;
    if (!retries) hint.textContent = "Computing position " + index + "…";
    const url = window.location.pathname.replace(/\/$/, "") + "/diffraction/?position=" + index;
    fetch(url, { credentials: "same-origin" })
      .then(function (r) {
        return r.json().catch(function () { return { error: "HTTP " + r.status }; }).then(function (body) {
          if (r.status === 503 && retries < 20) {
            const wait = Math.max(1, Number(r.headers.get("Retry-After")) || 3);
            hint.textContent = (body.error || "Being prepared") + " (asking again in " + wait + " s)";
            window.setTimeout(function () {
              if (finishedWanted === index) showFinishedPosition(index, retries + 1);
            }, 1000 * wait);
            return null;
          }
          return r.ok ? body : Promise.reject(new Error(body.error || "HTTP " + r.status));
        });
      })
      .then(function (body) {
        if (!body || finishedWanted !== index) return;  // asked again later, or another position was chosen
        const header = { diffraction_position: body.position, diffraction_binning: body.binning };
        body.images.forEach(function (img) {  // base64 bytes, as a frame's
          const raw = atob(img.bdata), data = new Uint8Array(raw.length);
          for (let i = 0; i < raw.length; i++) data[i] = raw.charCodeAt(i);
          drawDiffraction(Object.assign({}, img, { data: data.buffer }), header);
        });
        el("diffraction-index").value = String(body.position);
        root.dataset.diffractionPosition = body.position;
        const frame = scrub.showing === null ? lastLiveFrame : null;
        if (frame && frame.header.positions) drawPositions(frame.header.positions, frame.header.pixel_size_m, body.position);
        hint.textContent = "Position " + body.position + ": the measured pattern and the result's model.";
      })
      .catch(function (err) { if (finishedWanted === index) hint.textContent = err.message || String(err); });
  }

  function onTextMessage(text) {
    let msg = null;
    try { msg = JSON.parse(text); } catch (e) { return; }
    const hint = el("diffraction-hint");
    if (msg.error) hint.textContent = msg.error;
    else if (msg.diffraction_position !== undefined) {
      hint.textContent = "Position " + msg.diffraction_position + " from the next frame.";
      root.dataset.askedPosition = msg.diffraction_position;
    }
  }

  if (el("diffraction-show")) {
    el("diffraction-show").addEventListener("click", function () {
      choosePosition(Number(el("diffraction-index").value));
    });
    el("diffraction-index").addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") { ev.preventDefault(); choosePosition(Number(ev.target.value)); }
    });
  }
  if (el("scan-colour")) el("scan-colour").addEventListener("change", function () {
    const frame = scrub.showing === null ? lastLiveFrame : null;
    const shown = root.dataset.diffractionPosition;  // a finished job's pick is not in its frame
    if (frame && frame.header.positions) drawPositions(frame.header.positions, frame.header.pixel_size_m,
                                                       shown ? Number(shown) : frame.header.diffraction_position);
  });

  function drawStats(h) {
    const status = el("st-status");
    status.textContent = h.status;
    status.className = "status status-" + h.status;
    el("st-iteration").textContent = h.iteration;
    el("st-iterations").textContent = h.iterations;
    el("st-error").textContent = fmtNumber(h.error);
    el("st-rate").textContent = h.rate_per_s ? fmtNumber(h.rate_per_s, 3) + " it/s" : "—";
    el("st-eta").textContent = h.status === "running" ? fmtDuration(h.eta_s) : "—";
    const pct = h.iterations ? Math.min(100, 100 * h.iteration / h.iterations) : 0;
    el("st-bar").style.width = pct.toFixed(1) + "%";
    const msg = el("st-message");
    msg.textContent = h.message || "";
    msg.hidden = !h.message;
    drawLive(h);
    if (FINISHED.has(h.status)) {
      const cancelForm = el("cancel-form");
      if (cancelForm) cancelForm.hidden = true;
      setConn("closed: the job has " + (h.status === "done" ? "finished" : "ended (" + h.status + ")"), "");
    } else if (h.status === "queued") {
      setConn("connected, waiting for a worker", "ok");
    } else {
      setConn("live", "ok");
    }
    if (h.status !== "queued") {
      const queue = el("queue-info");
      if (queue) queue.remove();
    }
    if (h.status !== detailsStatus && (h.status === "running" || FINISHED.has(h.status))) refreshDetails(h.status);
  }

  // The details card (start and end time, duration, device, worker, downloads) is rendered by the server:
  // fetch it again when the job starts running and when it has finished.
  let detailsStatus = root.dataset.statusAtLoad;
  function refreshDetails(status) {
    const previous = detailsStatus;
    detailsStatus = status;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("details");
        if (fresh) el("details").replaceWith(fresh);
        durationBase = null;
        tickDuration();
      })
      .catch(function () { detailsStatus = previous; });
  }

  // "Duration" ticks while the job runs: the server's elapsed time at page load plus the time since, on the
  // browser's monotonic clock (no dependence on the two clocks agreeing).
  let durationBase = null;
  function tickDuration() {
    const dd = el("duration");
    if (!dd || dd.dataset.running !== "1" || finished || !dd.dataset.elapsedS) return;
    if (durationBase === null) durationBase = { s: parseFloat(dd.dataset.elapsedS), t: performance.now() };
    dd.textContent = fmtDuration(durationBase.s + (performance.now() - durationBase.t) / 1000);
  }
  window.setInterval(tickDuration, 1000);

  // A queued job's position and estimated start come from the server: fetch them again every 5 s.
  function refreshQueue() {
    if (!el("queue-info") || root.dataset.status && root.dataset.status !== "queued") return;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("queue-info");
        const current = el("queue-info");
        if (!current) return;
        if (fresh) current.replaceWith(fresh); else current.remove();
      })
      .catch(function () {});
  }
  window.setInterval(refreshQueue, 5000);

  // What stands where the plots will be when a frame has no image (queued, or ended before its first iteration).
  function placeholder(h) {
    if (h.status === "queued") return "Queued: the images appear with the first iteration.";
    if (h.status === "running") return "Running: the images appear with the first frame.";
    if (h.status === "failed") return "No image: the job failed before its first iteration" + (h.message ? " (" + h.message + ")." : ".");
    return "No image: the job was " + h.status + " before its first iteration.";
  }

  // Colormap, scale and range of each object panel (controls made by display.js once the panels appear).
  const displaySettings = {
    object_amplitude: { map: "Greys", scale: "linear", gamma: 1, lo: null, hi: null },
    object_phase: { map: "Viridis", scale: "linear", gamma: 1, lo: null, hi: null },
  };
  let controlsMade = false;
  function makeDisplayControls() {
    if (controlsMade || !window.ptychopyDisplay) return;
    controlsMade = true;
    Object.keys(displaySettings).forEach(function (name) {
      window.ptychopyDisplay.controls(el("display-controls"), name, TITLES[name], displaySettings[name], function () {
        if (objectImages[name]) drawImage(el("plot-" + name), objectImages[name], TITLES[name], COLORS[name]);
      });
    });
  }

  // Line profile: with the tool on, two clicks on an object panel set a line; the profile plot shows the
  // amplitude and the phase along it against the distance in the panels' unit (its title gives the length, so a
  // feature can be measured), recomputed from every new frame. Values are the frame's 8-bit previews.
  const objectImages = {};
  let geometry = null;  // unit per image pixel of the object panels
  const profile = { active: false, start: null, line: null };

  function profileShapes() {
    const out = [];
    const L = profile.line;
    if (L) out.push({ type: "line", xref: "x", yref: "y", x0: L.x0, y0: L.y0, x1: L.x1, y1: L.y1,
                      line: { color: "#ef4444", width: 2 } });
    if (profile.start) out.push({ type: "circle", xref: "x", yref: "y", line: { color: "#ef4444" },
                                  x0: profile.start.x - geometry.d, x1: profile.start.x + geometry.d,
                                  y0: profile.start.y - geometry.d, y1: profile.start.y + geometry.d });
    return out;
  }

  function sampleLine(img, L) {
    const g = geometry;
    const length = Math.hypot(L.x1 - L.x0, L.y1 - L.y0);
    const n = Math.max(2, Math.ceil(length / g.d) + 1);
    const data = new Uint8Array(img.data);
    const rows = img.shape[0], cols = img.shape[1];
    const lo = img.vmin === null ? 0 : img.vmin, hi = img.vmax === null ? 255 : img.vmax;
    const xs = [], ys = [];
    for (let i = 0; i < n; i++) {
      const t = i / (n - 1);
      const x = L.x0 + t * (L.x1 - L.x0), y = L.y0 + t * (L.y1 - L.y0);
      const c = Math.min(cols - 1, Math.max(0, g.px ? Math.round(x) : Math.floor(x / g.d)));
      const r = Math.min(rows - 1, Math.max(0, g.px ? Math.round(y) : Math.floor(y / g.d)));
      xs.push(t * length);
      ys.push(lo + (hi - lo) * data[r * cols + c] / 255);
    }
    return { xs: xs, ys: ys, length: length };
  }

  function drawProfile() {
    const L = profile.line, amp = objectImages.object_amplitude, phase = objectImages.object_phase;
    if (!L || !amp || !geometry) return;
    let div = el("plot-profile");
    if (!div) {
      div = document.createElement("div");
      div.className = "plot";
      div.id = "plot-profile";
      div.setAttribute("aria-label", "Line profile");
      el("plots").insertBefore(div, el("plot-object_phase").nextSibling);
    }
    const a = sampleLine(amp, L);
    const traces = [{ type: "scatter", mode: "lines", name: "amplitude", x: a.xs, y: a.ys,
                      line: { color: "#111827", width: 2 } }];
    if (phase) {
      const p = sampleLine(phase, L);
      traces.push({ type: "scatter", mode: "lines", name: "phase (rad)", x: p.xs, y: p.ys, yaxis: "y2",
                    line: { color: "#7c3aed", width: 1.5 } });
    }
    const unit = geometry.unit;
    const layout = {
      title: { text: "Line profile, length " + fmtLength(Number(a.length.toPrecision(4)), unit), font: { size: 14 } },
      uirevision: "keep", margin: { l: 50, r: 50, t: 36, b: 40 }, datarevision: root.dataset.seq,
      xaxis: { title: { text: "distance (" + unit + ")" } }, yaxis: { title: { text: "amplitude" } },
      yaxis2: { title: { text: "phase (rad)" }, overlaying: "y", side: "right" },
      legend: { orientation: "h", y: -0.25 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    };
    Plotly.react(div, traces, layout, plotConfig);
    div.dataset.length = a.length.toPrecision(6);
    div.dataset.unit = unit;
    div.dataset.samples = a.xs.length;
  }

  function redrawObjects() {
    OBJECT_PLOTS.forEach(function (id) {
      const div = el(id);
      if (div && div.layout) Plotly.relayout(div, { shapes: (div.layout.shapes || []).filter(function (sh) {
        return sh.fillcolor === "#ffffff";  // keep the scale bar
      }).concat(profileShapes()) });
    });
    drawProfile();
  }

  function onObjectClick(ev) {
    if (!profile.active || !ev.points || !ev.points.length) return;
    const pt = { x: ev.points[0].x, y: ev.points[0].y };
    if (!profile.start) {
      profile.start = pt;
      el("profile-hint").textContent = "Now click the end of the line.";
    } else {
      profile.line = { x0: profile.start.x, y0: profile.start.y, x1: pt.x, y1: pt.y };
      profile.start = null;
      el("profile-hint").textContent = "Click twice again for another line.";
    }
    redrawObjects();
  }

  const toggle = el("profile-toggle");
  if (toggle) toggle.addEventListener("click", function () {
    profile.active = !profile.active;
    toggle.setAttribute("aria-pressed", String(profile.active));
    el("profile-hint").textContent = profile.active ? "Click the start of the line on an object panel." : "";
    if (!profile.active) profile.start = null;
  });

  // Zoom and pan are shared by the object's panels (same field, same axes): a relayout of one is applied to the
  // others; the flag stops the echo. uirevision keeps the shared view through later frames.
  const OBJECT_PLOTS = ["plot-object_amplitude", "plot-object_phase"];
  let syncing = false;
  function linkZoom(div, group) {
    if (div.dataset.zoomLinked || !div.on) return;
    div.dataset.zoomLinked = "1";
    div.on("plotly_click", onObjectClick);
    div.on("plotly_relayout", function (ev) {
      if (syncing) return;
      const update = {};
      Object.keys(ev).forEach(function (k) {
        if (!/^[xy]axis\.(range|autorange)/.test(k)) return;
        update[k] = k === "yaxis.autorange" && ev[k] === true ? "reversed" : ev[k];  // image rows run downwards
      });
      if (!Object.keys(update).length) return;
      syncing = true;
      Promise.all(group.filter(function (id) { return id !== div.id && el(id) && el(id).data; })
        .map(function (id) { return Plotly.relayout(el(id), update); }))
        .finally(function () { syncing = false; });
    });
  }

  // The images, profile and scan of one frame (a live one, or a stored one the scrubber picked).
  function drawFrameImages(frame) {
    const h = frame.header;
    // every panel's place first, so the grid has its final columns when Plotly sizes the first plots (a plot
    // whose cell changes later is resized too: display.js followSize)
    frame.images.forEach(function (img) { if (!TITLES[img.name]) probeDiv(img.name, panelLabel(img.name)); });
    frame.images.forEach(function (img) {
      if (TITLES[img.name]) {
        drawImage(el("plot-" + img.name), img, TITLES[img.name], COLORS[img.name]);
        linkZoom(el("plot-" + img.name), OBJECT_PLOTS);
      } else if (img.name.indexOf("diffraction_") === 0) {
        drawDiffraction(img, h);
      } else {
        drawProbe(img, h);
      }
    });
    drawProfile();
    if (h.positions) {  // drawn again when the scan, the position shown or the colouring changed; recoloured
      const p = h.positions;  // (Plotly.restyle, at most once a second) when only the values colouring it did
      const scanKey = JSON.stringify([p.row, p.col, p.row0, p.col0, p.stride, p.refined, !p.flux, h.pixel_size_m,
                                     h.diffraction_position, scanColouring(p)]);
      const colourKey = JSON.stringify([p.error, p.flux]);
      const scan = el("plot-positions");
      if (!scan || scan.dataset.drawnKey !== scanKey) {
        recolourLater.cancel();
        drawPositions(p, h.pixel_size_m, h.diffraction_position);
      } else if (scan.dataset.colourKey !== colourKey) {
        if (FINISHED.has(h.status)) recolourLater.now(p, h.pixel_size_m, h.diffraction_position);
        else recolourLater(p, h.pixel_size_m, h.diffraction_position);
      }
      el("plot-positions").dataset.drawnKey = scanKey;
      el("plot-positions").dataset.colourKey = colourKey;
    }
    if (h.n_positions) {
      nPositions = h.n_positions;
      el("diffraction-index").max = String(h.n_positions - 1);
    }
    root.dataset.diffractionPosition = h.diffraction_position === null ? "" : h.diffraction_position;
    root.dataset.shownIteration = h.iteration;
  }

  // Iteration scrubber: the worker keeps a few frames of the run (webapp/jobs/snapshots.py); the slider replays
  // them through the same drawing, and "Live" goes back to the newest frame. Live frames keep arriving meanwhile
  // (the stats and the error curve stay live).
  const scrub = { iterations: [], showing: null, listedAt: -Infinity };
  let lastLiveFrame = null;
  const snapBase = window.location.pathname.replace(/\/$/, "") + "/snapshots/";

  function maybeRefreshSnapshots(h) {
    const now = performance.now();
    if (!FINISHED.has(h.status) && now - scrub.listedAt < 5000) return;
    scrub.listedAt = now;
    fetch(snapBase, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (body) {
        scrub.iterations = body.iterations || [];
        const slider = el("scrub");
        if (!slider || !scrub.iterations.length) return;
        el("scrubber").hidden = false;
        slider.max = String(scrub.iterations.length - 1);
        fillIterationChoices(scrub.iterations);
        if (scrub.showing === null) {
          slider.value = slider.max;
          el("scrub-label").textContent = "live (" + scrub.iterations.length + " stored iterations)";
        }
      })
      .catch(function () {});
  }

  // The two iterations the "Compare" form sends to /jobs/<id>/compare-iterations/ (the first and the last stored
  // by default; a choice the viewer made is kept while the list grows).
  function fillIterationChoices(iterations) {
    [["compare-it-a", 0], ["compare-it-b", iterations.length - 1]].forEach(function (pair) {
      const select = el(pair[0]);
      if (!select) return;
      const kept = select.dataset.chosen;
      select.replaceChildren.apply(select, iterations.map(function (it) {
        const option = document.createElement("option");
        option.value = option.textContent = String(it);
        return option;
      }));
      select.value = kept && iterations.indexOf(Number(kept)) >= 0 ? kept : String(iterations[pair[1]]);
      if (!select.dataset.watched) {
        select.dataset.watched = "1";
        select.addEventListener("change", function () { select.dataset.chosen = select.value; });
      }
    });
  }

  function showSnapshot(index) {
    const it = scrub.iterations[index];
    if (it === undefined) return;
    fetch(snapBase + it + "/", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.arrayBuffer() : Promise.reject(r.status); })
      .then(function (buffer) {
        scrub.showing = it;
        drawFrameImages(parseFrame(buffer));
        el("scrub-label").textContent = "iteration " + it + " (" + (index + 1) + " of " + scrub.iterations.length + ")";
      })
      .catch(function () {});
  }

  function backToLive() {
    scrub.showing = null;
    if (lastLiveFrame) drawFrameImages(lastLiveFrame);
    const slider = el("scrub");
    slider.value = slider.max;
    el("scrub-label").textContent = "live (" + scrub.iterations.length + " stored iterations)";
  }

  if (el("scrub")) {
    el("scrub").addEventListener("input", function (ev) { showSnapshot(Number(ev.target.value)); });
    el("scrub-live").addEventListener("click", backToLive);
  }

  /* The time each drawing took (performance.now() around draw(), ms), for tests and benchmarks/live_draw.py:
   * frames drawn, the last, mean and largest time, the last 100 times, and the image panels coloured, unchanged
   * (not coloured again) and out of view (left for later), and the Plotly calls. */
  const timing = window.ptychopyDrawStats = { frames: 0, last_ms: null, mean_ms: null, max_ms: null,
                                                 recent_ms: [], panels: drawCounts };
  function timedDraw() {
    const t0 = performance.now();
    const drew = draw();
    if (!drew) return;
    const ms = performance.now() - t0;
    timing.mean_ms = (timing.mean_ms * timing.frames + ms) / (timing.frames + 1);
    timing.frames += 1;
    timing.last_ms = ms;
    timing.max_ms = Math.max(timing.max_ms || 0, ms);
    timing.recent_ms.push(Math.round(ms * 10) / 10);
    if (timing.recent_ms.length > 100) timing.recent_ms.shift();
  }

  function draw() {
    drawScheduled = false;
    const frame = latest;
    latest = null;
    if (!frame || typeof Plotly === "undefined") return false;
    const h = frame.header;
    drawStats(h);
    const waiting = el("waiting");
    if (frame.images.length) {
      waiting.hidden = true;
      el("plots").hidden = false;  // shown before Plotly measures it
      el("tools").hidden = false;
      makeDisplayControls();
    } else if (el("plots").hidden) {
      waiting.hidden = false;
      waiting.textContent = placeholder(h);
    }
    if (frame.images.length) {
      lastLiveFrame = frame;
      const drawStartedAt = Date.now() / 1000;
      if (scrub.showing === null) drawFrameImages(frame);  // else the viewer is looking at the run's history
      if (h.live && h.live.newest_frame_unix_s && h.live.phase === "acquiring") {
        // drawn now: how old is the newest detector frame this image holds (seconds)
        const lag = Date.now() / 1000 - h.live.newest_frame_unix_s;
        root.dataset.lagS = lag.toFixed(3);
        (window.ptychopyLiveLags = window.ptychopyLiveLags || []).push(lag);
        // [drawn at, frames in the image, produced at, received at, drawing started at] (Unix s): a test finds
        // each image's newest frame's acquisition time, and where the time went
        (window.ptychopyLiveDraws = window.ptychopyLiveDraws || []).push(
          [Date.now() / 1000, h.live.frames_in_image, h.t_produced, frame.receivedAt, drawStartedAt]);
      }
      maybeRefreshSnapshots(h);
    }
    drawErrors(h);
    framesDrawn += 1;
    root.dataset.seq = h.seq;
    root.dataset.iteration = h.iteration;
    root.dataset.status = h.status;
    root.dataset.framesDrawn = framesDrawn;
    return true;
  }

  function onFrame(buffer) {
    const frame = parseFrame(buffer);
    frame.receivedAt = Date.now() / 1000;
    if (frame.header.seq < lastSeq) return;  // stale
    lastSeq = frame.header.seq;
    if (FINISHED.has(frame.header.status)) finished = true;
    latest = frame;
    if (!drawScheduled) {
      drawScheduled = true;
      // via a task queued behind the messages already waiting (those that came while the last, long, drawing
      // ran): they are all read first and only the newest is drawn; with rAF alone each waiting message got a
      // drawing of its own, one after another, and the image fell seconds behind the stream (issue 21)
      window.setTimeout(function () { window.requestAnimationFrame(timedDraw); }, 0);
    }
  }

  function setConn(text, cls) {
    const c = el("st-conn");
    c.textContent = text;
    c.className = "conn " + (cls || "");
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    // the plain subprotocol the server answers with (a script adds its ticket as another, docs/webapp.md)
    socket = new WebSocket(scheme + window.location.host + root.dataset.ws, ["ptychopy.v1"]);
    socket.binaryType = "arraybuffer";
    socket.onopen = function () { backoffMs = 1000; setConn("connected", "ok"); };
    socket.onmessage = function (event) {
      if (event.data instanceof ArrayBuffer) onFrame(event.data);
      else if (typeof event.data === "string") onTextMessage(event.data);
    };
    socket.onclose = function () {
      socket = null;
      if (finished) return;  // the final frame already said so
      setConn("reconnecting in " + Math.round(backoffMs / 1000) + " s", "warn");
      window.setTimeout(connect, backoffMs);
      backoffMs = Math.min(backoffMs * 2, 30000);
    };
  }

  function start() {
    if (typeof Plotly === "undefined") { window.setTimeout(start, 50); return; }
    connect();
  }
  start();
})();

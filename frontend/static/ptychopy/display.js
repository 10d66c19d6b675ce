/* Display controls of the live view's object panels: colormap, scale (linear, log, gamma) and the displayed
 * value range (the histogram range); and the length units and scale bars the live and comparison pages share.
 *
 * The frames' images stay as they arrive (uint8, 0..255 linear in vmin..vmax). The range becomes the colour
 * bar's zmin/zmax, and log or gamma become the colorscale itself: 33 stops at evenly spaced values of the range,
 * each coloured by where that value falls on the log or gamma scale. The pixels are coloured through a 256-entry
 * table made from that colorscale and range (lookupTable), into a canvas drawn under a Plotly plot's axes
 * (paintUnder): one table look-up per pixel, and no Plotly drawing when only the pixels changed. The live page
 * (live.js) and the comparison page (compare.js) draw their image panels this way.
 */
(function () {
  "use strict";

  const MAPS = {
    Greys: ["#000000", "#ffffff"],
    Viridis: ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
              "#fde725"],
    Cividis: ["#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8678", "#a59c74", "#c3b369", "#e1cc55",
              "#fee838"],
    Hot: ["#000000", "#e60000", "#ffd200", "#ffffff"],
    Twilight: ["#e2d9e2", "#5e7fba", "#2f1436", "#b3573f", "#e2d9e2"],
  };
  const STOPS = 33;

  function rgb(hex) {
    return [1, 3, 5].map(function (i) { return parseInt(hex.slice(i, i + 2), 16); });
  }

  // The colour at t in [0, 1] of a map given as evenly spaced colours.
  function sample(colors, t) {
    const x = Math.min(1, Math.max(0, t)) * (colors.length - 1);
    const i = Math.min(colors.length - 2, Math.floor(x));
    const a = rgb(colors[i]), b = rgb(colors[i + 1]), f = x - i;
    return "rgb(" + a.map(function (v, k) { return Math.round(v + f * (b[k] - v)); }).join(",") + ")";
  }

  /* A colour bar's label for the value ``v``: 3 significant digits, at most 8 characters (exponent form below
   * 0.01 and from 10^4), so it fits the room right of the bar (imageLayout's right margin). */
  function tickText(v) {
    const a = Math.abs(v);
    if (a === 0 || !isFinite(v)) return isFinite(v) ? "0" : "";
    if (a < 0.01 || a >= 1e4) return v.toExponential(2).replace("e+", "e");
    return String(Number(v.toPrecision(3)));
  }

  /* What a heatmap of ``img`` ({vmin, vmax}) needs for ``settings`` ({map, scale: linear|log|gamma, gamma, lo,
   * hi}; lo/hi null = the image's range): {colorscale, zmin, zmax, colorbar, lo, hi, scale}. Log needs lo > 0; it
   * falls back to linear otherwise (``scale`` says which was used). */
  function heatmapScale(img, settings) {
    const vmin = img.vmin === null ? 0 : img.vmin, vmax = img.vmax === null ? 1 : img.vmax;
    const span = vmax - vmin || 1;
    let lo = settings.lo === null || !isFinite(settings.lo) ? vmin : settings.lo;
    let hi = settings.hi === null || !isFinite(settings.hi) ? vmax : settings.hi;
    if (hi <= lo) { lo = vmin; hi = vmax; }
    const scale = settings.scale === "log" && lo <= 0 ? "linear" : settings.scale;
    const gamma = settings.gamma > 0 ? settings.gamma : 1;
    const colors = MAPS[settings.map] || MAPS.Greys;
    const colorscale = [];
    for (let i = 0; i < STOPS; i++) {
      const p = i / (STOPS - 1);
      const v = lo + p * (hi - lo);
      const t = scale === "log" ? Math.log(v / lo) / Math.log(hi / lo) : scale === "gamma" ? Math.pow(p, gamma) : p;
      colorscale.push([p, sample(colors, t)]);
    }
    const zmin = 255 * (lo - vmin) / span, zmax = 255 * (hi - vmin) / span;
    const ticks = [0, 0.25, 0.5, 0.75, 1].map(function (p) { return zmin + p * (zmax - zmin); });
    const colorbar = { tickvals: ticks, thickness: 12, len: 0.9,
                       ticktext: ticks.map(function (z) { return tickText(vmin + span * z / 255); }) };
    return { colorscale: colorscale, zmin: zmin, zmax: zmax, colorbar: colorbar, lo: lo, hi: hi, scale: scale };
  }

  /* A row of controls for one panel in ``container``; ``onChange(settings)`` after every change. */
  function controls(container, name, label, settings, onChange) {
    const row = document.createElement("fieldset");
    row.className = "display-controls";
    row.dataset.for = name;
    const legend = document.createElement("legend");
    legend.textContent = label;
    row.appendChild(legend);

    function add(el, text, key) {
      el.name = name + "-" + key;
      const wrap = document.createElement("label");
      wrap.textContent = text + " ";
      wrap.appendChild(el);
      row.appendChild(wrap);
      return el;
    }
    function select(options, value) {
      const s = document.createElement("select");
      options.forEach(function (o) { const opt = new Option(o, o); opt.selected = o === value; s.add(opt); });
      return s;
    }
    function number(value, step, title) {
      const n = document.createElement("input");
      n.type = "number"; n.step = step; n.title = title; n.value = value === null ? "" : value;
      n.size = 6;
      return n;
    }
    const map = add(select(Object.keys(MAPS), settings.map), "colormap", "map");
    const scale = add(select(["linear", "log", "gamma"], settings.scale), "scale", "scale");
    const gamma = add(number(settings.gamma, "0.1", "gamma exponent"), "γ", "gamma");
    const lo = add(number(settings.lo, "any", "lowest value shown (blank: the frame's lowest)"), "min", "min");
    const hi = add(number(settings.hi, "any", "highest value shown (blank: the frame's highest)"), "max", "max");
    function read() {
      settings.map = map.value;
      settings.scale = scale.value;
      settings.gamma = parseFloat(gamma.value) || 1;
      settings.lo = lo.value === "" ? null : parseFloat(lo.value);
      settings.hi = hi.value === "" ? null : parseFloat(hi.value);
      gamma.disabled = settings.scale !== "gamma";
      onChange(settings);
    }
    row.addEventListener("change", read);
    gamma.disabled = settings.scale !== "gamma";
    container.appendChild(row);
    return row;
  }

  // Physical units: a field narrower than 2 µm in nm, else in µm (null: no pixel size, so pixels).
  function lengthUnit(extentM) {
    if (!extentM || !isFinite(extentM)) return null;
    return extentM < 2e-6 ? { name: "nm", perM: 1e9 } : { name: "µm", perM: 1e6 };
  }

  // The longest 1, 2 or 5 x 10^k not over a fifth of the width (a scale bar).
  function niceLength(width) {
    const target = width / 5;
    const p = Math.pow(10, Math.floor(Math.log10(target)));
    const m = target / p;
    return (m >= 5 ? 5 : m >= 2 ? 2 : 1) * p;
  }

  function fmtLength(x, unit) {
    return (Number.isInteger(x) ? String(x) : Number(x.toPrecision(3)).toString()) + " " + unit;
  }

  // Any CSS colour as [r, g, b, a], each 0..255 (the canvas parses it).
  const parser = document.createElement("canvas").getContext("2d");
  function rgba(color) {
    parser.fillStyle = "#000000";
    parser.fillStyle = color;
    const s = parser.fillStyle;  // "#rrggbb", or "rgba(r, g, b, a)" when not opaque
    if (s[0] === "#") return [1, 3, 5].map(function (i) { return parseInt(s.slice(i, i + 2), 16); }).concat([255]);
    const v = s.slice(s.indexOf("(") + 1, -1).split(",").map(Number);
    return [v[0], v[1], v[2], Math.round(255 * (v.length > 3 ? v[3] : 1))];
  }

  /* The colours a heatmap with ``colorscale`` ([[p, CSS colour], ...], p rising from 0 to 1) and the range
   * zmin..zmax gives the 8-bit values 0..255, as a Uint8ClampedArray of 256 RGBA entries: value v sits at
   * p = (v - zmin) / (zmax - zmin), clamped to 0..1, and takes the colour interpolated linearly in RGB between the
   * two stops around p (as Plotly colours a heatmap). */
  function lookupTable(colorscale, zmin, zmax) {
    const stops = colorscale.map(function (s) { return [Number(s[0]), rgba(s[1])]; });
    const table = new Uint8ClampedArray(256 * 4);
    const span = zmax - zmin || 1;
    for (let v = 0; v < 256; v++) {
      const p = Math.min(1, Math.max(0, (v - zmin) / span));
      let k = 0;
      while (k < stops.length - 2 && p > stops[k + 1][0]) k++;
      const a = stops[k], b = stops[Math.min(k + 1, stops.length - 1)];
      const f = b[0] > a[0] ? Math.min(1, Math.max(0, (p - a[0]) / (b[0] - a[0]))) : 0;
      for (let c = 0; c < 4; c++) table[4 * v + c] = Math.round(a[1][c] + f * (b[1][c] - a[1][c]));
    }
    return table;
  }

  /* ``pixels`` (uint8, rows x cols, row-major) coloured through ``table`` (lookupTable) into ``canvas`` (resized
   * to cols x rows). */
  function colourInto(canvas, pixels, rows, cols, table) {
    if (canvas.width !== cols || canvas.height !== rows) { canvas.width = cols; canvas.height = rows; }
    const ctx = canvas.getContext("2d");
    const out = ctx.createImageData(cols, rows);
    const rgbaOut = new Uint32Array(out.data.buffer);
    const words = new Uint32Array(table.buffer);  // one 32-bit RGBA word per value (the platform's byte order)
    for (let i = 0, n = rows * cols; i < n; i++) rgbaOut[i] = words[pixels[i]];
    ctx.putImageData(out, 0, 0);
  }

  // A named map's colours as evenly spaced colorscale stops ([[p, colour], ...]).
  function stops(name) {
    const colors = MAPS[name] || MAPS.Greys;
    return colors.map(function (c, i) { return [i / (colors.length - 1), c]; });
  }

  /* A colour bar's strip: a 1 x 256 canvas, the colorscale's colour at p = 1 on top, p = 0 at the bottom. */
  function colourStrip(colorscale) {
    const table = lookupTable(colorscale, 0, 255);
    const strip = document.createElement("canvas");
    strip.width = 1;
    strip.height = 256;
    const ctx = strip.getContext("2d");
    const img = ctx.createImageData(1, 256);
    for (let v = 0; v < 256; v++) img.data.set(table.subarray(4 * v, 4 * v + 4), 4 * (255 - v));
    ctx.putImageData(img, 0, 0);
    return strip;
  }

  /* Draw the image ``source`` (a canvas) in a canvas under the SVG of the Plotly plot ``div`` (its paper and plot
   * backgrounds transparent), inside the plot area, its top-left corner at (x0, y0) and its extent (w, h) in the
   * axes' units, and right of the plot area the colour bar ``bar`` ({strip: colourStrip, zmin, zmax, tickvals,
   * ticktext}, tick values on the 0..255 scale of the image's bytes; null: none). The axes, shapes and
   * annotations stay Plotly's, drawn over it. Called again after every relayout (zoom, pan, resize). */
  function paintUnder(div, source, extent, bar) {
    const x0 = extent[0], y0 = extent[1], w = extent[2], h = extent[3];
    const L = div._fullLayout, box = div.querySelector(".svg-container");
    if (!L || !box || !L.xaxis || !L.yaxis) return;
    let under = div.ptychopyUnder;
    if (!under) {
      under = div.ptychopyUnder = document.createElement("canvas");
      under.className = "image-under";
      under.style.cssText = "position:absolute;left:0;top:0;pointer-events:none";
    }
    if (under.parentNode !== box) box.insertBefore(under, box.firstChild);  // before the SVG: painted under it
    const dpr = window.devicePixelRatio || 1, W = L.width, H = L.height;
    if (under.width !== Math.round(W * dpr) || under.height !== Math.round(H * dpr)) {
      under.width = Math.round(W * dpr);
      under.height = Math.round(H * dpr);
      under.style.width = W + "px";
      under.style.height = H + "px";
    }
    const ctx = under.getContext("2d"), xa = L.xaxis, ya = L.yaxis;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, under.width, under.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.save();
    ctx.beginPath();
    ctx.rect(xa._offset, ya._offset, xa._length, ya._length);
    ctx.clip();
    const px0 = xa._offset + xa.l2p(x0), px1 = xa._offset + xa.l2p(x0 + w);
    const py0 = ya._offset + ya.l2p(y0), py1 = ya._offset + ya.l2p(y0 + h);
    ctx.imageSmoothingEnabled = false;  // pixels stay pixels when zoomed in (a heatmap's zsmooth: false)
    ctx.translate(px0, py0);
    ctx.scale((px1 - px0) / source.width, (py1 - py0) / source.height);
    ctx.drawImage(source, 0, 0);
    ctx.restore();
    if (!bar) return;
    // the colour bar: 12 px wide, 10 px right of the plot area, 90 % of its height, labels at the tick values
    const bx = xa._offset + xa._length + 10, by = ya._offset + 0.05 * ya._length, bh = 0.9 * ya._length;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(bar.strip, bx, by, 12, bh);
    ctx.strokeStyle = "#444444";
    ctx.lineWidth = 1;
    ctx.strokeRect(bx + 0.5, by + 0.5, 11, bh - 1);
    ctx.fillStyle = "#444444";
    ctx.font = "11px 'Open Sans', verdana, arial, sans-serif";
    ctx.textBaseline = "middle";
    const span = bar.zmax - bar.zmin || 1;
    bar.tickvals.forEach(function (z, i) {
      const y = by + bh * (1 - (z - bar.zmin) / span);
      ctx.fillRect(bx + 12, Math.round(y), 3, 1);
      ctx.fillText(bar.ticktext[i], bx + 17, y);
    });
  }

  /* The layout of an image panel whose pixels are painted under it (paintUnder): the title (null: none, e.g. one
   * drawn by panelTitle), axes in ``axes.unit``
   * (rows downwards, square pixels, no grid), room on the right for the colour bar, transparent backgrounds, and
   * with ``axes`` ({unit, width, height, bar, barText}; null: pixels) a scale bar in the lower left corner drawn in
   * data coordinates, so it zooms with the image; ``extraShapes`` (e.g. a profile line) are added. */
  function imageLayout(title, axes, extraShapes) {
    const layout = {
      title: { text: title || "", font: { size: 14 } },
      uirevision: "keep",
      // the colour bar (painted under the plot) on the right: 10 px gap, 12 px bar, 5 px to its labels (tickText:
      // at most 8 characters, under 50 px at 11 px)
      margin: { l: 50, r: 84, t: 36, b: 40 },
      xaxis: { constrain: "domain", showgrid: false, zeroline: false,
               title: { text: axes ? "x (" + axes.unit + ")" : "column (px)" } },
      yaxis: { autorange: "reversed", scaleanchor: "x", constrain: "domain", showgrid: false, zeroline: false,
               title: { text: axes ? "y (" + axes.unit + ")" : "row (px)" } },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
    };
    if (axes) {
      const x0 = 0.05 * axes.width, y = 0.93 * axes.height;
      layout.shapes = [{ type: "rect", xref: "x", yref: "y", x0: x0, x1: x0 + axes.bar,
                         y0: y, y1: y + 0.015 * axes.height, fillcolor: "#ffffff", line: { color: "#000000", width: 1 } }];
      layout.annotations = [{ xref: "x", yref: "y", x: x0 + axes.bar / 2, y: y, yanchor: "bottom", showarrow: false,
                              text: axes.barText, font: { size: 11, color: "#000000" },
                              bgcolor: "rgba(255,255,255,0.75)", borderpad: 1 }];
    }
    if (extraShapes && extraShapes.length) layout.shapes = (layout.shapes || []).concat(extraShapes);
    return layout;
  }

  /* The title ``text`` of the plot ``div`` as an element over it (class panel-title, where Plotly puts a title:
   * centred in the top margin), so a title that changes every frame (a probe mode's share of the power) costs a
   * text change, not a Plotly.relayout (9-11 ms each). The text is set only when it changed. */
  function panelTitle(div, text) {
    let t = div.ptychopyTitle;
    if (!t) {
      t = div.ptychopyTitle = document.createElement("div");
      t.className = "panel-title";
    }
    if (t.parentNode !== div) div.appendChild(t);
    if (t.textContent !== text) t.textContent = text;
  }

  /* Plotly's ``responsive`` follows the window's size only; a plot whose grid cell changes (panels added to the
   * grid after it was drawn, so the columns change) would keep its old width and reach into its neighbour. This
   * resizes ``div``'s plot whenever its box changes size. Once per plot. */
  const sizeWatch = "ResizeObserver" in window ? new ResizeObserver(function (entries) {
    entries.forEach(function (e) {
      const div = e.target, L = div._fullLayout;
      if (!L || !div.data) return;
      const r = e.contentRect;
      if (Math.abs(r.width - L.width) > 0.5 || Math.abs(r.height - L.height) > 0.5) Plotly.Plots.resize(div);
    });
  }) : null;
  function followSize(div) {
    if (!sizeWatch || div.ptychopySized) return;
    div.ptychopySized = true;
    sizeWatch.observe(div);
  }

  // A transparent PNG (data URL) of rows x cols: the image trace that gives a painted panel its extent and hover.
  const transparent = {};
  function transparentImage(rows, cols) {
    const key = rows + "," + cols;
    if (!transparent[key]) {
      const c = document.createElement("canvas");
      c.width = cols;
      c.height = rows;
      transparent[key] = c.toDataURL("image/png");
    }
    return transparent[key];
  }

  /* ``paint()`` after every drawing of the Plotly plot ``div``, every relayout (zoom, pan, also while dragging)
   * and resize: what keeps the canvas under it (paintUnder) in step with its axes. Once per plot. */
  function followPlot(div, paint) {
    if (div.ptychopyFollowed || !div.on) return;
    div.ptychopyFollowed = true;
    ["plotly_afterplot", "plotly_relayout", "plotly_relayouting"].forEach(function (ev) { div.on(ev, paint); });
  }

  // The modebar's camera saves a painted panel as a PNG with its pixels: Plotly's picture of the plot (axes,
  // labels, shapes; transparent where the image is) over the canvas under it.
  function downloadPanel(div) {
    const L = div._fullLayout, under = div.ptychopyUnder;
    Plotly.toImage(div, { format: "png", width: L.width, height: L.height }).then(function (url) {
      const picture = new Image();
      picture.onload = function () {
        const out = document.createElement("canvas");
        out.width = L.width;
        out.height = L.height;
        const ctx = out.getContext("2d");
        ctx.fillStyle = "#ffffff";
        ctx.fillRect(0, 0, out.width, out.height);
        if (under) ctx.drawImage(under, 0, 0, out.width, out.height);
        ctx.drawImage(picture, 0, 0);
        if (div.ptychopyTitle && div.ptychopyTitle.textContent) {  // a title drawn over the plot (panelTitle)
          ctx.fillStyle = "#444444";
          ctx.font = "14px 'Open Sans', verdana, arial, sans-serif";
          ctx.textAlign = "center";
          ctx.textBaseline = "alphabetic";
          ctx.fillText(div.ptychopyTitle.textContent, out.width / 2, 18);
        }
        const link = document.createElement("a");
        link.download = div.id.replace(/^plot-/, "") + ".png";
        link.href = out.toDataURL("image/png");
        link.click();
      };
      picture.src = url;
    });
  }

  // A painted panel's Plotly config: ``base`` with the camera replaced by downloadPanel's.
  function imagePlotConfig(base) {
    return Object.assign({}, base, {
      modeBarButtonsToRemove: ["toImage"],
      modeBarButtonsToAdd: [{ name: "download-png", title: "Download plot as a PNG", icon: Plotly.Icons.camera,
                              click: downloadPanel }],
    });
  }

  window.ptychopyDisplay = { heatmapScale: heatmapScale, controls: controls, maps: Object.keys(MAPS),
                             lengthUnit: lengthUnit, niceLength: niceLength, fmtLength: fmtLength,
                             lookupTable: lookupTable, colourInto: colourInto, stops: stops,
                             colourStrip: colourStrip, paintUnder: paintUnder, imageLayout: imageLayout,
                             transparentImage: transparentImage, followPlot: followPlot,
                             imagePlotConfig: imagePlotConfig, tickText: tickText, panelTitle: panelTitle,
                             followSize: followSize };
})();

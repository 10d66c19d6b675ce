/* Display controls of the live view's object panels: colormap, scale (linear, log, gamma) and the displayed
 * value range (the histogram range); and the length units and scale bars the live and comparison pages share.
 *
 * The frames' images stay as they arrive (uint8, 0..255 linear in vmin..vmax): nothing is recomputed per pixel.
 * The range becomes the heatmap's zmin/zmax, and log or gamma become the colorscale itself: 33 stops at evenly
 * spaced values of the range, each coloured by where that value falls on the log or gamma scale.
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
                       ticktext: ticks.map(function (z) { return Number(vmin + span * z / 255).toPrecision(3); }) };
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

  window.ptychopyDisplay = { heatmapScale: heatmapScale, controls: controls, maps: Object.keys(MAPS),
                             lengthUnit: lengthUnit, niceLength: niceLength, fmtLength: fmtLength };
})();

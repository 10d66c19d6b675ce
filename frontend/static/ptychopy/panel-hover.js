/* The value under the pointer on the live page's image panels (object amplitude and phase, each probe mode's
 * amplitude and phase, the measured and model diffraction patterns): where it is, in the axes' unit, and its value
 * in the panel's unit (amplitude, phase in rad, counts on the diffraction panels), read from the frame the page
 * already holds: the 8-bit preview mapped back through the frame's value range (vmin..vmax), so a value is known to
 * 1/255 of that range, and the box says so. No request to the server.
 *
 * Plotly finds the pixel (the panel's transparent image trace, hoverinfo "none": its events without its label);
 * this draws the box (class panel-hover) over the plot and keeps it current when a new frame comes while the pointer
 * stays. The box's data attributes (row, col, value) are for tests.
 */
(function () {
  "use strict";

  function num(x, digits) { return String(Number(Number(x).toPrecision(digits || 4))); }

  /* What the panel ``info`` ({img: {name, shape, vmin, vmax, data, binning}, pos: {x0, dx, y0, dy}, unit}) shows
   * at image pixel (r, c): {where, what, note, value} (texts; value a number, null without a range). */
  function describe(info, r, c) {
    const img = info.img, pos = info.pos, cols = img.shape[1];
    const x = pos.x0 + c * pos.dx, y = pos.y0 + r * pos.dy;
    const where = info.unit ? "x " + num(x) + " " + info.unit + ", y " + num(y) + " " + info.unit
      : "row " + r + ", col " + c;
    const out = { where: where, what: "", note: "", value: null };
    if (img.vmin === null || img.vmax === null || img.vmin === undefined || img.vmax === undefined) {
      out.what = "no value range in this frame";
      return out;
    }
    const byte = new Uint8Array(img.data)[r * cols + c];
    const span = img.vmax - img.vmin, v = img.vmin + span * byte / 255;
    if (img.name.indexOf("diffraction_") === 0) {  // log10(1 + counts) on the panel's range
      out.value = Math.pow(10, v) - 1;
      const binned = img.binning > 1 ? " (the sum of " + img.binning + " × " + img.binning + " detector pixels)" : "";
      out.what = num(out.value, 4) + " counts" + binned;
      out.note = "preview value, to 1/255 of the log10 range (±" + num(100 * (Math.pow(10, span / 510) - 1), 2) + " %)";
    } else {
      out.value = v;
      const phase = /phase/.test(img.name);
      out.what = (phase ? "phase " : "amplitude ") + num(v) + (phase ? " rad" : "");
      out.note = "preview value, to 1/255 of the range (±" + num(span / 510, 2) + ")";
    }
    return out;
  }

  function box(div) {
    let b = div.ptychopyHoverBox;
    if (!b) {
      b = div.ptychopyHoverBox = document.createElement("div");
      b.className = "panel-hover";
      b.hidden = true;
    }
    if (b.parentNode !== div) div.appendChild(b);
    return b;
  }

  // Fill the box for pixel (r, c) of what ``read()`` gives now; placed right of and below the pointer (x, y: in
  // the plot's CSS pixels), or left of / above it near the plot's right or bottom edge.
  function show(div, read, at) {
    const info = read();
    if (!info || !info.img) return;
    const rows = info.img.shape[0], cols = info.img.shape[1];
    const r = Math.round((at.y - info.pos.y0) / info.pos.dy), c = Math.round((at.x - info.pos.x0) / info.pos.dx);
    const b = box(div);
    if (r < 0 || c < 0 || r >= rows || c >= cols) { b.hidden = true; return; }
    const d = describe(info, r, c);
    b.replaceChildren();
    [d.where, d.what].forEach(function (t) {
      const line = document.createElement("div");
      line.textContent = t;
      b.appendChild(line);
    });
    if (d.note) {
      const note = document.createElement("div");
      note.className = "note";
      note.textContent = d.note;
      b.appendChild(note);
    }
    b.dataset.row = r;
    b.dataset.col = c;
    b.dataset.value = d.value === null ? "" : String(d.value);
    b.hidden = false;
    const W = div.clientWidth, H = div.clientHeight;
    const left = at.px + 14 + b.offsetWidth > W ? Math.max(0, at.px - 14 - b.offsetWidth) : at.px + 14;
    const top = at.py + 14 + b.offsetHeight > H ? Math.max(0, at.py - 14 - b.offsetHeight) : at.py + 14;
    b.style.left = left + "px";
    b.style.top = top + "px";
  }

  /* Show the value under the pointer on the Plotly plot ``div`` (an image panel), from ``read()``: the panel's
   * current {img, pos, unit} (as describe takes it). Once per plot. */
  function attach(div, read) {
    if (div.ptychopyHoverAttached || !div.on) return;
    div.ptychopyHoverAttached = true;
    div.on("plotly_hover", function (ev) {
      const p = ev.points && ev.points[0], e = ev.event;
      if (!p || !e) return;
      const rect = div.getBoundingClientRect();
      div.ptychopyHoverAt = { x: p.x, y: p.y, px: e.clientX - rect.left, py: e.clientY - rect.top };
      show(div, read, div.ptychopyHoverAt);
    });
    div.on("plotly_unhover", function () {
      div.ptychopyHoverAt = null;
      if (div.ptychopyHoverBox) div.ptychopyHoverBox.hidden = true;
    });
  }

  // A new frame while the pointer rests on ``div``: the box shows the new value there.
  function refresh(div, read) {
    if (div.ptychopyHoverAt && div.ptychopyHoverBox && !div.ptychopyHoverBox.hidden) show(div, read, div.ptychopyHoverAt);
  }

  window.ptychopyHover = { attach: attach, refresh: refresh, describe: describe };
})();

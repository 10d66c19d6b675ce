// Dashboard: fetch the page every 2 s and swap each live section (an element with an id and data-live) in
// place, so the page stays put (scroll, focus, messages) while bridges, workers and jobs update. Without
// JavaScript the page reloads itself every 5 s instead (a <noscript> refresh).
(function () {
  "use strict";
  const PERIOD_MS = 2000;
  let busy = false;
  async function update() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok || !resp.headers.get("content-type").includes("text/html")) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      for (const fresh of doc.querySelectorAll("[data-live][id]")) {
        const old = document.getElementById(fresh.id);
        if (old && old.outerHTML !== fresh.outerHTML && !old.contains(document.activeElement)) {
          old.replaceWith(document.importNode(fresh, true));
        }
      }
      document.body.dataset.updatedAt = String(Date.now());
    } catch (err) {
      // the server restarting: try again at the next tick
    } finally {
      busy = false;
    }
  }
  setInterval(update, PERIOD_MS);
})();

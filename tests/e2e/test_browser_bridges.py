"""The night-shift dashboard in a real browser (Debian's Chromium at 1400 x 1000 through Playwright), with real
bridges (``python -m epics_bridge``, each its own process, publishing to the production stack's PostgreSQL) against
a real caproto IOC (``ptychopy simioc``) on private loopback ports:

- a misspelled trigger PV: the bridge is red within 5 s, names the PV (log WARNING and dashboard), nothing green;
- a misspelled metadata PV: a scan that completes is held, with the PV and the reason on the dashboard, no job;
- an unreachable IOC (nothing on its port): red, "none of 12 PVs connected", the 12 missing PVs listed and wrapped
  inside the card at 1400 px (checked by element geometry: no horizontal scroll, the errors column on screen);
- the unreachable bridge stopped cleanly shows "stopped"; staff retire it with the page's (CSRF-protected) button.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_browser import log_in
from tests.support.processes import TEST_OUTPUT
from tests.support.stack import ProductionStack, User

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "epics_bridge"))
from bridge_harness import BridgeProc, CaLoopback, SimIoc, bridge_config, wait_for  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.epics, pytest.mark.slow,
              pytest.mark.timeout(240)]

VIEWPORT_PX = 1400


class Rig:
    """One IOC on a private port pair, bridges on it (or on a port with nothing), all stopped at the end."""

    def __init__(self, stack: ProductionStack, tmp_path: Path):
        self.stack, self.tmp = stack, tmp_path
        self.ca = CaLoopback(tmp_path / "ca")
        self.dead_ca = CaLoopback(tmp_path / "dead-ca")  # a port pair nothing listens on
        self.sim = SimIoc(self.ca, stack.data_root / "sim", tmp_path / "simioc.log")
        self.bridges: list[BridgeProc] = []
        # the stack's settings (database, Redis) without PATH/PYTHONPATH or CA settings: those are the IOC's
        self.env = {k: v for k, v in stack.env.items()
                    if k not in ("PATH", "PYTHONPATH") and not k.startswith("EPICS_")}

    def bridge(self, beamline: str, ca: CaLoopback, *, replace: dict[str, str] | None = None) -> BridgeProc:
        work = self.tmp / beamline
        work.mkdir()
        cfg = bridge_config(work, work / "unused.jsonl", django=True)
        text = cfg.read_text().replace('beamline = "TEST"', f'beamline = "{beamline}"')
        for old, new in (replace or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        cfg.write_text(text)
        proc = BridgeProc(ca, cfg, work / "bridge.log", env=self.env)
        self.bridges.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.bridges:
            proc.stop(timeout_s=10)
        self.sim.stop(timeout_s=5)
        self.ca.end_repeaters()
        self.dead_ca.end_repeaters()

    def logs(self) -> str:
        return "\n".join(f"--- {p.config.parent.name}\n{p.log()[-2500:]}" for p in self.bridges)


@pytest.fixture
def rig(prod_stack: ProductionStack, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(prod_stack, tmp_path)
    try:
        yield r
    finally:
        r.stop()


def bridge_block(pg: Any, beamline: str, health: str, timeout_s: float = 20.0) -> Any:  # type: ignore[no-untyped-def]
    """The dashboard's block for ``beamline`` once it shows ``health`` (the page updates itself)."""
    sel = f'article.bridge[data-beamline="{beamline}"][data-health="{health}"]'
    pg.wait_for_selector(sel, timeout=timeout_s * 1000)
    return pg.locator(sel)


def test_dead_pvs_are_red_held_scans_show_why_and_the_pv_list_wraps_at_1400_px(  # type: ignore[no-untyped-def]
        page, rig: Rig, carol: User) -> None:
    pg = page
    rig.sim.first_start()
    suffix = str(int(time.time() * 1000) % 10**8)  # the stack's database outlives this test: fresh beamlines
    trig, meta, dead = f"TRIG-{suffix}", f"META-{suffix}", f"DEAD-{suffix}"
    trigger_bridge = rig.bridge(trig, rig.ca, replace={'busy_pv = "$(P)scan2.BUSY"': 'busy_pv = "$(P)scan2.BUSYY"'})
    meta_bridge = rig.bridge(meta, rig.ca, replace={'energy_kev = "$(P)energy"': 'energy_kev = "$(P)energyy"'})
    dead_bridge = rig.bridge(dead, rig.dead_ca)
    started = {}
    for proc in rig.bridges:
        proc.start(wait_connected=False)  # returns once the bridge wrote its first state
        started[proc.config.parent.name] = time.monotonic()

    def warning(proc: BridgeProc, needle: str) -> str:
        """The bridge's log line with ``needle``, within 5 s of its start."""
        left_s = 5.0 - (time.monotonic() - started[proc.config.parent.name])
        text = wait_for(lambda: needle in proc.log() and proc.log(), max(left_s, 0.05),
                        f"{needle!r} in the log within 5 s")
        (line,) = [ln for ln in text.splitlines() if needle in ln]
        assert " WARNING " in line
        return line

    try:
        # the log says it within 5 s, naming the PVs
        line = warning(trigger_bridge, "PVs not connected after 3 s")
        assert "trigger ptysim:scan2.BUSYY" in line and "no scan end can be seen" in line
        line = warning(meta_bridge, "PVs not connected after 3 s")
        assert "metadata ptysim:energyy" in line and "no scan end" not in line
        line = warning(dead_bridge, "none of 12 PVs connected after 3 s (IOC unreachable?")
        assert "trigger ptysim:scan2.BUSY, ptysim:scan2.SMSG" in line and "ptysim:energy" in line

        log_in(pg, carol)
        pg.goto("/dashboard/")
        block = bridge_block(pg, trig, "red")
        assert block.locator(".bridge-health").inner_text().strip() == "PV down"
        assert "trigger PV not connected: ptysim:scan2.BUSYY" in block.locator(".bridge-why").inner_text()
        assert block.locator("ul.pv-list li.role-trigger code").all_inner_texts() == ["ptysim:scan2.BUSYY"]
        assert block.locator(".status-done").count() == 0, "something green while a trigger PV is down"
        assert "not connected after 3 s" in block.locator("ul.errors").inner_text()

        # a scan completes: the bridge with the misspelled metadata PV holds it, with the PV and why
        bridge_block(pg, meta, "degraded")
        number = rig.sim.play()
        held_row = pg.locator(f'article.bridge[data-beamline="{meta}"] tr.scan-held')
        held_row.wait_for(timeout=20000)
        row_text = held_row.inner_text()
        assert held_row.locator("td").nth(1).inner_text().strip() == str(number)
        assert held_row.locator("td").nth(2).inner_text().strip() == "held"
        assert "ptysim:energyy was disconnected at the end of the scan" in row_text, row_text
        block = pg.locator(f'article.bridge[data-beamline="{meta}"]')
        assert block.locator(".status-done").count() == 0, "a bridge with a PV down shows green"
        assert "held 1" in " ".join(block.locator(".scan-counts").inner_text().split())
        jobs = rig.stack.manage("shell", "-c", "from webapp.jobs.models import Job; "
                                f"print(Job.objects.filter(dedup_key__startswith='{meta}:').count())")
        assert jobs.strip().splitlines()[-1] == "0", "a held scan was queued"

        # the unreachable IOC: red, every PV listed, wrapped inside the card, nothing pushed off the screen
        block = bridge_block(pg, dead, "red")
        assert "none of 12 PVs connected" in block.locator(".bridge-why").inner_text()
        assert block.locator(".pv-count").inner_text().strip() == "0 / 12"
        # one synchronous read of the live document: the page swaps its live sections every 2 s, and an element
        # resolved before a swap is detached (every rectangle zero) by the time a locator's evaluate reads it
        geometry = pg.evaluate("""sel => {
            const el = document.querySelector(sel);
            const card = el.closest('section.card').getBoundingClientRect();
            const items = [...el.querySelectorAll('ul.pv-list li')].map(li => li.getBoundingClientRect());
            const side = el.querySelector('.bridge-side').getBoundingClientRect();
            return {n: items.length, cardLeft: card.left, cardRight: card.right,
                    left: Math.min(...items.map(r => r.left)), right: Math.max(...items.map(r => r.right)),
                    rows: new Set(items.map(r => Math.round(r.top))).size, sideRight: side.right,
                    sideWidth: side.width, scrollWidth: document.documentElement.scrollWidth,
                    viewport: window.innerWidth};
        }""", f'article.bridge[data-beamline="{dead}"][data-health="red"]')
        assert geometry["n"] == 12 and geometry["viewport"] == VIEWPORT_PX
        assert geometry["rows"] >= 2, f"the PV list does not wrap: {geometry}"
        assert geometry["cardLeft"] <= geometry["left"] and geometry["right"] <= geometry["cardRight"], geometry
        assert geometry["scrollWidth"] <= VIEWPORT_PX, f"the page scrolls sideways: {geometry}"
        assert geometry["sideRight"] <= VIEWPORT_PX and geometry["sideWidth"] > 200, \
            f"the errors column is pushed off the screen: {geometry}"

        TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(TEST_OUTPUT / "browser-dashboard-bridges.png"), full_page=True)

        # stopped cleanly is not crashed; staff retire it with the page's button
        assert dead_bridge.stop() == 0
        block = bridge_block(pg, dead, "stopped")
        assert "stopped cleanly at" in block.locator(".bridge-why").inner_text()
        pg.on("dialog", lambda dialog: dialog.accept())
        block.locator("form.retire button[type=submit]").click()
        pg.wait_for_url("**/dashboard/")
        pg.locator("ul.messages").wait_for(timeout=10000)
        assert f"Bridge {dead} retired" in pg.locator("ul.messages").inner_text()
        assert pg.locator(f'article.bridge[data-beamline="{dead}"]').count() == 0
    except BaseException:
        print(rig.logs())
        raise

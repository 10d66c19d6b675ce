"""The dashboard's EPICS bridges, from states the bridge's own ``BridgeState`` builds: health (nothing green while a
trigger PV is down), missing PVs, recent scans with full reasons and times, gaps, errors, stopped versus crashed,
and retiring a bridge (staff, POST, CSRF)."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from epics_bridge.state import BridgeState
from webapp.jobs.models import BridgeStatus
from webapp.workers.bridge_status import record_bridge_status

pytestmark = pytest.mark.django_db

TRIGGER = "2iddf:scan2.BUSY"
PVS = (TRIGGER, "2iddf:scan2.CPT", "2iddf:saveData_fileName", "2idd:energy")
ROLES = {TRIGGER: "trigger", "2iddf:scan2.CPT": "trigger", "2iddf:saveData_fileName": "data",
         "2idd:energy": "metadata"}


def bridge_state(connected: tuple[str, ...] = PVS, started_s_ago: float = 60.0, beamline: str = "2-ID-D",
                 **updates: Any) -> BridgeState:
    state = BridgeState(beamline, PVS, roles=ROLES, heartbeat_s=1.0)
    state._data["started_at"] = time.time() - started_s_ago
    for pv in connected:
        state.pv_connection(pv, True)
    return state


def publish(state: BridgeState) -> BridgeStatus:
    snap = state.snapshot()
    return record_bridge_status(snap["beamline"], snap)


def article(html: str, beamline: str = "2-ID-D") -> str:
    """The dashboard's block for one bridge."""
    m = re.search(rf'<article class="bridge[^"]*"[^>]*data-beamline="{re.escape(beamline)}".*?</article>', html, re.S)
    assert m, f"no bridge block for {beamline}"
    return m.group(0)


def dashboard(client: Client) -> tuple[str, dict[str, Any]]:
    html = client.get("/dashboard/").content.decode()
    data = client.get("/dashboard/?format=json").json()
    return html, {b["beamline"]: b for b in data["bridges"]}


def test_a_trigger_pv_down_or_no_pv_at_all_is_red_never_green(client, user) -> None:
    client.force_login(user)
    cases = [
        ("all", PVS, "ok", "status-done"),
        ("metadata down", PVS[:3], "degraded", "status-cancelled"),
        ("trigger down", PVS[1:], "red", "status-failed"),
        ("IOC unreachable", (), "red", "status-failed"),
    ]
    for what, connected, level, badge in cases:
        publish(bridge_state(connected))
        html, bridges = dashboard(client)
        block = article(html)
        assert bridges["2-ID-D"]["health"] == level, what
        assert f'data-health="{level}"' in block and f"status {badge} bridge-health" in block, what
        if level != "ok":
            assert "status-done" not in block, f"{what}: something green while a PV is down"
    # the last case: every PV listed as missing, the trigger PVs first, each "never connected"
    missing = [m["pv"] for m in bridges["2-ID-D"]["missing_pvs"]]
    assert missing[:2] == sorted([TRIGGER, "2iddf:scan2.CPT"]) and set(missing) == set(PVS)
    assert "none of 4 PVs connected (IOC unreachable?)" in block
    assert block.count("never connected") == 4
    # a trigger PV that went down after connecting says since when
    state = bridge_state()
    state.pv_connection(TRIGGER, False)
    publish(state)
    block = article(client.get("/dashboard/").content.decode())
    assert f"trigger PV not connected: {TRIGGER}" in block and "down since" in block


def test_a_bridge_just_started_is_connecting_then_red(client, user) -> None:
    client.force_login(user)
    publish(bridge_state(connected=(), started_s_ago=0.5))
    assert dashboard(client)[1]["2-ID-D"]["health"] == "connecting"
    publish(bridge_state(connected=(), started_s_ago=3.5))
    assert dashboard(client)[1]["2-ID-D"]["health"] == "red"


def test_recent_scans_show_counts_times_gaps_and_whole_reasons(client, user) -> None:
    client.force_login(user)
    state = bridge_state()
    long_reason = ("data can never be complete: file /data/2idd/2026-3/mm/scan0153/scan0153_data_000001.h5, "
                   "dataset /entry/data/data: no such dataset (the file has /entry/instrument/detector/data, "
                   "/entry/instrument/detector/detectorSpecific/countrate_correction_applied)")
    assert len(long_reason) > 200
    state.scan_status("k152", "152", "queued", "job 7", job_id="7", ended_at=time.time() - 30)
    state.scan_status("k153", "153", "failed", long_reason)
    state.scan_status("e154", "154", "not_queued", "partial (scan2.CPT=3 < scan2.NPTS=51)")
    state.scan_status("k155", "155", "waiting", "file /data/scan155_data_000004.h5: holds 2 of 51 frames")
    state.scan_status("k156", "156", "held", "2idd:energy was disconnected at the end of the scan")
    state.gap(157, 159, "scan number gap: scan 160 follows scan 156; scan(s) 157-159 were not seen by the bridge")
    state.error("scan 156 held, not queued: 2idd:energy was disconnected at the end of the scan")
    publish(state)
    html, bridges = dashboard(client)
    block = article(html)
    assert long_reason in block, "a failed scan's reason is cut"
    rows = re.findall(r'<tr class="scan-(\w+)">(.*?)</tr>', block, re.S)
    assert [status for status, _ in rows] == ["held", "waiting", "not_queued", "failed", "queued"]
    queued = dict(rows)["queued"]
    assert 'href="/jobs/7/"' in queued and "partial" not in queued
    assert re.search(r"\(ended \d\d:\d\d:\d\d\)", queued)
    assert all(re.search(r">\d\d:\d\d:\d\d</td>", row) for _, row in rows), "a scan without its time"
    counts = dict(re.findall(r'<span class="count">([^<]+?) <b class="num">(\d+)</b>', block))
    assert counts == {"queued": "1", "not queued": "1", "failed": "1", "waiting for data": "1", "held": "1",
                      "gaps": "1"}
    assert "scan(s) 157-159 were not seen by the bridge" in block
    errors = block.split('<ul class="timed errors">')[1].split("</ul>")[0]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</span> scan 156 held", errors), errors
    assert bridges["2-ID-D"]["scan_counts"]["held"] == 1 and bridges["2-ID-D"]["errors"][0]["at"]


def test_a_clean_stop_is_shown_apart_from_a_silent_crash(client, user, settings) -> None:
    client.force_login(user)
    stopped = bridge_state(beamline="2-ID-E")
    stopped.heartbeat(running=False)
    publish(stopped)
    publish(bridge_state(beamline="2-ID-D"))
    BridgeStatus.objects.filter(beamline="2-ID-D").update(
        last_seen=timezone.now() - timedelta(seconds=settings.PTYCHOPY_HEARTBEAT_STALE_S + 1))
    html, bridges = dashboard(client)
    assert bridges["2-ID-E"]["health"] == "stopped" and "stopped cleanly at" in article(html, "2-ID-E")
    assert bridges["2-ID-D"]["health"] == "crashed" and "crashed / silent" in article(html, "2-ID-D")
    assert "no clean stop" in article(html, "2-ID-D")
    assert not bridges["2-ID-D"]["alive"] and not bridges["2-ID-E"]["alive"]


def test_staff_retire_a_gone_bridge_with_a_csrf_protected_post(user, staff_user, settings) -> None:
    stopped = bridge_state(beamline="OLD")
    stopped.heartbeat(running=False)
    old = publish(stopped)
    live = publish(bridge_state(beamline="LIVE"))
    url = f"/dashboard/bridges/{old.pk}/retire/"

    viewer = Client(enforce_csrf_checks=True)
    viewer.force_login(user)
    assert "Retire</button>" not in article(viewer.get("/dashboard/").content.decode(), "OLD")
    token = viewer.get("/dashboard/").context["csrf_token"]
    assert viewer.post(url, {"csrfmiddlewaretoken": str(token)}).status_code == 403
    assert viewer.get(url).status_code == 405

    staff = Client(enforce_csrf_checks=True)
    staff.force_login(staff_user)
    page = staff.get("/dashboard/").content.decode()
    assert f'action="{url}"' in article(page, "OLD")
    assert "/retire/" not in article(page, "LIVE"), "a running bridge offers a retire button"
    assert staff.post(url).status_code == 403, "no CSRF token, still retired"
    assert BridgeStatus.objects.filter(pk=old.pk).exists()
    token = str(staff.get("/dashboard/").context["csrf_token"])
    live_url = f"/dashboard/bridges/{live.pk}/retire/"
    response = staff.post(live_url, {"csrfmiddlewaretoken": token}, follow=True)
    assert BridgeStatus.objects.filter(pk=live.pk).exists() and "Not retired" in response.content.decode()
    response = staff.post(url, {"csrfmiddlewaretoken": token}, follow=True)
    assert response.redirect_chain[-1][0] == "/dashboard/"
    assert not BridgeStatus.objects.filter(pk=old.pk).exists()
    assert "Bridge OLD retired" in response.content.decode()
    assert 'data-beamline="OLD"' not in response.content.decode()

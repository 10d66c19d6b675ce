"""Exactly once under stress, against the simulated IOC on a private loopback port: back-to-back scans 20 ms
apart, aborted scans among them, and the bridge SIGKILLed at every offset after completion edges."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from bridge_harness import records, wait_for

from epics_bridge.caclient import ca_get_with_timestamp

pytestmark = [pytest.mark.epics, pytest.mark.slow]

SCANS = 100
ABORT_EVERY = 10  # every 10th scan of the burst is aborted halfway


def journal_edges(journal: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(journal) as db:
        return list(db.execute("SELECT status, outcome FROM edges ORDER BY id"))


@pytest.mark.parametrize("kind", ["sscan", "areadetector", "filename", "eiger"])
def test_back_to_back_scans_20_ms_apart_are_each_queued_exactly_once(sim, make_bridge, recorder: Path,
                                                                     kind: str) -> None:
    bridge = make_bridge(kind=kind)
    before = int(sim.get("saveData_scanNumber")) - 1  # saveData holds the next scan's number
    sim.put("sim:Gap", 0.02)
    sim.put("sim:AbortEvery", ABORT_EVERY)
    t0 = time.monotonic()
    sim.put("sim:Burst", SCANS)
    wait_for(lambda: int(sim.get("sim:ScansDone")) >= SCANS, 120, f"{SCANS} scans to be played")
    played_s = time.monotonic() - t0
    numbers = range(before + 1, before + SCANS + 1)
    complete = [n for k, n in enumerate(numbers, 1) if k % ABORT_EVERY]
    wait_for(lambda: len(records(recorder)) >= len(complete), 120, "every complete scan's submission")
    # the file-name trigger never hears of an aborted scan: simioc publishes the name of finished files only
    aborted_seen = 0 if kind == "filename" else SCANS - len(complete)
    wait_for(lambda: bridge.state()["counts"]["ignored"] >= aborted_seen, 30, "every abort classified")
    quiet = bridge.state()["heartbeat_at"]
    wait_for(lambda: bridge.state()["heartbeat_at"] > quiet + 1.0, 10, "a second of heartbeats")
    queued = [int(r["scan"]["scan_number"]) for r in records(recorder)]
    print(f"{kind}: {SCANS} scans played in {played_s:.1f} s; {len(queued)} queued")
    assert sorted(queued) == complete, "every complete scan exactly once, no aborted one"
    assert all(r["files_complete"] for r in records(recorder))
    state = bridge.state()
    # ...so each aborted scan followed by a complete one shows there as a gap in the scan numbers
    gaps = 0 if kind != "filename" else sum(1 for n in numbers if n not in complete and n < complete[-1])
    assert state["counts"]["ignored"] == aborted_seen and state["counts"]["gaps"] == gaps
    assert state["scan_counts"]["queued"] >= min(len(complete), 40)  # the dashboard's window holds the newest
    edges = journal_edges(bridge.config.parent / "journal.sqlite3")
    assert len(edges) == len(complete) + aborted_seen and all(status == "done" for status, _ in edges)
    assert sum(outcome == "complete" for _, outcome in edges) == len(complete)


def test_bridge_killed_at_any_moment_after_the_edge_loses_no_scan(sim, make_bridge, recorder: Path) -> None:
    """SIGKILL at 0, 50, ..., 950 ms after BUSY 1 -> 0 (by the IOC's clock), restart: each scan queued once."""
    bridge = make_bridge()
    expected: list[int] = []
    missed: list[tuple[int, float]] = []
    for k in range(20):
        offset_s = 0.05 * k
        done = int(sim.get("sim:ScansDone"))
        sim.put("sim:Go", 1)
        wait_for(lambda done=done: int(sim.get("sim:ScansDone")) > done, 30, "the scan to finish")
        _, busy_fell = ca_get_with_timestamp(sim.prefix + "scan2.BUSY", sim.ca.client_env)
        delay = busy_fell + offset_s - time.time()
        if delay > 0:
            time.sleep(delay)
        bridge.kill()
        expected.append(int(sim.get("saveData_scanNumber")) - 1)  # saveData holds the next scan's number
        bridge = make_bridge()
        try:
            wait_for(lambda: len(records(recorder)) >= len(expected), 20, f"scan {expected[-1]} to be queued")
        except TimeoutError:
            missed.append((expected[-1], offset_s))
    quiet = bridge.state()["heartbeat_at"]
    wait_for(lambda: bridge.state()["heartbeat_at"] > quiet + 1.0, 10, "a second of heartbeats")
    # A kill after the submission left the bridge but before the journal marked it submitted sends it again at the
    # restart, under the same dedup key (Idempotency-Key over HTTP): the web side answers with the job the first
    # send made (tests/epics_bridge/test_bridge_http.py, test_webapp_idempotency). So one job per scan means one
    # key per scan, each resend the same request.
    sent = records(recorder)
    by_key: dict[str, list[dict]] = {}
    for r in sent:
        by_key.setdefault(r["dedup_key"], []).append(r)
    queued = [int(rs[0]["scan"]["scan_number"]) for rs in by_key.values()]
    resent = {k: len(rs) for k, rs in by_key.items() if len(rs) > 1}
    print(f"{len(sent)} submissions, {len(by_key)} keys; resent after a kill: {resent}")
    assert missed == [] and queued == expected, f"missed (scan, kill offset s): {missed}; queued {queued}"
    assert all(r["params"] == rs[0]["params"] and r["label"] == rs[0]["label"] for rs in by_key.values() for r in rs)
    # one kill per scan, so at most one resend of each scan's submission
    assert all(n == 2 for n in resent.values()), f"a scan sent more than twice: {resent}"

"""trigger.py without EPICS: replay suppression, edges, debounce, classification."""

from __future__ import annotations

import pytest

from epics_bridge.config import TriggerConfig
from epics_bridge.trigger import (
    AreaDetectorTrigger,
    ConnectionEvent,
    FileNameTrigger,
    Outcome,
    PvTracker,
    SscanTrigger,
    ValueEvent,
    as_float,
    as_int,
)

SSCAN = TriggerConfig(kind="sscan", busy_pv="s:BUSY", message_pv="s:SMSG", current_point_pv="s:CPT",
                      points_pv="s:NPTS")
AD = TriggerConfig(kind="areadetector", capture_pv="d:Capture_RBV", num_captured_pv="d:NumCaptured_RBV",
                   num_capture_pv="d:NumCapture_RBV", write_status_pv="d:WriteStatus",
                   write_message_pv="d:WriteMessage")
FN = TriggerConfig(kind="filename", file_name_pv="f:Name")


class Feed:
    """A tracker plus a trigger, fed like the worker feeds them."""

    def __init__(self, trigger):
        self.tracker = PvTracker()
        self.trigger = trigger

    def connect(self, pv: str, t: float = 0.0, up: bool = True) -> None:
        self.tracker.update(ConnectionEvent(pv, up, t))

    def value(self, pv: str, value, t: float, text: str | None = None) -> None:
        ev = ValueEvent(pv, value, str(value) if text is None else text, t)
        previous, live = self.tracker.update(ev)
        self.trigger.handle(ev, previous, live, self.tracker.latest)

    def poll(self, t: float):
        return self.trigger.poll(t, self.tracker.latest)


def sscan_feed(debounce_s: float = 0.5, max_s: float = 2.0) -> Feed:
    f = Feed(SscanTrigger(SSCAN, debounce_s, max_s))
    for pv, v in (("s:BUSY", 0), ("s:SMSG", ""), ("s:CPT", 0), ("s:NPTS", 10)):
        f.connect(pv)
        f.value(pv, v, 0.0)  # the values every connection starts with
    return f


def run_scan(f: Feed, t0: float, msg: str = "SCAN Complete", cpt: int = 10) -> None:
    f.value("s:BUSY", 1, t0)
    f.value("s:SMSG", "Scanning", t0)
    f.value("s:CPT", cpt, t0 + 0.5)
    f.value("s:SMSG", msg, t0 + 0.9)
    f.value("s:BUSY", 0, t0 + 1.0)


def test_tracker_marks_the_first_value_after_each_connect_as_a_replay() -> None:
    t = PvTracker()
    t.update(ConnectionEvent("a", True, 0))
    assert t.update(ValueEvent("a", 1, "1", 0.1)) == (None, False)
    prev, live = t.update(ValueEvent("a", 0, "0", 0.2))
    assert live and prev is not None and prev.value == 1
    t.update(ConnectionEvent("a", False, 0.3))
    t.update(ConnectionEvent("a", True, 0.4))
    assert t.update(ValueEvent("a", 0, "0", 0.5))[1] is False
    assert t.connected["a"] is True


def test_a_value_before_any_connection_event_is_not_live() -> None:
    assert PvTracker().update(ValueEvent("a", 1, "1", 0.0))[1] is False


def test_completed_scan_is_classified_after_the_debounce() -> None:
    f = sscan_feed()
    run_scan(f, 1.0)
    assert f.poll(2.4) == []  # 0.4 s after the edge: still debouncing
    (end,) = f.poll(2.5)
    assert end.outcome is Outcome.COMPLETE and end.ended_s == 2.0
    assert f.poll(10.0) == []  # once only


def test_abort_message_makes_an_aborted_scan() -> None:
    f = sscan_feed()
    run_scan(f, 1.0, msg="Scan aborted by operator", cpt=4)
    (end,) = f.poll(3.0)
    assert end.outcome is Outcome.ABORTED and "aborted" in end.reason


def test_abort_message_posted_just_after_the_edge_is_still_read() -> None:
    f = sscan_feed()
    f.value("s:BUSY", 1, 1.0)
    f.value("s:BUSY", 0, 2.0)
    f.value("s:SMSG", "Abandoning unsaved scan data", 2.3)  # pushes the deadline to 2.8
    assert f.poll(2.6) == []
    (end,) = f.poll(2.8)
    assert end.outcome is Outcome.ABORTED


def test_debounce_is_capped_by_max_debounce() -> None:
    f = sscan_feed(debounce_s=0.5, max_s=1.0)
    f.value("s:BUSY", 1, 1.0)
    f.value("s:BUSY", 0, 2.0)
    for k in range(1, 10):  # a chatty related PV
        f.value("s:CPT", 10 + k, 2.0 + 0.2 * k)
    assert len(f.poll(3.0)) == 1


def test_fewer_points_than_requested_is_partial() -> None:
    f = sscan_feed()
    run_scan(f, 1.0, cpt=7)
    (end,) = f.poll(5.0)
    assert end.outcome is Outcome.PARTIAL and "7 < " in end.reason


def test_replayed_values_after_a_reconnect_never_start_a_scan() -> None:
    f = sscan_feed()
    f.connect("s:BUSY", 1.5, up=False)
    f.connect("s:BUSY", 3.0)
    f.value("s:BUSY", 0, 3.1)  # idle before, idle after: a replay, nothing ended
    f.value("s:BUSY", 0, 4.0)  # the same value again: nothing
    f.connect("s:BUSY", 5.0, up=False)
    f.connect("s:BUSY", 5.5)
    f.value("s:BUSY", 1, 5.6)  # came back busy: a replay, so no end is armed either way
    assert f.poll(20.0) == [] and f.trigger.missed_edges == 0
    f.value("s:CPT", 10, 20.5)
    f.value("s:BUSY", 0, 21.0)  # ...but the live end of that scan counts
    assert [e.outcome for e in f.poll(30.0)] == [Outcome.COMPLETE]
    run_scan(f, 40.0)  # and live scans after the reconnects work
    assert [e.outcome for e in f.poll(50.0)] == [Outcome.COMPLETE]


def _scan_ends_while_disconnected(f: Feed, cpt_after: int, msg_after: str) -> None:
    f.value("s:BUSY", 1, 1.0)
    f.value("s:SMSG", "Scanning", 1.0)
    for pv in ("s:BUSY", "s:SMSG", "s:CPT"):
        f.connect(pv, 1.5, up=False)
    for pv in ("s:BUSY", "s:SMSG", "s:CPT"):
        f.connect(pv, 3.0)
    f.value("s:BUSY", 0, 3.1)  # the replays after the reconnect, BUSY first
    f.value("s:CPT", cpt_after, 3.2)
    f.value("s:SMSG", msg_after, 3.3)


def test_a_scan_that_ended_while_disconnected_is_classified_from_the_values_after_the_reconnect() -> None:
    f = sscan_feed()
    _scan_ends_while_disconnected(f, cpt_after=10, msg_after="SCAN Complete")
    assert f.poll(3.5) == []  # the debounce waits for the other replays
    (end,) = f.poll(5.0)
    assert end.outcome is Outcome.COMPLETE and end.after_disconnect and f.trigger.missed_edges == 1
    assert f.poll(20.0) == []


def test_an_ioc_restarted_mid_scan_comes_back_partial_and_is_not_complete() -> None:
    f = sscan_feed()
    _scan_ends_while_disconnected(f, cpt_after=0, msg_after="")  # a fresh IOC: no points, no message
    (end,) = f.poll(5.0)
    assert end.outcome is Outcome.PARTIAL and end.after_disconnect


def test_first_value_at_start_is_a_baseline_even_when_idle_or_busy() -> None:
    f = Feed(SscanTrigger(SSCAN, 0.1, 1.0))
    f.connect("s:BUSY")
    f.value("s:BUSY", 0, 0.0)
    assert f.poll(5.0) == []
    g = Feed(SscanTrigger(SSCAN, 0.1, 1.0))
    g.connect("s:BUSY")
    g.value("s:BUSY", 1, 0.0)  # the bridge started mid-scan: the end it sees live counts
    g.value("s:BUSY", 0, 1.0)
    assert [e.outcome for e in g.poll(2.0)] == [Outcome.COMPLETE]


def test_next_scan_starting_inside_the_debounce_ends_the_previous_one_at_once() -> None:
    f = sscan_feed(debounce_s=5.0, max_s=10.0)
    run_scan(f, 1.0)
    f.value("s:BUSY", 1, 2.2)
    (end,) = f.poll(2.2)
    assert end.outcome is Outcome.COMPLETE and end.ended_s == 2.0


def test_inner_toggles_of_other_pvs_do_not_trigger() -> None:
    f = sscan_feed()
    for k in range(5):
        f.value("s:CPT", k, 1.0 + k)
        f.value("s:SMSG", f"row {k}", 1.0 + k)
    assert f.poll(100.0) == []


def ad_feed() -> Feed:
    f = Feed(AreaDetectorTrigger(AD, 0.2, 1.0))
    for pv, v in (("d:Capture_RBV", 0), ("d:NumCaptured_RBV", 0), ("d:NumCapture_RBV", 12), ("d:WriteStatus", 0),
                  ("d:WriteMessage", "")):
        f.connect(pv)
        f.value(pv, v, 0.0)
    return f


@pytest.mark.parametrize(("captured", "status", "outcome"), [
    (12, 0, Outcome.COMPLETE), (7, 0, Outcome.PARTIAL), (12, 1, Outcome.FAILED)])
def test_areadetector_classification(captured: int, status: int, outcome: Outcome) -> None:
    f = ad_feed()
    f.value("d:Capture_RBV", 1, 1.0)
    f.value("d:NumCaptured_RBV", captured, 1.5)
    if status:
        f.value("d:WriteStatus", status, 1.6)
        f.value("d:WriteMessage", "disk full", 1.6)
    f.value("d:Capture_RBV", 0, 2.0)
    (end,) = f.poll(3.5)
    assert end.outcome is outcome
    if status:
        assert "disk full" in end.reason


def test_filename_trigger_queues_each_new_name_once() -> None:
    f = Feed(FileNameTrigger(FN, 0.2, 1.0))
    f.connect("f:Name")
    f.value("f:Name", "/d/scan1.h5", 0.0)  # replay at start
    f.value("f:Name", "/d/scan2.h5", 1.0)
    f.value("f:Name", "/d/scan2.h5", 1.1)  # same value again
    f.value("f:Name", "", 1.2)
    f.value("f:Name", "/d/scan3.h5", 1.3)
    ends = f.poll(5.0)
    assert [e.file for e in ends] == ["/d/scan2.h5", "/d/scan3.h5"]
    assert all(e.outcome is Outcome.COMPLETE for e in ends)
    f.connect("f:Name", 6.0, up=False)
    f.connect("f:Name", 7.0)
    f.value("f:Name", "/d/scan3.h5", 7.1)  # the same name replayed: nothing new
    f.connect("f:Name", 8.0, up=False)
    f.connect("f:Name", 9.0)
    f.value("f:Name", "/d/scan4.h5", 9.1)  # a file completed while disconnected
    (end,) = f.poll(15.0)
    assert end.file == "/d/scan4.h5" and end.after_disconnect and end.outcome is Outcome.COMPLETE


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1), (0.0, 0), ("1", 1), ([1], 1), ("Done", None), (None, None), ([], None)])
def test_as_int(value, expected) -> None:
    assert as_int(value) == expected


def test_as_float_rejects_nan_and_text() -> None:
    assert as_float("8.8") == 8.8 and as_float(float("nan")) is None and as_float("x") is None


def test_the_next_scan_resetting_cpt_inside_the_debounce_leaves_the_ended_scan_complete() -> None:
    """20 ms between scans: the next scan resets CPT before its BUSY rises; the ended scan keeps its CPT."""
    f = sscan_feed()
    run_scan(f, 1.0)
    f.value("s:CPT", 0, 2.01)  # the next scan's reset
    f.value("s:SMSG", "Scanning", 2.015)
    (end,) = f.poll(2.02)  # a reset is the next scan: classified at once, from the captured values
    assert end.outcome is Outcome.COMPLETE
    f.value("s:BUSY", 1, 2.02)
    run_scan(f, 2.02, cpt=4)
    (second,) = f.poll(5.0)
    assert second.outcome is Outcome.PARTIAL


def test_an_abort_message_stays_captured_when_the_next_scan_rewrites_smsg() -> None:
    f = sscan_feed()
    run_scan(f, 1.0, msg="Scan aborted by operator", cpt=10)
    f.value("s:SMSG", "Scanning", 2.01)
    f.value("s:BUSY", 1, 2.02)
    (end,) = f.poll(2.03)
    assert end.outcome is Outcome.ABORTED


def test_a_final_count_posted_after_the_edge_is_captured() -> None:
    f = sscan_feed()
    run_scan(f, 1.0, cpt=9)
    f.value("s:CPT", 10, 2.1)  # the last point's count posts just after BUSY
    (end,) = f.poll(3.0)
    assert end.outcome is Outcome.COMPLETE


def test_areadetector_counter_reset_by_the_next_acquisition_is_not_read_as_partial() -> None:
    f = ad_feed()
    f.value("d:Capture_RBV", 1, 1.0)
    f.value("d:NumCaptured_RBV", 12, 1.5)
    f.value("d:Capture_RBV", 0, 2.0)
    f.value("d:NumCaptured_RBV", 0, 2.01)  # the next capture starts
    (end,) = f.poll(2.02)
    assert end.outcome is Outcome.COMPLETE


def test_every_new_or_changed_pending_end_reaches_the_capture_hook() -> None:
    seen = []
    trigger = SscanTrigger(SSCAN, 0.5, 2.0, next_scan_pvs=("n:Number",),
                           on_capture=lambda p: seen.append((p.frozen, dict(p.values))))
    f = Feed(trigger)
    for pv, v in (("s:BUSY", 0), ("s:SMSG", ""), ("s:CPT", 0), ("s:NPTS", 10), ("n:Number", 7)):
        f.connect(pv)
        f.value(pv, v, 0.0)
    run_scan(f, 1.0, cpt=9)
    f.value("s:CPT", 10, 2.1)
    f.value("n:Number", 8, 2.2)  # the next scan's number: the ended one's values are final
    f.value("s:CPT", 0, 2.3)
    assert [frozen for frozen, _ in seen] == [False, False, True]
    assert seen[0][1]["s:CPT"].value == 9 and seen[1][1]["s:CPT"].value == 10 and seen[2][1]["n:Number"].value == 7
    (end,) = f.poll(2.3)
    assert end.outcome is Outcome.COMPLETE and end.values["n:Number"].value == 7

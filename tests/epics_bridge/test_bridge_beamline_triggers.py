"""Real beamline conventions without a server: ADEiger's FileWriter, NDFileHDF5's FullFileName_RBV / FileNumber
and NumCapture=0, synApps saveData's scan number, bluesky's start/stop documents and their 0MQ wire format,
pvAccess values."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from epics_bridge.bluesky import BlueskyTrigger, DocumentDecodeError, decode_message
from epics_bridge.config import ConfigError, TriggerConfig, config_from_dict
from epics_bridge.params import describe_scan
from epics_bridge.pva import pva_value
from epics_bridge.trigger import (
    AreaDetectorTrigger,
    ConnectionEvent,
    EigerTrigger,
    Outcome,
    PvTracker,
    ScanEnd,
    ValueEvent,
)

EIGER = TriggerConfig(kind="eiger", acquire_pv="e:Acquire_RBV", images_counter_pv="e:NumImagesCounter_RBV",
                      num_images_pv="e:NumImages_RBV", num_triggers_pv="e:NumTriggers_RBV",
                      fw_enable_pv="e:FWEnable_RBV", fw_name_pattern_pv="e:FWNamePattern_RBV",
                      sequence_id_pv="e:SequenceId", file_path_pv="e:FilePath_RBV")
AD = TriggerConfig(kind="areadetector", capture_pv="d:Capture_RBV", num_captured_pv="d:NumCaptured_RBV",
                   num_capture_pv="d:NumCapture_RBV", write_status_pv="d:WriteStatus",
                   full_file_name_pv="d:FullFileName_RBV")
BLUESKY = TriggerConfig(kind="bluesky", zmq_address="127.0.0.1:5578")
STREAM = BLUESKY.document_source


class Feed:
    def __init__(self, trigger, initial: dict) -> None:
        self.tracker, self.trigger = PvTracker(), trigger
        for pv, v in initial.items():
            self.tracker.update(ConnectionEvent(pv, True, 0.0))
            self.value(pv, v, 0.0)

    def value(self, pv: str, value, t: float) -> None:
        ev = ValueEvent(pv, value, value if isinstance(value, str) else str(value), t)
        previous, live = self.tracker.update(ev)
        self.trigger.handle(ev, previous, live, self.tracker.latest)

    def poll(self, t: float):
        return self.trigger.poll(t, self.tracker.latest)


def eiger_feed(**over) -> Feed:
    initial = {"e:Acquire_RBV": 0, "e:NumImagesCounter_RBV": 0, "e:NumImages_RBV": 12, "e:NumTriggers_RBV": 1,
               "e:FWEnable_RBV": 1, "e:FWNamePattern_RBV": "scan$id", "e:SequenceId": 6,
               "e:FilePath_RBV": "/data/eiger/"}
    return Feed(EigerTrigger(EIGER, 0.2, 1.0), initial | over)


def test_eiger_acquisition_names_its_files_from_the_sequence_id_set_when_armed() -> None:
    f = eiger_feed()
    f.value("e:SequenceId", 7, 1.0)  # armed
    f.value("e:Acquire_RBV", 1, 1.0)
    f.value("e:NumImagesCounter_RBV", 12, 2.0)
    f.value("e:Acquire_RBV", 0, 2.1)
    f.value("e:SequenceId", 8, 2.15)  # the next series is armed inside the debounce: does not rename this one
    (end,) = f.poll(3.0)
    assert end.outcome is Outcome.COMPLETE and end.file == "/data/eiger/scan7"


@pytest.mark.parametrize(("counter", "fw_enable", "outcome", "words"), [
    (11, 1, Outcome.PARTIAL, "11 < "), (12, 0, Outcome.FAILED, "FileWriter is disabled"),
    (12, 1, Outcome.COMPLETE, "12 images")])
def test_eiger_classification(counter: int, fw_enable: int, outcome: Outcome, words: str) -> None:
    f = eiger_feed(**{"e:FWEnable_RBV": fw_enable})
    f.value("e:Acquire_RBV", 1, 1.0)
    f.value("e:NumImagesCounter_RBV", counter, 2.0)
    f.value("e:Acquire_RBV", 0, 2.1)
    (end,) = f.poll(5.0)
    assert end.outcome is outcome and words in end.reason


def ad_feed(num_capture: int) -> Feed:
    return Feed(AreaDetectorTrigger(AD, 0.2, 1.0), {"d:Capture_RBV": 0, "d:NumCaptured_RBV": 0,
                                                    "d:NumCapture_RBV": num_capture, "d:WriteStatus": 0,
                                                    "d:FullFileName_RBV": ""})


@pytest.mark.parametrize(("captured", "outcome"), [(37, Outcome.COMPLETE), (0, Outcome.PARTIAL)])
def test_unlimited_capture_counts_every_frame_and_names_the_file_opened_for_it(captured, outcome) -> None:
    f = ad_feed(num_capture=0)
    f.value("d:Capture_RBV", 1, 1.0)
    f.value("d:FullFileName_RBV", "/data/scan9_000003.h5", 1.0)
    f.value("d:NumCaptured_RBV", captured, 1.5)
    f.value("d:Capture_RBV", 0, 2.0)
    f.value("d:FullFileName_RBV", "/data/scan10_000004.h5", 2.05)  # the next capture opened its file
    (end,) = f.poll(5.0)
    assert end.outcome is outcome and "unlimited" in end.reason
    assert end.file == "/data/scan9_000003.h5"


def raw_config(**data) -> dict:
    return {"bridge": {"beamline": "BL"}, "trigger": {"kind": "sscan", "busy_pv": "B"},
            "data": {"path_pv": "P", "name_pv": "N", "scan_number_pv": "S", **data},
            "parameters": {"template": "-size=16 -fs=1"}}


def values(**pvs) -> dict[str, ValueEvent]:
    return {k: ValueEvent(k, v, str(v), 0.0) for k, v in pvs.items()}


def test_savedata_scan_number_read_at_the_end_names_the_next_scan_and_the_offset_fixes_it() -> None:
    cfg = config_from_dict(raw_config(scan_number_offset=-1, file_pattern="{path}/{mda}_{file_number:06d}.h5",
                                      fields={"mda": "F", "file_number": {"pv": "FN", "offset": -1}}))
    latest = values(P="/d", N="scan41", S=42, F="ptysim_0041.mda", FN=5)
    info = describe_scan(cfg, latest, ScanEnd(Outcome.COMPLETE, "", 0.0, values=latest))
    assert info.scan_number == "41" and info.file_pattern == "/d/ptysim_0041.mda_000004.h5"
    assert "F" in cfg.pvs and "FN" in cfg.pvs


def test_data_field_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[data\] fields.x: offset must be an integer"):
        config_from_dict(raw_config(fields={"x": {"pv": "X", "offset": "one"}}))


def bluesky_config(**trigger) -> dict:
    return {"bridge": {"beamline": "BL"},
            "trigger": {"kind": "bluesky", "zmq_address": "127.0.0.1:5578", **trigger},
            "data": {"path_pv": "start:data_dir", "name_pv": "start:file_name", "scan_number_pv": "start:scan_id"},
            "metadata": {"energy_kev": "start:energy_keV", "scan_dims": ["start:scan_dims.rows", "pva://bl:cols"]},
            "parameters": {"template": "-size=16 -fs=1"}}


def test_bluesky_config_monitors_the_stream_and_pva_but_not_start_document_keys() -> None:
    cfg = config_from_dict(bluesky_config())
    assert cfg.pvs == ("zmq://127.0.0.1:5578", "pva://bl:cols")
    with pytest.raises(ConfigError, match=r"\[trigger\] zmq_address: required"):
        config_from_dict(bluesky_config(zmq_address=""))
    with pytest.raises(ConfigError, match=r"\[trigger\] serializer: expected one of pickle, msgpack, json"):
        config_from_dict(bluesky_config(serializer="yaml"))


def run_docs(uid: str, scan_id: int, exit_status: str = "success", events: int = 12, num_points: int | None = 12):
    start = {"uid": uid, "time": 1.0, "scan_id": scan_id, "data_dir": "/d", "file_name": f"scan{scan_id}",
             "energy_keV": 8.8, "scan_dims": {"rows": 3, "cols": 4}}
    if num_points is not None:
        start["num_points"] = num_points
    stop = {"uid": uid + "-stop", "time": 2.0, "run_start": uid, "exit_status": exit_status,
            "reason": "" if exit_status == "success" else "RequestAbort", "num_events": {"primary": events}}
    return start, stop


def bluesky_feed() -> Feed:
    f = Feed(BlueskyTrigger(BLUESKY, 0.2, 1.0), {})
    f.tracker.update(ConnectionEvent(STREAM, True, 0.0))
    f.value(STREAM, None, 0.0)  # "subscribed"
    return f


@pytest.mark.parametrize(("exit_status", "events", "num_points", "outcome"), [
    ("success", 12, 12, Outcome.COMPLETE), ("success", 11, 12, Outcome.PARTIAL),
    ("abort", 5, 12, Outcome.ABORTED), ("fail", 12, 12, Outcome.FAILED), ("success", 3, None, Outcome.COMPLETE)])
def test_bluesky_stop_document_decides_at_once(exit_status, events, num_points, outcome) -> None:
    f = bluesky_feed()
    start, stop = run_docs("u1", 7, exit_status, events, num_points)
    f.value(STREAM, ("start", start), 1.0)
    f.value(STREAM, ("stop", stop), 2.0)
    (end,) = f.poll(2.0)  # no debounce
    assert end.outcome is outcome
    assert end.values["start:scan_id"].value == 7 and end.values["start:scan_dims.rows"].value == 3


def test_bluesky_runs_back_to_back_each_end_once_with_their_own_start() -> None:
    f = bluesky_feed()
    for k in range(100):
        start, stop = run_docs(f"u{k}", k)
        f.value(STREAM, ("start", start), k)
        f.value(STREAM, ("stop", stop), k + 0.01)
    ends = f.poll(200.0)
    assert [e.values["start:scan_id"].value for e in ends] == list(range(100))
    assert all(e.outcome is Outcome.COMPLETE for e in ends)


def test_a_stop_without_its_start_is_not_queued() -> None:
    f = bluesky_feed()
    f.value(STREAM, ("stop", run_docs("never-seen", 1)[1]), 1.0)
    (end,) = f.poll(1.0)
    assert end.outcome is Outcome.PARTIAL and "start document was not seen" in end.reason


def test_bluesky_run_builds_the_scan_from_its_start_document() -> None:
    cfg = config_from_dict(bluesky_config())
    f = bluesky_feed()
    f.value("pva://bl:cols", 4, 0.5)
    start, stop = run_docs("u1", 7)
    f.value(STREAM, ("start", start), 1.0)
    f.value(STREAM, ("stop", stop), 2.0)
    (end,) = f.poll(2.0)
    info = describe_scan(cfg, end.values, end)
    assert info.dedup_key == "BL:7:/d/scan7_data_#06d.h5"
    assert info.params.experiment.scan_dims == (3, 4)
    assert info.params.experiment.wavelength_m == pytest.approx(12.398419843320026e-10 / 8.8)


@pytest.mark.parametrize("serializer", ["pickle", "msgpack", "json"])
def test_decode_message_reads_bluesky_wire_format(serializer: str) -> None:
    import msgpack

    dump = {"pickle": pickle.dumps, "msgpack": msgpack.packb, "json": lambda d: json.dumps(d).encode()}[serializer]
    start = run_docs("u1", 3)[0]
    assert decode_message(b" ".join([b"", b"start", dump(start)]), "", serializer) == ("start", start)
    assert decode_message(b" ".join([b"", b"event", b"not decoded"]), "", serializer) is None
    assert decode_message(b" ".join([b"other", b"start", dump(start)]), "", serializer) is None


def test_pickled_documents_build_plain_data_only() -> None:
    start = run_docs("u1", 3)[0] | {"position": np.float64(1.5), "array": np.arange(3)}
    name, doc = decode_message(b" start " + pickle.dumps(start), "", "pickle")
    assert doc["position"] == 1.5 and list(doc["array"]) == [0, 1, 2]

    class Evil:
        def __reduce__(self):
            return os.system, ("true",)

    with pytest.raises(DocumentDecodeError, match="refusing to build posix.system"):
        decode_message(b" start " + pickle.dumps({"uid": "x", "payload": Evil()}), "", "pickle")
    with pytest.raises(DocumentDecodeError, match="serializer must match"):
        decode_message(b" stop {not json", "", "json")


def test_pva_values_become_value_and_text() -> None:
    from p4p.nt import NTEnum, NTScalar

    assert pva_value(NTScalar("d").wrap(8.8, timestamp=12.5)) == (8.8, "8.8", 12.5)
    assert pva_value(NTEnum().wrap({"index": 1, "choices": ["Done", "Capture"]}))[:2] == (1, "Capture")
    value, text, _ = pva_value(NTScalar("ab").wrap(np.frombuffer(b"/data/x\0\0", dtype=np.int8)))
    assert text == "/data/x" and len(value) == 9
    assert pva_value(NTScalar("s").wrap("scan5"))[:2] == ("scan5", "scan5")


def test_pva_values_delayed_by_less_than_the_hold_leave_in_the_iocs_order() -> None:
    import queue

    from epics_bridge.pva import TimeOrder

    out: queue.Queue = queue.Queue()
    order = TimeOrder(out, hold_s=0.05)
    order.value(ValueEvent("BUSY", 0, "0", received_s=10.000, timestamp=5.002))  # p4p delivered BUSY first
    order.value(ValueEvent("CPT", 4, "4", received_s=10.010, timestamp=5.001))
    order.flush(10.04)
    assert out.empty()  # still held
    order.flush(10.06)
    assert [out.get_nowait().pvname for _ in range(2)] == ["CPT", "BUSY"]
    order.value(ValueEvent("CPT", 0, "0", received_s=11.0, timestamp=6.0))
    order.connection(ConnectionEvent("CPT", False, 11.01))  # a disconnect releases what came before it
    assert [type(out.get_nowait()).__name__ for _ in range(2)] == ["ValueEvent", "ConnectionEvent"]


def test_a_bluesky_run_is_classified_again_from_its_values_alone() -> None:
    from epics_bridge.trigger import PendingEnd

    f = bluesky_feed()
    start, stop = run_docs("u1", 7, "success", events=11)
    f.value(STREAM, ("start", start), 1.0)
    f.value(STREAM, ("stop", stop), 2.0)
    (end,) = f.poll(2.0)
    assert end.values["stop:num_events.primary"].value == 11
    again = f.trigger.restore(PendingEnd(2.0, 2.0, 2.0, dict(end.values)))  # e.g. from the journal
    assert end.outcome is Outcome.PARTIAL and (again.outcome, again.reason) == (end.outcome, end.reason)


def test_a_scan_start_is_announced_live_only_for_capture_acquire_and_a_start_document() -> None:
    """The hook a streaming bridge opens its job with (issue 21): Capture_RBV / Acquire_RBV 0 -> 1 and a bluesky
    start document, each once, live; never the value replayed after a reconnect."""
    for trigger, pv in ((AreaDetectorTrigger(AD, 0.2, 1.0), "d:Capture_RBV"),
                        (EigerTrigger(EIGER, 0.2, 1.0), "e:Acquire_RBV")):
        starts: list[tuple[str, float]] = []
        trigger.on_start = lambda ev, values, starts=starts: starts.append((ev.pvname, ev.received_s))
        f = Feed(trigger, {pv: 1})  # the replay after connecting: a capture is running, its start was not seen
        f.value(pv, 0, 1.0)
        f.value(pv, 1, 2.0)  # live: a start
        for up, t in ((False, 3.0), (True, 3.5)):
            f.tracker.update(ConnectionEvent(pv, up, t))
        f.value(pv, 1, 4.0)  # replayed again: nothing
        assert starts == [(pv, 2.0)]
    b = bluesky_feed()
    seen: list[dict] = []
    b.trigger.on_start = lambda ev, values: seen.append(dict(values))
    start, _stop = run_docs("u9", 9, "success", 12, 12)
    b.value(STREAM, ("start", start), 1.0)
    assert len(seen) == 1 and seen[0]["start:scan_id"].value == 9

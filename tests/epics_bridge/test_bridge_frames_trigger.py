"""The ``pva_frames`` trigger (``epics_bridge/frames.py``): a scan is the detector's frames over pvAccess, for a
beamline with no BUSY/Capture PV. :class:`FrameScans` alone (a scan from its first frame; the next at a uniqueId
seen again, or after an idle gap; the end at the status PV's, after the frames had time to arrive, or after the
idle time); :class:`FrameWatch` against a real p4p server on a private loopback port pair; the worker opening the
streaming job at the first frame and the end covered by it, exactly once, under the key its start found even when
the next scan changed the scan number before the end. The process-level test (simioc, the bridge, a worker) is
``tests/e2e/test_streaming_pva.py``."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import numpy as np
import pytest
from bridge_harness import records
from test_bridge_stream import AnswersJobState
from worker_rig import GEOM, Rig, make_config

from benchmarks.latency.procs import free_port_pair, wait_for
from epics_bridge import journal as jr
from epics_bridge.config import ConfigError, config_from_dict
from epics_bridge.frames import FrameScans, FrameWatch
from epics_bridge.simdata import write_scan_files
from epics_bridge.simioc_pva import pva_client_env, pva_server_conf
from epics_bridge.simioc_stream import PvaStreamer, live_source_address
from epics_bridge.trigger import ConnectionEvent, ValueEvent

SOURCE = "pva://sim:Pva1:Image?scan=sim:Scan:"
FRAMES = dict(kind="pva_frames", source=SOURCE, idle_s=2.0)


def _fields(changes: list) -> list[tuple[str, object]]:
    return [(name, value) for name, value, _stamp in changes]


def test_a_scan_starts_at_its_first_frame_and_a_uniqueid_seen_again_ends_it_and_starts_the_next() -> None:
    scans = FrameScans(idle_s=2.0, planned=3)
    first = _fields(scans.frame(1, 1796654000.25, now=10.0))
    assert first[-1] == ("busy", 1) and ("frames", 1) in first and ("planned", 3) in first
    assert first[0] == ("scan", "2026-12-07 14:33:20.250 UTC")  # the first frame's time stamp names the scan
    assert _fields(scans.frame(2, 0.0, now=10.1)) == [] and _fields(scans.frame(3, 0.0, now=10.3)) == [("frames", 3)]
    again = _fields(scans.frame(1, 1796654009.0, now=19.0))  # ArrayCounter reset: the next scan
    assert again[:3] == [("frames", 3), ("how", "next scan"), ("busy", 0)] and again[-1] == ("busy", 1)
    assert scans.scans == 2


def test_a_scan_ends_at_its_status_once_its_frames_arrived_or_the_grace_passed_else_after_the_idle_time() -> None:
    scans = FrameScans(idle_s=2.0, planned=3)
    scans.frame(1, 0.0, now=0.0)
    assert scans.status(1, 0.0, now=0.1) == [] and scans.tick(0.2) == []  # frames still on their way
    scans.frame(2, 0.0, now=0.3)
    scans.frame(3, 0.0, now=0.4)
    assert _fields(scans.tick(0.45)) == [("frames", 3), ("how", "ended"), ("busy", 0)]  # all planned: at once

    scans.frame(1, 0.0, now=5.0)  # a scan aborted after 1 frame: the grace, then the end
    scans.status(2, 0.0, now=5.1)
    assert scans.tick(5.9) == [] and _fields(scans.tick(6.2)) == [("frames", 1), ("how", "aborted"), ("busy", 0)]

    scans.frame(7, 0.0, now=10.0)  # no status PV: the idle time
    assert scans.tick(11.9) == [] and _fields(scans.tick(12.1))[-2:] == [("how", "idle"), ("busy", 0)]

    scans.frame(1, 0.0, now=20.0)  # the next scan's status 0 within the grace: this scan ends at once
    scans.status(1, 0.0, now=20.1)
    assert _fields(scans.status(0, 0.0, now=20.2)) == [("frames", 1), ("how", "ended"), ("busy", 0)]

    lossy = FrameScans(idle_s=2.0, planned=4)  # uniqueId 3 lost on the way to the bridge: the detector counted 4
    for uid in (1, 2, 4):
        lossy.frame(uid, 0.0, now=30.0)
    lossy.status(1, 0.0, now=30.1)
    assert lossy.tick(30.5) == [] and _fields(lossy.tick(31.2)) == [("frames", 4), ("how", "ended"), ("busy", 0)]


def test_the_frame_watch_makes_scans_of_a_real_detectors_frames_and_skips_the_value_held_at_connect() -> None:
    port = free_port_pair()
    planned_m = np.stack([np.arange(6) * 1e-7, np.zeros(6)], axis=1)
    streamer = PvaStreamer("fw:", planned_m, pva_server_conf(port))
    config = make_config(Path("/tmp"), trigger=dict(FRAMES, source=live_source_address("fw:"))).trigger
    events: queue.Queue = queue.Queue()
    watch = FrameWatch(config, events, conf=pva_client_env(port))
    got: list = []

    def values(name: str) -> list:
        while not events.empty():
            got.append(events.get_nowait())
        return [e.value for e in got if isinstance(e, ValueEvent) and e.pvname == config.frames_pv(name)]

    try:
        streamer.post_frame(99, np.ones((4, 4), np.float32))  # the previous scan's last frame, held at connect
        watch.start()
        wait_for(lambda: values("busy") == [0] and watch.connected(), 10, "the connect (the busy replayed)")
        assert any(isinstance(e, ConnectionEvent) and e.connected for e in got)
        for scan in range(2):  # two scans, uniqueIds 1..6 each (the counter reset), status 1 at each end
            streamer.post_status(0)
            for j in range(6):
                streamer.post_positions([j + 1], planned_m[j:j + 1])
                streamer.post_frame(j + 1, np.full((4, 4), float(scan), np.float32))
            streamer.post_status(1)
            wait_for(lambda scan=scan: values("busy") == [0] + [1, 0] * (scan + 1), 10, f"scan {scan}'s end")
        assert values("planned")[-1] == 6 and values("how")[-1] == "ended" and values("frames")[-1] == 6
        assert watch.scans.scans == 2 and watch.frames_seen == 12  # the value held at connect is no frame
    finally:
        watch.stop()
        streamer.close()


def _frames_rig(tmp: Path, rec: Path, stream: dict | None) -> Rig:
    rig = Rig(tmp, AnswersJobState(str(rec), {"status": "running", "live": {}}), stream=stream, trigger=FRAMES)
    for name, value in (("scan", ""), ("planned", 0), ("frames", 0), ("how", ""), ("busy", 0)):
        pv = rig.config.trigger.frames_pv(name)
        rig.worker.handle(ConnectionEvent(pv, True, rig.clock.t))
        rig.value(pv, value)  # the replay after the connect
    return rig


def _frames(rig: Rig, changes: list) -> None:
    for name, value, stamp in changes:
        rig.worker.handle(ValueEvent(rig.config.trigger.frames_pv(name), value, str(value), rig.clock.t, stamp))


def test_the_frame_watch_receives_each_frames_uniqueid_and_time_stamp_and_none_of_its_pixels(monkeypatch) -> None:
    """The trigger reads a frame's uniqueId and time stamp only: its monitor asks for those fields (before: every
    frame of every scan in full, the detector's traffic to the bridge's host, for the bridge's life)."""
    port = free_port_pair()
    streamer = PvaStreamer("fp:", np.zeros((6, 2)), pva_server_conf(port))
    config = make_config(Path("/tmp"), trigger=dict(FRAMES, source=live_source_address("fp:"))).trigger
    watch = FrameWatch(config, queue.Queue(), conf=pva_client_env(port))
    pixels: list = []
    on_frame = FrameWatch._on_frame

    def spy(self: FrameWatch, v) -> None:  # type: ignore[no-untyped-def]
        pixels.append(v["value"])
        on_frame(self, v)

    monkeypatch.setattr(FrameWatch, "_on_frame", spy)
    try:
        watch.start()
        wait_for(watch.connected, 10, "the watch's monitors")
        for j in range(5):
            streamer.post_frame(j + 1, np.ones((64, 64), np.float32))
        wait_for(lambda: watch.frames_seen == 5, 10, "5 frames at the watch")
    finally:
        watch.stop()
        streamer.close()
    assert pixels == [None] * 5, [None if p is None else getattr(p, "shape", p) for p in pixels]


def test_the_first_frame_opens_the_streaming_job_and_its_end_covers_the_scan_under_the_same_key(tmp_path) -> None:
    """With ``[stream]``: the streaming job at the first frame (its source bound to the scan's start, the first
    frame's time stamp); the end after the next scan's start changed the scan number PV (to 8) finds the key the
    start journalled (scan 7) and queues nothing: one job."""
    rec = tmp_path / "rec.jsonl"
    rig = _frames_rig(tmp_path, rec, dict(enabled=True, source=SOURCE, buffer_mib=0))
    scans = FrameScans(idle_s=2.0, planned=GEOM.rows * GEOM.cols)
    _frames(rig, scans.frame(1, 1796654000.25, now=rig.clock.t))
    rig.run(1.0)
    (job,) = records(rec)
    assert job["params"]["data"]["live_source"] == SOURCE + "&started=1796654000.250"
    key = job["dedup_key"]
    assert key == f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    assert rig.journal.events("stream_start")[0]["message"].startswith("scan started (frames://sim:Pva1:Image#busy)")
    for uid in range(2, GEOM.rows * GEOM.cols + 1):
        _frames(rig, scans.frame(uid, 0.0, now=rig.clock.t))
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.value("NUM", 8)  # the next scan set up before this one's end was seen
    _frames(rig, scans.status(1, 0.0, now=rig.clock.t) + scans.tick(rig.clock.t))
    rig.run(2.0)
    assert [e["kind"] for e in rig.journal.events("covered_by_stream")] and len(records(rec)) == 1
    assert rig.journal.get(key).status in (jr.WATCHING, jr.FOLLOWING, jr.SUBMITTED)
    assert not rig.journal.events("gap")


def test_without_stream_the_frames_trigger_queues_the_complete_scan_as_a_batch_job_and_not_a_partial_one(
        tmp_path) -> None:
    rec = tmp_path / "rec.jsonl"
    rig = _frames_rig(tmp_path, rec, None)
    n = GEOM.rows * GEOM.cols
    scans = FrameScans(idle_s=2.0, planned=n)
    write_scan_files(tmp_path, "scan7", GEOM)
    for uid in range(1, n + 1):
        _frames(rig, scans.frame(uid, time.time(), now=rig.clock.t))
    _frames(rig, scans.status(1, 0.0, now=rig.clock.t) + scans.tick(rig.clock.t))
    rig.run(3.0)
    (batch,) = records(rec)
    assert batch["params"]["data"]["live_source"] == "none"
    assert batch["dedup_key"] == f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    rig.value("NUM", 8)
    _frames(rig, scans.frame(1, time.time(), now=rig.clock.t))  # scan 8: one frame, then nothing
    rig.clock.t += 3.0
    _frames(rig, scans.tick(rig.clock.t))
    rig.run(2.0)
    assert len(records(rec)) == 1 and rig.journal.events("partial")  # 1 of 6 frames: not queued


def test_the_frames_trigger_takes_its_source_from_stream_and_refuses_one_that_is_not_pvaccess(tmp_path) -> None:
    config = make_config(tmp_path, trigger=dict(kind="pva_frames"), stream=dict(enabled=True, source=SOURCE))
    assert config.trigger.frames_source == SOURCE and config.trigger.idle_s == 5.0
    assert config.trigger.frames_pv("busy") in config.pvs and "BUSY" not in config.pvs
    with pytest.raises(ConfigError, match=r"\[trigger\] source: the pva_frames trigger needs the detector's image "
                                          r"PV as a pva:// address"):
        make_config(tmp_path, trigger=dict(kind="pva_frames"), stream=dict(enabled=True, source="swmr"))
    with pytest.raises(ConfigError, match=r"\[trigger\] idle_s: must be > 0"):
        make_config(tmp_path, trigger=dict(FRAMES, idle_s=0))
    assert make_config(tmp_path, trigger=FRAMES).data.scan_number_pv == "NUM"  # given: kept
    unnumbered = config_from_dict({"bridge": {"beamline": "BL"}, "trigger": FRAMES,
                                   "data": {"path_pv": "PATH", "name_pv": "NAME"}}, base_dir=tmp_path)
    assert unnumbered.data.scan_number_pv == "frames://sim:Pva1:Image#scan"  # the first frame's time names it

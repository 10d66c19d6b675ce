"""``ptychopy run -liveSource=pva://...`` against a real p4p server: ``ptychopy simioc --stream pva`` serves an
areaDetector NTNDArray, a positions table, the planned scan and the scan status on a private loopback port pair,
and the reconstruction runs as another process. A full scan at 200 frames/s with no frame dropped, an abort, a
stall, out-of-order frames with a duplicate, a lost frame counted as dropped, a changed frame shape and a full
buffer refused; ``--stream swmr`` feeds ``-liveSource=swmr``. The decoding of the address and of a compressed
frame is checked in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.latency.procs import free_port_pair
from epics_bridge.simioc_pva import pva_client_env
from ptychopy.pva_source import decode_frame, parse_address
from reconstruction.io import read_result
from reconstruction.live import LiveSourceError
from reconstruction.parameters import Parameters
from reconstruction.positions import positions_px_from_parameters

pytestmark = pytest.mark.epics

SCAN = "./ptycho -size=32 -scanDims=12,12 -step=150e-9,150e-9 -beamSize=500e-9 -photons=1e6 -seed=0"
BIG_SCAN = "./ptycho -size=64 -scanDims=20,20 -step=150e-9,150e-9 -beamSize=800e-9 -photons=1e6 -seed=0"
REC = "-sqrtData=1 -updateProbe=2 -phaseConstraint=0 -device=cpu -algorithm=ePIE"
N = 144


def _stream(tmp_path: Path, sim_args: list[str], run_flags: str = "", scan: str = SCAN, timeout_s: float = 60
            ) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """Serve one scan over pvAccess and reconstruct it live; (what the server sent, the run)."""
    port = free_port_pair()
    env = {**os.environ, **pva_client_env(port)}
    prefix = f"t{port}:"
    server = subprocess.Popen([sys.executable, "-m", "ptychopy", "simioc", "--stream", "pva", "--pva-port",
                               str(port), "--prefix", prefix, "--scan", scan, "--linger", "5", *sim_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        serving = json.loads(server.stdout.readline() or "{}")  # printed once the server is up
        assert "serving" in serving, server.communicate(timeout=10)[1]
        run = subprocess.run([sys.executable, "-m", "ptychopy", "run",
                              f"{scan} {REC} -liveSource={serving['serving']} -jobID=live {run_flags}",
                              "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, env=env,
                             timeout=timeout_s)
        server.terminate()
        out, err = server.communicate(timeout=10)
    finally:
        server.kill()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return (lines[-1] if lines else {"stderr": err}), run


def _summary(run: subprocess.CompletedProcess[str]) -> dict:
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(next(line for line in run.stdout.splitlines() if line.startswith("live: "))[6:])


def test_400_frames_of_64px_at_200_per_s_arrive_over_pvaccess_with_none_dropped(tmp_path):
    sent, run = _stream(tmp_path, ["--rate", "200"], "-liveFinish=2", scan=BIG_SCAN)
    assert sent["frames"] == 400 and sent["how"] == "ended" and sent["rate_hz"] > 180
    live = _summary(run)
    assert live["outcome"] == "ended" and not live["partial"], live
    assert live["frames_received"] == 400 and live["frames_dropped"] == 0 and live["live_iterations"] >= 1
    assert "(pvAccess)" in live["source"]
    res = read_result(tmp_path / "live.h5")
    assert not res.stopped_early and np.isfinite(res.object).all()
    expected = positions_px_from_parameters(Parameters.from_cmdstr(BIG_SCAN))  # positions from the table PV
    np.testing.assert_allclose(res.positions_px, np.floor(expected + 0.5))


def test_an_aborted_scan_over_pvaccess_keeps_its_partial_result(tmp_path):
    sent, run = _stream(tmp_path, ["--rate", "400", "--abort-after", "60"], "-liveFinish=1")
    assert sent["how"] == "aborted" and sent["frames"] == 60
    live = _summary(run)
    assert live["outcome"] == "aborted" and live["partial"] and live["frames_received"] == 60
    assert live["frames_dropped"] == 0
    res = read_result(tmp_path / "live.h5")
    assert res.stopped_early == f"partial: scan aborted after 60 of {N} frames"
    assert res.positions_px.shape == (60, 2) and np.isfinite(res.object).all()


def test_a_detector_that_stops_sending_ends_the_stream_as_stalled_with_the_partial_result_kept(tmp_path):
    sent, run = _stream(tmp_path, ["--rate", "400", "--stop-after", "50"], "-liveFinish=1 -liveStall=1.5")
    assert sent["how"] == "stopped" and sent["frames"] == 50
    live = _summary(run)
    assert live["outcome"] == "stalled" and live["frames_received"] == 50
    assert read_result(tmp_path / "live.h5").stopped_early == f"partial: scan stalled after 50 of {N} frames"


def test_frames_out_of_order_go_to_their_scan_point_and_a_duplicate_uniqueid_is_ignored(tmp_path):
    sent, run = _stream(tmp_path, ["--rate", "300", "--shuffle", "16", "--duplicate", "7"], "-liveFinish=1")
    assert sent["frames"] == N + 1
    live = _summary(run)
    assert live["outcome"] == "ended" and not live["partial"]
    assert live["frames_received"] == N and live["duplicates_ignored"] == [7] and live["out_of_order"] > 0
    assert live["frames_dropped"] == 0
    res = read_result(tmp_path / "live.h5")
    expected = positions_px_from_parameters(Parameters.from_cmdstr(SCAN))
    np.testing.assert_allclose(res.positions_px, np.floor(expected + 0.5))


def test_a_frame_never_sent_is_counted_as_dropped_from_the_uniqueid_gap(tmp_path):
    sent, run = _stream(tmp_path, ["--rate", "400", "--drop", "17"], "-liveFinish=1")
    assert sent["frames"] == N - 1
    live = _summary(run)
    assert live["outcome"] == "ended" and live["partial"]
    assert live["frames_received"] == N - 1 and live["frames_dropped"] == 1
    res = read_result(tmp_path / "live.h5")
    assert res.stopped_early == f"partial: scan ended early after {N - 1} of {N} frames, 1 dropped"


def test_a_frame_of_another_shape_stops_the_run_naming_the_frame_and_the_pv(tmp_path):
    _sent, run = _stream(tmp_path, ["--rate", "300", "--reshape-at", "30"], "-liveFinish=1")
    assert run.returncode == 1, run.stdout
    assert "frame 30: 31x32 px; earlier frames are 32x32 px" in run.stderr
    assert "Pva1:Image (pvAccess)" in run.stderr


def test_a_full_host_buffer_stops_the_run_with_an_error_naming_the_bound(tmp_path):
    _sent, run = _stream(tmp_path, ["--rate", "3000"], "-liveFinish=1 -liveBuffer=3")
    assert run.returncode == 1, run.stdout
    assert "3 frames" in run.stderr and "(-liveBuffer)" in run.stderr and "fell behind the detector" in run.stderr


def test_simioc_streams_a_scan_into_an_swmr_file_that_the_swmr_source_reconstructs(tmp_path):
    data = tmp_path / "scan.h5"
    writer = subprocess.Popen([sys.executable, "-m", "ptychopy", "simioc", "--stream", "swmr", "--out", str(data),
                               "--scan", SCAN, "--rate", "300", "--abort-after", "100"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = subprocess.run([sys.executable, "-m", "ptychopy", "run", f"{SCAN} {REC} -fp={data} -liveSource=swmr "
                              "-liveFinish=1 -jobID=live", "--out", str(tmp_path), "--quiet"],
                             capture_output=True, text=True, timeout=60)
        out, err = writer.communicate(timeout=30)
    finally:
        writer.kill()
    assert writer.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["how"] == "aborted"
    live = _summary(run)
    assert live["outcome"] == "aborted" and live["frames_received"] == 100


def test_the_address_names_each_pv_and_a_wrong_key_is_refused_by_name():
    a = parse_address("pva://13SIM1:Pva1:Image?scan=13SIM1:Scan:&uid0=0&scale=1e-6")
    assert (a.image, a.positions, a.planned, a.status) == ("13SIM1:Pva1:Image", "13SIM1:Scan:Positions",
                                                           "13SIM1:Scan:Planned", "13SIM1:Scan:Status")
    assert a.uid0 == 0 and a.scale == 1e-6
    b = parse_address("pva://D:Image?attrs=PosY,PosX&status=D:State")
    assert b.attrs == ("PosY", "PosX") and b.positions is None and b.status == "D:State" and b.planned is None
    with pytest.raises(LiveSourceError, match="unknown key.*posiitons"):
        parse_address("pva://D:Image?posiitons=D:P")
    with pytest.raises(LiveSourceError, match="no image PV"):
        parse_address("pva://?scan=D:")
    with pytest.raises(LiveSourceError, match="attrs=PosY: expected two NDAttribute names"):
        parse_address("pva://D:Image?attrs=PosY")


def test_a_compressed_frame_is_refused_naming_the_codec_and_the_pv():
    from p4p.nt import NTNDArray

    nt = NTNDArray()
    v = nt.wrap(np.arange(12, dtype=np.uint16).reshape(3, 4))
    v["uniqueId"] = 9
    uid, frame, _ = decode_frame(v, "D:Image")
    assert uid == 9 and frame.shape == (3, 4) and frame[2, 3] == 11  # dimension[0] is the column axis
    v["codec.name"] = "lz4"
    with pytest.raises(LiveSourceError, match="PV D:Image, uniqueId 9: frames compressed with codec 'lz4'"):
        decode_frame(v, "D:Image")


@pytest.mark.parametrize("positions", ["table", "attrs"])
def test_measured_positions_from_the_table_or_the_ndattributes_place_the_frames(tmp_path, positions):
    params = Parameters.from_cmdstr(SCAN)
    jitter_m = 0.45 * params.pixel_size_m  # the measured positions miss the plan by up to 0.45 px per axis
    sent, run = _stream(tmp_path, ["--rate", "400", "--positions", positions, "--jitter-m", f"{jitter_m:.6g}"],
                        "-liveFinish=1")
    assert sent["frames"] == N
    live = _summary(run)
    assert live["outcome"] == "ended" and not live["partial"] and live["frames_received"] == N
    planned = np.floor(positions_px_from_parameters(params) + 0.5)
    placed = read_result(tmp_path / "live.h5").positions_px
    moved = np.abs(placed - planned)
    assert moved.max() == 1 and (moved > 0).mean() > 0.2  # rounded to whole pixels: many moved by one


def test_a_pv_that_does_not_connect_is_named_in_the_error(monkeypatch):
    from ptychopy.pva_source import PvaSource
    from reconstruction.live import planned_from_parameters

    for name, value in pva_client_env(free_port_pair()).items():  # a port nothing serves
        monkeypatch.setenv(name, value)
    plan = planned_from_parameters(Parameters.from_cmdstr(SCAN))
    with pytest.raises(LiveSourceError, match=r"PV nowhere:Pva1:Image, PV nowhere:Scan:Status: not connected "
                                              r"within 0.5 s"):
        PvaSource("pva://nowhere:Pva1:Image?status=nowhere:Scan:Status", plan, connect_s=0.5)


def test_frames_arrive_bit_exact_in_the_detector_pixel_type(monkeypatch):
    from epics_bridge.simioc_stream import simulated_scan
    from ptychopy.pva_source import PvaSource
    from reconstruction.live import planned_from_parameters

    port = free_port_pair()
    for name, value in pva_client_env(port).items():
        monkeypatch.setenv(name, value)
    server = subprocess.Popen([sys.executable, "-m", "ptychopy", "simioc", "--stream", "pva", "--pva-port", str(port),
                               "--prefix", "exact:", "--scan", SCAN, "--rate", "1000", "--dtype", "uint16"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        serving = json.loads(server.stdout.readline() or "{}")["serving"]
        source = PvaSource(serving, planned_from_parameters(Parameters.from_cmdstr(SCAN)), connect_s=20)
        try:
            batches = []
            while source.state() == "acquiring":  # the frames held until the end: views of their updates
                batch = source.poll()
                if batch is not None:
                    batches.append(batch)
                time.sleep(0.05)
            while (batch := source.poll()) is not None:
                batches.append(batch)
        finally:
            source.close()
    finally:
        server.kill()
    frames, _ = simulated_scan(SCAN, 0)
    got = np.concatenate([b.frames for b in batches])
    indices = np.concatenate([b.indices for b in batches])
    assert indices.tolist() == list(range(N)) and source.dropped == 0
    np.testing.assert_array_equal(got, np.rint(np.clip(frames, 0, 65535)))


def test_a_planned_scan_never_published_is_named_after_the_wait_and_a_stop_ends_that_wait_at_once(monkeypatch):
    from p4p.nt import NTNDArray
    from p4p.server import Server
    from p4p.server.thread import SharedPV

    from epics_bridge.simioc_pva import pva_server_conf
    from ptychopy.pva_source import PvaSource
    from reconstruction.live import planned_from_parameters

    port = free_port_pair()
    for name, value in pva_client_env(port).items():
        monkeypatch.setenv(name, value)
    server = Server(providers=[{"p:Image": SharedPV(nt=NTNDArray(), initial=np.zeros((1, 1), np.float32)),
                                "p:Planned": SharedPV()}],  # served, never opened: no value ever
                    conf=pva_server_conf(port), useenv=False)
    plan = planned_from_parameters(Parameters.from_cmdstr(SCAN))
    try:
        t0 = time.monotonic()
        with pytest.raises(LiveSourceError, match=r"PV p:Planned \(planned scan\): not connected within 0.5 s"):
            PvaSource("pva://p:Image?planned=p:Planned", plan, connect_s=0.5)
        assert time.monotonic() - t0 < 2
        asked: list[float] = []
        t0 = time.monotonic()
        with pytest.raises(LiveSourceError, match=r"the wait for PV p:Planned \(planned scan\) was stopped"):
            PvaSource("pva://p:Image?planned=p:Planned", plan, connect_s=60,
                      stop=lambda: bool(asked.append(time.monotonic())) or time.monotonic() - t0 > 0.3)
        assert time.monotonic() - t0 < 1 and len(asked) > 5  # asked every 10 ms, ended at the first True
    finally:
        server.stop()


class _TwoScans:
    """An in-process detector (:class:`PvaStreamer` on a private loopback port pair) that plays scans of 12 frames of
    8^2 px one after the other, uniqueId 1.. each (``ArrayCounter`` reset), and the job sources that read it."""

    n = 12

    def __init__(self) -> None:
        from epics_bridge.simioc_pva import pva_server_conf
        from epics_bridge.simioc_stream import PvaStreamer, live_source_address

        port = free_port_pair()
        self.conf = pva_client_env(port)
        self.planned_m = np.stack([np.arange(self.n) * 1e-7, np.zeros(self.n)], axis=1)
        self.streamer = PvaStreamer("two:", self.planned_m, pva_server_conf(port))
        self.address = live_source_address("two:")
        self.scans = 0

    def play(self, *, end: bool = True) -> float:
        """One scan: status 0, its start time (POSIX s, as the bridge's BUSY), its frames (scan s: every pixel
        s), status 1 (with ``end``). Its start."""
        self.scans += 1
        self.streamer.post_status(0)
        started = time.time()
        for j in range(self.n):
            self.streamer.post_positions([j + 1], self.planned_m[j:j + 1])
            self.streamer.post_frame(j + 1, np.full((8, 8), float(self.scans), np.float32))
        if end:
            self.streamer.post_status(1)
        return started

    def source(self, query: str = ""):  # type: ignore[no-untyped-def]
        from p4p.client.thread import Context

        from ptychopy.pva_source import PvaSource
        from reconstruction.live import PlannedScan

        ctx = Context("pva", nt=False, conf=self.conf, useenv=False)
        return PvaSource(self.address + query, PlannedScan(self.planned_m, None, "test"), connect_s=10, ctx=ctx)

    def take(self, source, timeout_s: float = 10.0) -> tuple[str, np.ndarray]:  # type: ignore[no-untyped-def]
        """Poll until the source ends or ``timeout_s`` passes: (its state, the frames taken)."""
        frames = []
        deadline = time.monotonic() + timeout_s
        while source.state() == "acquiring" and time.monotonic() < deadline:
            if (batch := source.poll()) is not None:
                frames.append(batch.frames)
            time.sleep(0.01)
        while (batch := source.poll()) is not None:
            frames.append(batch.frames)
        return source.state(), np.concatenate(frames) if frames else np.zeros((0, 8, 8), np.float32)

    def close(self) -> None:
        self.streamer.close()


@pytest.fixture
def two_scans():  # type: ignore[no-untyped-def]
    d = _TwoScans()
    yield d
    d.close()


def test_a_job_bound_to_its_scans_start_that_subscribes_after_the_scan_ended_fails_and_takes_none_of_the_next(
        two_scans):
    """Without the bridge's buffer: scan A played and ended before its job's source subscribes (queued behind other
    jobs). Unbound (the address as configured, before ``started=``) the source takes scan B's 12 frames as its own
    and ends: a done job covering A with B's data. Bound to A's start (``&started=T``), it fails at once on the
    status PV's end of A, naming A's start and end, and takes none of B's frames."""
    started_a = two_scans.play()
    time.sleep(0.2)
    unbound = two_scans.source()
    try:
        two_scans.play()  # scan B, while the unbound job listens
        state, frames = two_scans.take(unbound)
    finally:
        unbound.close()
    assert state == "ended" and frames.shape[0] == two_scans.n and np.all(frames == 2.0)  # B's data, as A's

    bound = two_scans.source(f"&started={started_a:.3f}")
    try:
        with pytest.raises(LiveSourceError, match=r"this job's scan \(started .* UTC.*\) ended before the job "
                                                  r"subscribed: PV two:Scan:Status says it ended .* UTC"):
            two_scans.take(bound)
        two_scans.play()  # scan C: its frames go nowhere
        time.sleep(0.3)
        assert bound.frames_in == 0
    finally:
        bound.close()


def test_a_job_bound_to_its_scans_start_that_subscribes_while_a_later_scan_acquires_fails_naming_both_starts(
        two_scans):
    """Scan B acquiring (its status 0 posted more than START_SLACK_S after A's start) when A's job subscribes:
    it fails naming A's start and B's, taking no frame."""
    from ptychopy.pva_source import START_SLACK_S, utc_text

    started_a = time.time() - 3 * START_SLACK_S  # scan A began 3 s ago and ended
    two_scans.streamer.post_status(0)  # scan B
    stamp_b = time.time()
    bound = two_scans.source(f"&started={started_a:.3f}")
    try:
        two_scans.play(end=False)
        with pytest.raises(LiveSourceError) as err:
            two_scans.take(bound)
    finally:
        bound.close()
    message = str(err.value)
    assert f"started {utc_text(round(started_a, 3))}" in message and "a later scan started" in message, message
    assert utc_text(stamp_b)[:19] in message, message  # B's start (to the second)


def test_a_job_bound_to_its_scans_start_takes_its_scan_whole_and_ends_before_the_next_scans_frames(two_scans):
    """On time: the job subscribes before its scan (A) and takes its 12 frames; A ends, and scan B starts 1.2 s
    later and its frames arrive before the job looked: the job ends with A's frames only (B's refused, counted)."""
    bound = None
    try:
        two_scans.streamer.post_status(0)
        started_a = time.time()
        bound = two_scans.source(f"&started={started_a:.3f}")
        two_scans.scans = 0
        for j in range(two_scans.n):  # scan A's frames, then its end
            two_scans.streamer.post_positions([j + 1], two_scans.planned_m[j:j + 1])
            two_scans.streamer.post_frame(j + 1, np.full((8, 8), 1.0, np.float32))
        two_scans.scans = 1
        time.sleep(0.1)
        two_scans.streamer.post_status(1)
        time.sleep(1.2)
        two_scans.play()  # scan B, 1.2 s after A's end
        time.sleep(0.3)
        state, frames = two_scans.take(bound)
    finally:
        if bound is not None:
            bound.close()
    assert state == "ended" and frames.shape[0] == two_scans.n and np.all(frames == 1.0), frames[:, 0, 0]
    assert bound.later_scan_frames == two_scans.n

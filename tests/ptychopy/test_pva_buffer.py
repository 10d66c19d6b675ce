"""The bridge's buffer of a scan's first frames (``ptychopy/pva_buffer.py``) against real p4p servers in this process:
a detector (:class:`PvaStreamer` on a private loopback port pair) posts the first frames of a scan before the job's
source subscribes; the :class:`FrameBuffer` (the bridge's standing subscriber, its own pvAccess server) hands them
to the :class:`PvaSource` of the address's ``buffer=...&buffer_at=...``. Every frame in scan order, none dropped,
positions from the table or the NDAttributes; the bound is a clear error; the next scan starts a new series.
The process-level test (simioc, the bridge, a worker) is tests/e2e/test_streaming_pva.py."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from benchmarks.latency.procs import free_port, free_port_pair, wait_for
from epics_bridge.simioc_pva import pva_client_env, pva_server_conf
from epics_bridge.simioc_stream import PvaStreamer, live_source_address
from ptychopy.pva_buffer import FrameBuffer
from ptychopy.pva_source import PvaSource
from reconstruction.live import ENDED, LiveSourceError, PlannedScan

pytestmark = pytest.mark.epics

N = 40
SHAPE_PX = (8, 8)


class Detector:
    """A p4p server of the scan PVs and a buffer subscribed to it (the bridge's)."""

    def __init__(self, prefix: str, max_bytes: int, attrs: bool = False, release_after_s: float = 10.0,
                 keep_after_handover: bool = False, **buffer_options: Any):
        port = free_port_pair()
        self.client_conf = pva_client_env(port)
        self.planned_m = np.stack([np.arange(N) * 1e-7, np.zeros(N)], axis=1)
        self.streamer = PvaStreamer(prefix, self.planned_m, pva_server_conf(port))
        self.frames = np.random.default_rng(0).uniform(1, 100, (N, *SHAPE_PX)).astype(np.float32)
        self.attrs = attrs
        self.base = base = live_source_address(prefix, attrs)
        self.buffer = FrameBuffer(base, f"127.0.0.1:{free_port()}", f"{prefix}Frames", max_bytes,
                                  conf=self.client_conf, wait_s=2.0, release_after_s=release_after_s,
                                  keep_after_handover=keep_after_handover, **buffer_options).start()
        self.address = f"{base}&buffer={self.buffer.pv_name}&buffer_at=127.0.0.1:{self.buffer.port}"
        wait_for(lambda: self.streamer.first_client.connected.is_set(), 10, "the buffer's monitor")
        _wait_pixel_monitor(self.buffer)

    def post(self, points: range, scale: float = 1.0, uid0: int = 1) -> None:
        """Scan points ``points`` (past N: the scan's again), uniqueId ``uid0`` + point."""
        for j in points:
            k = j % N
            if not self.attrs:
                self.streamer.post_positions([uid0 + j], self.planned_m[k:k + 1] * scale)
            self.streamer.post_frame(uid0 + j, self.frames[k], self.planned_m[k] * scale if self.attrs else None)

    def source(self, extra: str = "") -> PvaSource:
        """A job's source subscribing now (``extra``: more of the address's query, e.g. ``&series=K``)."""
        from p4p.client.thread import Context

        ctx = Context("pva", nt=False, conf=self.client_conf, useenv=False)
        return PvaSource(self.address + extra, PlannedScan(self.planned_m, None, "test"), connect_s=10, ctx=ctx)

    def late_job(self, start: int, uid0: int = 1) -> tuple[PvaSource, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A job's source subscribing now; scan points ``start``.. posted after it (uniqueId ``uid0`` + point), the
        scan ended: (the source, what it took)."""
        source = self.source("" if uid0 == 1 else f"&uid0={uid0}")
        try:
            self.post(range(start, N), uid0=uid0)
            self.streamer.post_status(1)
            return source, _drain(source)
        finally:
            source.close()

    def close(self) -> None:
        self.buffer.stop()
        self.streamer.close()


@pytest.fixture
def detector(request: pytest.FixtureRequest) -> Iterator[Detector]:
    d = Detector(f"b{free_port()}:", getattr(request, "param", 1 << 20))
    yield d
    d.close()


def _drain(source: PvaSource, timeout_s: float = 20.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poll until the source says ended: (frames, indices, positions) in the order taken."""
    frames, indices, positions = [], [], []
    deadline = time.monotonic() + timeout_s
    while source.state() != ENDED:
        assert time.monotonic() < deadline, f"not ended: {len(indices)} frames"
        batch = source.poll()
        if batch is None:
            time.sleep(0.01)
            continue
        frames.append(batch.frames)
        indices.append(batch.indices)
        positions.append(batch.positions_m)
    return np.concatenate(frames), np.concatenate(indices), np.concatenate(positions)


def _wait_pixel_monitor(buffer: FrameBuffer) -> None:
    """Until the buffer's pixel monitor connected (its first update: the value the image PV holds)."""
    wait_for(lambda: buffer.stats()["pixel_monitor"] == "open", 10, "the buffer's pixel monitor")


def _wait_held(d: Detector, k: int) -> None:
    """Until ``k`` frames of the series reached the buffer, the pixels of those it holds too."""
    wait_for(lambda: (lambda s: s["frames_seen"] >= k and not s["frames_awaiting"])(d.buffer.stats()), 10,
             f"{k} frames at the buffer")


def _buffer_client(buffer: FrameBuffer):  # type: ignore[no-untyped-def]
    """A p4p client reaching the buffer's server directly (as a job's source does: a name server, no search)."""
    from p4p.client.thread import Context

    return Context("pva", nt=False, conf={"EPICS_PVA_NAME_SERVERS": f"127.0.0.1:{buffer.port}",
                                          "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": ""}, useenv=False)


def _fetch(buffer: FrameBuffer, through: int) -> Any:
    """:func:`fetch_held` of uniqueId ``through`` from ``buffer``, as a job's source asks."""
    from ptychopy.pva_buffer import fetch_held

    ctx = _buffer_client(buffer)
    try:
        return fetch_held(ctx, buffer.pv_name, through)
    finally:
        ctx.close()


def _held_frame_refs(d: Detector) -> list[weakref.ref]:
    """Weak references to the frames the buffer holds now (p4p's received buffers): dead once let go."""
    with d.buffer._cond:
        return [weakref.ref(frame) for _, frame, _, _ in d.buffer._series.held]


def _next_series(d: Detector, before: int, held: int) -> bool:
    """Whether the buffer is on the series after ``before`` and holds ``held`` frames of it."""
    stats = d.buffer.stats()
    return bool(stats["series"] == before + 1 and stats["frames_held"] == held)


def _all_freed(refs: list[weakref.ref]) -> bool:
    gc.collect()
    return all(r() is None for r in refs)


def _next_scan_fails_a_job_bound_to(d: Detector, series: int) -> None:
    """A job's source bound to ``series`` subscribes now, after that scan ended; the next scan runs: the job fails
    on its first frame naming both series, having taken none of the next scan's frames."""
    too_late = d.source(f"&series={series}")
    try:
        d.streamer.post_status(0)
        d.post(range(N))  # the next scan
        with pytest.raises(LiveSourceError, match=rf"first frame was uniqueId 1 \(its scan: the bridge's series "
                                                  rf"{series}\).*is of the bridge's series {series + 1}, a "
                                                  rf"later scan's, not of this job's scan's series {series}"):
            _drain(too_late)
    finally:
        too_late.close()
    assert too_late.frames_in == 0


@pytest.mark.parametrize("attrs", [False, True], ids=["positions-table", "ndattributes"])
def test_frames_posted_before_the_source_subscribed_come_from_the_bridge_buffer_with_none_dropped(attrs):
    d = Detector(f"b{free_port()}:", 1 << 20, attrs=attrs)
    try:
        d.post(range(0, 15))  # the scan began before the job subscribed
        _wait_held(d, 15)
        source, (frames, indices, positions) = d.late_job(15)
    finally:
        d.close()
    assert indices.tolist() == list(range(N))  # in scan order: the held frames first
    np.testing.assert_array_equal(frames, d.frames)
    np.testing.assert_allclose(positions, d.planned_m)
    assert source.dropped == 0 and source.frames_from_buffer >= 14  # the frame held at connect is one of them


def test_a_source_that_subscribed_before_the_first_frame_does_not_ask_the_buffer(detector):
    source = detector.source()
    try:
        detector.buffer.stop()  # nothing to ask: the job saw the scan's first frame itself
        detector.post(range(N))
        detector.streamer.post_status(1)
        _frames, indices, _ = _drain(source)
    finally:
        source.close()
    assert indices.tolist() == list(range(N)) and source.frames_from_buffer == 0 and source.dropped == 0


@pytest.mark.parametrize("detector", [10 * 8 * 8 * 4], indirect=True)  # room for 10 frames of 8 x 8 float32
def test_a_job_subscribing_after_the_buffer_bound_fails_naming_the_bound(detector):
    detector.post(range(0, 25))
    _wait_held(detector, 25)
    assert detector.buffer.stats()["frames_held"] == 10 and detector.buffer.stats()["full"]
    assert "uniqueId 11 and the frames after it are not held" in detector.buffer.errors[-1]
    source = detector.source()
    try:
        detector.post(range(25, N))
        with pytest.raises(LiveSourceError, match=r"held only the first 10 frames .*buffer_mib") as err:
            _drain(source)
    finally:
        source.close()
    assert "this job's first frame was uniqueId 26" in str(err.value)


def test_a_new_scan_restarts_the_series_so_a_late_job_gets_only_its_own_scans_frames(detector):
    detector.post(range(0, N))  # the previous scan, whole
    _wait_held(detector, N)
    first = detector.buffer.series_now()
    detector.post(range(0, 12))  # the next scan: the counter began again
    wait_for(lambda: _next_series(detector, first, 12), 10, "the second series")
    source, (frames, indices, _) = detector.late_job(12)
    assert indices.tolist() == list(range(N)) and source.dropped == 0
    np.testing.assert_array_equal(frames, detector.frames)


def test_an_answer_waiting_for_the_jobs_first_frame_holds_up_no_other_subscriber_in_the_process(detector):
    """The embedded server runs the bridge and the job in one process: p4p's shared callback threads (four, handed
    out in turn) must keep delivering while the buffer waits to answer (before: held up to its wait, 2 s here, and
    the benchmark's scans lost frames or stalled)."""
    import threading

    from p4p.client.thread import Context

    from ptychopy.pva_buffer import fetch_held

    ctx = Context("pva", nt=False, conf=detector.client_conf, useenv=False)
    got: list[list[float]] = [[] for _ in range(4)]  # four monitors: one on each of the shared threads
    subs = [ctx.monitor(f"{detector.streamer.prefix}Scan:Status", got[k].append) for k in range(4)]
    buffer_ctx = _buffer_client(detector.buffer)
    try:
        wait_for(lambda: all(got), 10, "the status monitors' first values")
        asked = threading.Thread(target=lambda: pytest.raises(LiveSourceError, fetch_held, buffer_ctx,
                                                                 detector.buffer.pv_name, 5))
        asked.start()  # uniqueId 5 never comes: the buffer waits its 2 s
        wait_for(lambda: detector.buffer.stats()["answers_waiting"] == 1, 10, "the buffer waiting to answer")
        t0 = time.monotonic()
        detector.streamer.post_status(1)
        wait_for(lambda: all(len(g) >= 2 for g in got), 10, "the status update at every monitor")
        took_s = time.monotonic() - t0
        asked.join(10)
    finally:
        for sub in subs:
            sub.close()
        ctx.close()
        buffer_ctx.close()
    assert took_s < 1.0, f"a monitor waited {took_s:.2f} s behind the buffer's answer"


def test_the_jobs_first_frame_gets_its_positions_row_from_the_buffer_when_its_monitor_found_that_row_at_connect(
        detector):
    """Rows come before their frames: the job's positions monitor may connect between the row of its first frame
    and the frame, find that row as the value at connect and not take it (it may be the previous scan's). The
    buffer hands it over with the frames before (before: the frame waited for its row until the stream stalled)."""
    detector.post(range(0, 15))
    _wait_held(detector, 15)
    _job_after_rows(detector, range(15, 16), Detector.source)  # the row of scan point 15, not its frame


def _job_after_rows(d: Detector, points: range, source_of: Callable[[Detector], PvaSource]) -> PvaSource:
    """The rows of scan points ``points`` posted one by one, then a job's source subscribes (``source_of(d)``: its
    positions monitor finds the last of those rows at connect), then their frames and the rest of the scan, the
    scan ended: the source, having taken every frame in scan order at its planned position, none dropped."""
    for j in points:
        d.streamer.post_positions([1 + j], d.planned_m[j:j + 1])
    source = source_of(d)
    try:
        for j in points:
            d.streamer.post_frame(1 + j, d.frames[j])
        d.post(range(points.stop, N))
        d.streamer.post_status(1)
        frames, indices, positions = _drain(source, timeout_s=10)
    finally:
        source.close()
    assert indices.tolist() == list(range(N)) and source.dropped == 0
    np.testing.assert_array_equal(frames, d.frames)
    np.testing.assert_allclose(positions, d.planned_m)
    return source


def test_a_buffer_that_subscribed_while_a_scan_ran_says_its_start_is_held_nowhere_instead_of_a_partial_prefix():
    prefix = f"b{free_port()}:"
    port = free_port_pair()
    planned_m = np.stack([np.arange(N) * 1e-7, np.zeros(N)], axis=1)
    streamer = PvaStreamer(prefix, planned_m, pva_server_conf(port))
    frame = np.ones(SHAPE_PX, np.float32)
    try:
        for j in range(10):  # the scan runs before the bridge (re)starts
            streamer.post_positions([j + 1], planned_m[j:j + 1])
            streamer.post_frame(j + 1, frame)
        buffer = FrameBuffer(live_source_address(prefix), f"127.0.0.1:{free_port()}", f"{prefix}Frames", 1 << 20,
                             conf=pva_client_env(port), wait_s=2.0).start()
        try:
            wait_for(lambda: streamer.first_client.connected.is_set(), 10, "the buffer's monitor")
            for j in range(10, 20):
                streamer.post_positions([j + 1], planned_m[j:j + 1])
                streamer.post_frame(j + 1, frame)
            wait_for(lambda: buffer.stats()["frames_seen"] == 10, 10, "frames 11-20 at the buffer")
            from ptychopy.pva_buffer import fetch_held

            ctx = _buffer_client(buffer)
            try:
                with pytest.raises(LiveSourceError, match=r"\(re\)connected while this scan acquired \(its first "
                                                          r"frame since was uniqueId 11\): the frames before it are "
                                                          r"held nowhere"):
                    fetch_held(ctx, buffer.pv_name, 16)  # a job whose first frame was 16: 1-10 went past
            finally:
                ctx.close()
        finally:
            buffer.stop()
    finally:
        streamer.close()


def test_a_scans_frames_are_let_go_once_its_job_took_them_and_the_next_scan_is_held_again(detector):
    detector.post(range(0, 15))  # the scan began before the job subscribed
    _wait_held(detector, 15)
    refs = _held_frame_refs(detector)
    assert len(refs) == 15
    source, (_frames, indices, _) = detector.late_job(15)  # the job takes them, the scan goes on to its end
    assert indices.tolist() == list(range(N)) and source.dropped == 0 and source.frames_from_buffer >= 14
    _wait_held(detector, N)
    stats = detector.buffer.stats()
    # nothing held once handed over, nor any frame after the job's first (before: all 40, until the next scan)
    assert stats["frames_held"] == 0 and stats["bytes_held"] == 0 and stats["frames_seen"] == N, stats
    assert stats["released"].startswith("handed to the job whose first frame was uniqueId"), stats
    assert _all_freed(refs), "a handed-over frame is still referenced"

    first = detector.buffer.series_now()
    detector.post(range(0, 12))  # the next scan: held again, and its late job gets every frame
    wait_for(lambda: _next_series(detector, first, 12), 10, "the next scan's first frames held")
    source, (frames, indices, _) = detector.late_job(12)
    assert indices.tolist() == list(range(N)) and source.dropped == 0 and source.frames_from_buffer >= 11
    np.testing.assert_array_equal(frames, detector.frames)


def test_a_scan_no_job_asked_for_lets_its_frames_go_after_its_status_said_ended_and_a_late_ask_is_told_so():
    d = Detector(f"b{free_port()}:", 1 << 20, release_after_s=0.3)
    try:
        d.post(range(N))
        _wait_held(d, N)
        refs = _held_frame_refs(d)
        assert len(refs) == N
        d.streamer.post_status(1)  # the scan ended; no job asked (it subscribed before the first frame, or none)
        wait_for(lambda: d.buffer.stats()["released"], 10, "the ended scan's frames let go")
        stats = d.buffer.stats()
        assert stats["frames_held"] == 0 and stats["bytes_held"] == 0, stats  # before: held until the next scan
        assert stats["released"] == "the scan ended 0.3 s before", stats
        assert _all_freed(refs), "a let-go frame is still referenced"
        from ptychopy.pva_buffer import fetch_held

        ctx = _buffer_client(d.buffer)
        try:
            with pytest.raises(LiveSourceError, match=r"let this scan's held frames go \(the scan ended 0.3 s"):
                fetch_held(ctx, d.buffer.pv_name, 16)
        finally:
            ctx.close()

        first = d.buffer.series_now()
        d.streamer.post_status(0)  # the next scan: held again
        d.post(range(0, 12))
        wait_for(lambda: _next_series(d, first, 12), 10, "the next scan's first frames held")
        source, (_frames, indices, _) = d.late_job(12)
        assert indices.tolist() == list(range(N)) and source.dropped == 0 and source.frames_from_buffer >= 11
    finally:
        d.close()


FRAME_BYTES = int(np.prod(SHAPE_PX)) * 4  # one 8 x 8 float32 frame


def test_an_rpc_asking_from_a_negative_start_is_refused_not_served_from_pythons_negative_indices(detector):
    detector.post(range(0, 15))
    _wait_held(detector, 15)
    with pytest.raises(ValueError, match="start -2: expected 0 or more"):  # before: frames 9-10, and the rest let go
        detector.buffer.answer(11, -1, -2, 1 << 20)
    assert detector.buffer.stats()["frames_held"] == 15


def test_an_rpc_asking_for_more_than_chunk_bytes_at_once_gets_one_chunk(detector, monkeypatch):
    import ptychopy.pva_buffer as pb

    monkeypatch.setattr(pb, "CHUNK_BYTES", 3 * FRAME_BYTES)
    detector.post(range(0, 15))
    _wait_held(detector, 15)
    v = detector.buffer.answer(11, -1, 0, 1 << 40)  # before: all 10 frames in one answer, whatever their size
    assert len(v["uniqueId"]) == 3 and int(v["next"]) == 3


def test_a_second_job_past_an_earlier_jobs_first_frame_is_told_its_frames_are_held_nowhere_not_given_a_prefix(
        detector):
    detector.post(range(0, 15))
    _wait_held(detector, 15)
    first = detector.buffer.answer(6, -1, 0, FRAME_BYTES)  # a job whose first frame was 6 took one chunk of five
    assert int(first["next"]) == 1
    detector.post(range(15, 30))  # not held: a job is past them
    _wait_held(detector, 30)
    assert detector.buffer.stats()["frames_held"] == 15
    # a second job (first frame 26): frames 16-25 were never held; before: frames 1-15 only, the rest gaps
    with pytest.raises(LiveSourceError, match=r"held only the first 15 frames of this scan \(an earlier job, "
                                              r"whose first frame was the 6-th, asked for them\) and this "
                                              r"job's first frame was the 26-th"):
        _fetch(detector.buffer, 26)


def test_a_handover_left_unfinished_lets_the_frames_go_after_the_scan_ended_not_at_the_next_scan():
    d = Detector(f"b{free_port()}:", 1 << 20, release_after_s=0.3)
    try:
        d.post(range(0, 15))
        _wait_held(d, 15)
        refs = _held_frame_refs(d)
        d.buffer.answer(11, -1, 0, FRAME_BYTES)  # a job asked and took one chunk of ten, then failed
        d.streamer.post_status(1)
        # before: held until the next scan (the ask made the end's release wait for a handover that never ended)
        wait_for(lambda: d.buffer.stats()["released"], 10, "the ended scan's frames let go")
        assert d.buffer.stats()["frames_held"] == 0 and _all_freed(refs)
    finally:
        d.close()


def test_a_buffer_whose_start_fails_after_its_server_started_frees_its_port_and_threads(monkeypatch):
    import threading

    import p4p.client.thread

    port = free_port()

    def refuse(*args, **kwargs):
        raise RuntimeError("no client context")

    threads_before = set(threading.enumerate())
    with monkeypatch.context() as m:
        m.setattr(p4p.client.thread, "Context", refuse)
        failing = FrameBuffer("pva://x:Image", f"127.0.0.1:{port}", "x:Frames", 1 << 20)
        with pytest.raises(RuntimeError, match="no client context"):
            failing.start()
    # before: the server kept the port (the next start: "the port is in use") and the work queues' threads ran on
    wait_for(lambda: not [t for t in set(threading.enumerate()) - threads_before if t.is_alive()], 10,
             "the failed start's threads to end")
    FrameBuffer("pva://x:Image", f"127.0.0.1:{port}", "x:Frames", 1 << 20, conf=pva_client_env(free_port_pair())
                ).start().stop()


def test_a_replacement_job_bound_to_its_scans_series_gets_every_frame_again_but_never_a_later_scans():
    """With a replacement possible (``keep_after_handover``: [stream] restream_attempts > 0) the first job taking
    the held frames lets none go and the frames after its first are still held; a replacement subscribing later
    in the scan, its source naming the scan's series, gets every frame. One whose first frame is of a later scan
    (it subscribed after its own ended) fails naming the series instead of taking that scan's frames."""
    d = Detector(f"b{free_port()}:", 1 << 20, keep_after_handover=True)
    try:
        d.post(range(0, 15))
        _wait_held(d, 15)
        series = d.buffer.series_now()
        first_job = d.source()
        try:
            d.post(range(15, 25))
            taken = 0
            deadline = time.monotonic() + 20
            while taken < 25:  # the job took the held frames and its own, then failed (closed) mid-scan
                assert time.monotonic() < deadline, f"the first job took {taken} frames"
                batch = first_job.poll()
                taken += 0 if batch is None else len(batch.indices)
            assert first_job.frames_from_buffer >= 14
        finally:
            first_job.close()
        _wait_held(d, 25)
        stats = d.buffer.stats()
        assert stats["frames_held"] == 25 and not stats["released"], stats  # kept for a replacement
        replacement = d.source(f"&series={series}")
        try:
            d.post(range(25, N))
            d.streamer.post_status(1)
            frames, indices, _ = _drain(replacement)
        finally:
            replacement.close()
        assert indices.tolist() == list(range(N)) and replacement.dropped == 0
        assert replacement.frames_from_buffer >= 24
        np.testing.assert_array_equal(frames, d.frames)

        _next_scan_fails_a_job_bound_to(d, series)  # subscribed after its scan ended
    finally:
        d.close()


def test_a_new_scans_frame_whose_row_has_not_come_waits_for_it_not_the_scan_befores_row_of_its_uniqueid(detector):
    """The positions may come from another server than the frames (no order between them): the scan before's row
    of the same uniqueId must not stand in for this scan's (before: answered at once with the old positions)."""
    import threading

    detector.post(range(0, N))  # the scan before, with its rows
    _wait_held(detector, N)
    before = detector.buffer.series_now()
    for j in range(0, 13):  # the next scan's first frames; their rows not yet come
        detector.streamer.post_frame(j + 1, detector.frames[j])
    wait_for(lambda: _next_series(detector, before, 13), 10, "the second series")
    got: list = []
    asked = threading.Thread(target=lambda: got.append(detector.buffer.answer(13, -1, 0, 1 << 20)))
    asked.start()
    wait_for(lambda: detector.buffer.stats()["answers_waiting"] == 1 or got, 10, "the answer")
    detector.streamer.post_positions(list(range(1, 14)), 2 * detector.planned_m[:13])  # this scan's rows, moved
    asked.join(10)
    assert not got[0]["error"], got[0]["error"]
    np.testing.assert_allclose(got[0]["row_m"], 2 * detector.planned_m[:12, 0])
    assert got[0]["through_row_m"] == pytest.approx(2 * detector.planned_m[12, 0])


def test_a_detector_posting_frames_the_buffer_cannot_read_is_logged_now_and_then_and_its_errors_are_bounded(
        detector, caplog):
    import logging

    import ptychopy.pva_buffer as pb

    s = detector.streamer
    frame = detector.frames[0]
    dims = [{"size": 8, "offset": 0, "fullSize": 8, "binning": 1, "reverse": False}] * 2
    caplog.set_level(logging.ERROR, logger=pb.log.name)
    for uid in range(1, 301):  # compressed frames (NDPluginCodec on): each one unreadable
        s.image.post(s._value_cls(s._nd.type, {"value": (s._nd._code2u[frame.dtype.char], frame.ravel()),
                                               "uniqueId": uid, "codec": {"name": "lz4"}, "dimension": dims}))
    wait_for(lambda: detector.buffer.errors and "uniqueId 300" in detector.buffer.errors[-1], 20,
             "the last unreadable frame at the buffer")
    # before: a list of all 300 messages (growing for as long as the detector posts) and 300 errors logged
    assert len(detector.buffer.errors) == 100
    logged = [r for r in caplog.records if "codec 'lz4'" in r.getMessage()]
    assert 1 <= len(logged) <= 2, len(logged)


def test_a_first_job_bound_at_busy_to_the_next_series_that_starts_after_its_scan_ended_fails_naming_both_series():
    """The bridge binds a scan's first streaming job to the series its frames go to (``series_of_scan_started`` at
    ``BUSY``: the one after the current, an earlier scan's). A job asked on time takes its scan whole; one queued
    past its scan's end subscribes between scans and gets the next scan's first frame (uniqueId 1, which the earlier
    scan had too): it fails naming its own series and the later one instead of taking that scan's frames as its
    own (before: no series for the first job, which then ended done with the next scan's frames)."""
    d = Detector(f"b{free_port()}:", 1 << 20)
    try:
        d.buffer.series_of_scan_started(time.monotonic())  # an earlier scan: its BUSY, its frames
        d.post(range(N))
        d.streamer.post_status(1)
        _wait_held(d, N)
        busy_s = time.monotonic()  # BUSY rises; the scan's first frame comes after
        before = d.buffer.series_now()
        series = d.buffer.series_of_scan_started(busy_s)
        assert series == before + 1 == d.buffer.series_now()  # the earlier scan's frames let go
        on_time = d.source(f"&series={series}")
        try:
            d.streamer.post_status(0)
            d.post(range(N))
            d.streamer.post_status(1)
            frames, indices, _ = _drain(on_time)
        finally:
            on_time.close()
        assert indices.tolist() == list(range(N)) and on_time.dropped == 0
        np.testing.assert_array_equal(frames, d.frames)
        # its frames began before the bridge handled BUSY (the debounce): the series is still this scan's
        assert d.buffer.series_of_scan_started(busy_s) == series == d.buffer.series_now()

        _next_scan_fails_a_job_bound_to(d, series)  # queued behind another job past its scan's end
    finally:
        d.close()


def test_a_scan_whose_frames_never_reached_the_bridge_does_not_share_its_series_with_the_next_scan(detector):
    """A scan started (BUSY) whose frames never reached the bridge (aborted before its first, or posted while the
    bridge's monitor was not connected): the next scan's start gets the next series, not the same one, so a job
    of the first scan asked late fails on the next scan's frames naming both series."""
    first = detector.buffer.series_of_scan_started(time.monotonic())
    second = detector.buffer.series_of_scan_started(time.monotonic())  # no frame between: before, no such method
    assert second == first + 1
    detector.post(range(0, 5))  # the second scan's frames
    _wait_held(detector, 5)
    assert detector.buffer.series_now() == second
    late = detector.buffer.answer(3, first, 0, 1 << 20)
    assert (f"is of the bridge's series {second}, a later scan's, not of this job's scan's series {first}"
            in late["error"]), late["error"]
    on_time = detector.buffer.answer(3, second, 0, 1 << 20)
    assert not on_time["error"] and list(on_time["uniqueId"]) == [1, 2]


def test_a_scans_first_frames_reaching_the_bridge_just_before_its_busy_stay_in_the_series_its_jobs_are_bound_to(
        detector):
    """The detector's first frames may reach the bridge (pvAccess) before BUSY does (Channel Access): the series
    they began is the scan's, not split at BUSY (before this rule: the frames before BUSY fell in another series
    and the job, asking for them, got none: dropped)."""
    detector.buffer.series_of_scan_started(time.monotonic())  # an earlier scan
    detector.post(range(N))
    _wait_held(detector, N)
    time.sleep(1.5)  # longer than START_SLACK_S: that scan's frames began well before the next BUSY
    earlier = detector.buffer.series_now()
    detector.post(range(0, 3))  # the next scan's first frames, then its BUSY
    wait_for(lambda: detector.buffer.series_now() == earlier + 1, 10, "the next scan's series")
    series = detector.buffer.series_of_scan_started(time.monotonic())
    assert series == earlier + 1 == detector.buffer.series_now()
    detector.post(range(3, 6))
    _wait_held(detector, 6)
    answer = detector.buffer.answer(5, series, 0, 1 << 20)
    assert not answer["error"] and list(answer["uniqueId"]) == [1, 2, 3, 4], answer["error"]


def test_an_ask_bound_to_a_series_whose_frames_have_not_reached_the_bridge_waits_for_them_instead_of_failing(
        detector):
    """A first job opened at BUSY may see its scan's first frames before the bridge's monitor does: its ask names
    the series the bridge opened at BUSY, and is answered once the frames came (before: refused at once)."""
    from concurrent.futures import ThreadPoolExecutor

    detector.buffer.series_of_scan_started(time.monotonic())  # an earlier scan: its BUSY, its frames
    detector.post(range(N))
    _wait_held(detector, N)
    series = detector.buffer.series_of_scan_started(time.monotonic())
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(detector.buffer.answer, 3, series, 0, 1 << 20)
        wait_for(lambda: detector.buffer.stats()["answers_waiting"] == 1, 10, "the ask waiting")
        detector.post(range(0, 5))  # the scan's frames reach the bridge
        answer = asked.result(timeout=10)
    assert not answer["error"] and int(answer["series"]) == series
    assert list(answer["uniqueId"]) == [1, 2]


def test_a_detector_whose_counter_never_resets_keeps_the_buffers_bookkeeping_bounded_and_every_scan_whole():
    """areaDetector's ArrayCounter left running: uniqueIds never repeat, each scan begins at its BUSY claim. Past
    the bound, and once a job took the held frames, the buffer counts the frames it sees (runs of uniqueIds)
    instead of keeping an entry and a positions row per frame (before: both grew with every frame for the bridge's
    life, about 100 B a frame); a late job within the bound still gets every frame of each later scan."""
    from ptychopy.pva_buffer import MAX_RUNS, PRUNE_ROWS_EVERY

    held_px = 10  # room for 10 frames
    d = Detector(f"b{free_port()}:", held_px * FRAME_BYTES)
    runs_on = 1200  # frames the detector posts after each scan (free-running), past the bound
    try:
        uid0, seen = 1, 0
        for scan in range(3):
            series = d.buffer.series_of_scan_started(time.monotonic())
            d.streamer.post_status(0)
            if scan == 1:  # no job: the series fills past its bound and nobody ever asks
                seen = 0
            else:  # a late job within the bound takes the scan whole (its handover lets the frames go)
                d.post(range(0, 5), uid0=uid0)
                _wait_held(d, 5)
                source, (frames, indices, _) = d.late_job(5, uid0=uid0)
                assert indices.tolist() == list(range(N)) and source.dropped == 0, (scan, source.dropped)
                assert source.frames_from_buffer >= 4
                np.testing.assert_array_equal(frames, d.frames)
                seen = N
            assert d.buffer.series_now() == series
            for start in range(seen, seen + runs_on, 200):  # in steps: no monitor queue overflows
                d.post(range(start, start + 200), uid0=uid0)
                _wait_held(d, start + 200)
            seen += runs_on
            stats = d.buffer.stats()
            with d.buffer._cond:
                kept, rows = len(d.buffer._series.order), len(d.buffer._rows)
            assert stats["series"] == series and stats["frames_seen"] == seen, (scan, stats)
            assert stats["full"] or stats["released"], stats
            assert kept <= held_px + 1, (scan, kept)  # before: one per frame seen (1,240)
            assert rows <= 2 * (kept + 2) + PRUNE_ROWS_EVERY, (scan, rows)  # before: every row since the start
            assert stats["uid_runs"] <= MAX_RUNS and stats["uids_kept"] == kept, stats
            uid0 += seen  # the next scan's counter goes on
            d.streamer.post_status(1)  # the status PV says the scan (and its free run) ended: the next one may come
            wait_for(lambda: d.buffer.stats()["pixel_monitor"] == "open", 10, "the pixel monitor open at the end")
    finally:
        d.close()


def test_a_counter_skipping_uniqueids_past_the_bound_keeps_at_most_max_runs_and_still_sees_every_uniqueid_again():
    """The uniqueIds seen past the bound are kept as runs: a detector dropping frames (gaps in its counter) keeps
    at most MAX_RUNS of them (the closest merged), and every uniqueId it posted still counts as seen, so the
    counter beginning again is still a new scan."""
    from ptychopy.pva_buffer import MAX_RUNS, _Series

    s = _Series(0)
    posted = [u for u in range(1, 20_000) if u % 7 and u % 1013]  # gaps of one, every 7th and 1013th dropped
    for u in posted:
        s.add_run(u)
    assert len(s.runs) <= MAX_RUNS and not s.order
    assert all(s.has(u) for u in posted)
    assert not s.has(0) and not s.has(20_000)  # the counter going on is not a new scan
    assert s.runs == sorted(s.runs) and all(a <= b < c for (a, b), (c, _) in zip(s.runs, s.runs[1:], strict=False))


SLOW_S = 2.5  # the buffer's answer delayed this long: longer than the feed's stall time and the source's end grace


def _slow_answers(d: Detector, monkeypatch: pytest.MonkeyPatch, fail: str = "") -> None:
    """The buffer's answers come ``SLOW_S`` late (the bridge's host loaded, a slow network); ``fail``: then the
    answer is that error instead."""
    answer = d.buffer.answer

    def slow(*args: Any) -> Any:
        time.sleep(SLOW_S)
        if fail:
            raise RuntimeError(fail)
        return answer(*args)

    monkeypatch.setattr(d.buffer, "answer", slow)


def _timed_polls(source: PvaSource) -> list[float]:
    """Time every ``source.poll()`` from now on (seconds each, appended to the list returned)."""
    took: list[float] = []
    poll = source.poll

    def timed() -> Any:
        t0 = time.monotonic()
        try:
            return poll()
        finally:
            took.append(time.monotonic() - t0)

    source.poll = timed  # type: ignore[method-assign]
    return took


def test_a_poll_while_the_buffers_answer_is_slow_returns_within_half_a_second_and_the_held_frames_still_come_first(
        detector, monkeypatch):
    """The frames before the job's first are fetched on a thread of their own: every poll returns at once (before:
    the first poll after the job's first frame waited for the whole answer, 2.5 s here, up to 10 s per chunk,
    while frames piled up and the live view stood still). The job's own frames are held back until the held ones
    are in (every frame in the detector's order); meanwhile the source says acquiring though the scan's status
    said ended, and the feed does not count the wait as a stall (its stall time 1 s, shorter than the wait)."""
    from reconstruction.live import ACQUIRING
    from reconstruction.live.feed import LiveFeed

    _slow_answers(detector, monkeypatch)
    detector.post(range(0, 15))  # the scan began before the job subscribed
    _wait_held(detector, 15)
    source = detector.source()
    took = _timed_polls(source)
    feed = LiveFeed(source, stall_s=1.0, max_frames=1000).start()
    try:
        detector.post(range(15, N))
        detector.streamer.post_status(1)
        time.sleep(1.5)  # past the source's end grace (1 s), the answer still on its way
        assert source.holding_back() and source.state() == ACQUIRING and feed.outcome is None
        wait_for(lambda: feed.finished, 20, "the feed to end")
    finally:
        feed.stop()
        source.close()
    indices = np.concatenate([b.indices for b in feed.take()])
    assert feed.outcome == ENDED and indices.tolist() == list(range(N)) and source.dropped == 0
    assert source.frames_from_buffer >= 14
    assert len(took) > 20 and max(took) < 0.5, f"the slowest poll took {max(took):.2f} s"


def test_a_fetch_that_fails_after_a_slow_answer_raises_at_a_poll_that_did_not_wait_for_it(detector, monkeypatch):
    _slow_answers(detector, monkeypatch, fail="the bridge's host is overloaded")
    detector.post(range(0, 15))
    _wait_held(detector, 15)
    source = detector.source()
    took = _timed_polls(source)
    try:
        detector.post(range(15, N))
        with pytest.raises(LiveSourceError, match=r"first frame was uniqueId 16, after the scan's first \(1\), and "
                                                  r"the frames before it could not be had: the bridge's buffer "
                                                  r".*RuntimeError: the bridge's host is overloaded"):
            _drain(source)
    finally:
        source.close()
    assert source.frames_in == 0  # none of its own frames taken ahead of the held ones
    assert max(took) < 0.5, f"the slowest poll took {max(took):.2f} s"  # before: the failing poll took 2.5 s


class HostileBuffer:
    """A p4p server on a private loopback port standing where a bridge's buffer should be, answering every request
    with ``answer(request_number, request)``: a dict of the answer's fields, or a :class:`p4p.wrapper.Value`."""

    PV = "hostile:Frames"

    def __init__(self, answer: Any):
        from p4p.nt import NTScalar
        from p4p.server import Server
        from p4p.server.thread import SharedPV

        from ptychopy.pva_buffer import _types

        self.answer, self.asked = answer, 0
        self._answer_type = _types()[1]
        self.port = free_port()
        self._pv = SharedPV(nt=NTScalar("l"), initial=0, handler=self)
        self._server = Server(providers=[{self.PV: self._pv}], useenv=False, conf={
            "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_PVAS_SERVER_PORT": str(self.port),
            "EPICS_PVAS_BROADCAST_PORT": "0", "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_PVAS_BEACON_ADDR_LIST": ""})

    def rpc(self, pv: Any, op: Any) -> None:
        from p4p.wrapper import Value

        self.asked += 1
        value = self.answer(self.asked, op.value())
        op.done(value if isinstance(value, Value) else Value(self._answer_type, value))

    def fetch(self, through: int = 3, **options: Any) -> Any:
        """:func:`fetch_held` of uniqueId ``through`` from this server, as a job asks."""
        from p4p.client.thread import Context

        from ptychopy.pva_buffer import fetch_held

        ctx = Context("pva", nt=False, conf={"EPICS_PVA_NAME_SERVERS": f"127.0.0.1:{self.port}",
                                              "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": ""},
                      useenv=False)
        try:
            return fetch_held(ctx, self.PV, through, timeout_s=5.0, **options)
        finally:
            ctx.close()

    def close(self) -> None:
        self._server.stop()


def _well_formed(**changes: Any) -> dict[str, Any]:
    """A buffer's answer of two 2 x 3 float32 frames (uniqueIds 1, 2: before the job's first, 3), ``changes``
    applied."""
    answer = {"series": 5, "next": -1, "error": "", "uniqueId": [1, 2], "rows": 2, "cols": 3, "dtype": "<f4",
              "value": np.arange(12, dtype="<f4").view(np.uint8), "row_m": [0.0, 1e-7], "col_m": [0.0, 0.0],
              "attr_row": [np.nan, np.nan], "attr_col": [np.nan, np.nan], "through_row_m": 2e-7,
              "through_col_m": 0.0}
    answer.update(changes)
    return answer


def test_a_well_formed_answer_from_a_server_standing_in_for_the_bridge_is_read_whole():
    """The control of the malformed answers below: the same server, each field as the bridge sends it."""
    server = HostileBuffer(lambda k, req: _well_formed())
    try:
        held = server.fetch()
    finally:
        server.close()
    assert [u for u, *_ in held.frames] == [1, 2]
    np.testing.assert_array_equal(np.stack([f for _, f, *_ in held.frames]), np.arange(12).reshape(2, 2, 3))
    assert held.rows == {1: (0.0, 0.0), 2: (1e-7, 0.0), 3: (2e-7, 0.0)}


def _looping(k: int, req: Any) -> dict[str, Any]:
    """``next`` 0 again and again (no progress); the 5th request is refused, so that a client that loops fails."""
    return _well_formed(next=0) if k < 5 else {"error": "asked 5 times for the same chunk"}


@pytest.mark.parametrize(("answer", "options", "field"), [
    (lambda k, req: _well_formed(dtype="not-a-type"), {}, "dtype"),  # before: TypeError from numpy
    (lambda k, req: _well_formed(dtype="|O"), {}, "dtype"),  # before: TypeError (an object array)
    (lambda k, req: _well_formed(dtype="<c8", value=np.zeros(96, np.uint8)), {}, "dtype"),  # before: taken
    (lambda k, req: _well_formed(value=np.zeros(47, np.uint8)), {}, "value"),  # before: ValueError (view)
    (lambda k, req: _well_formed(rows=-2, cols=-6), {}, "rows"),  # before: frames of -2 x -6 px
    (lambda k, req: _well_formed(rows=1, cols=1 << 20, value=np.zeros(8 << 20, np.uint8)), {}, "cols"),
    (lambda k, req: _well_formed(uniqueId=[2, 2]), {}, "uniqueId"),  # before: the same frame twice
    (lambda k, req: _well_formed(uniqueId=[1, 3]), {}, "uniqueId"),  # the job's own first frame, again
    (lambda k, req: _well_formed(series=9), {"series": 5}, "series"),  # before: another scan's frames taken
    (lambda k, req: _well_formed(series=-3), {}, "series"),  # before: taken (and asked as a first request again)
    (lambda k, req: _well_formed(row_m=[0.0]), {}, "row_m"),  # before: IndexError
    (_looping, {}, "next"),  # before: the same chunk asked for again and again
    (lambda k, req: _well_formed(), {"max_bytes": 16}, "value"),  # before: any size taken
], ids=["dtype-unknown", "dtype-object", "dtype-complex", "value-short", "rows-negative", "cols-absurd",
        "uniqueId-twice", "uniqueId-own-first", "series-other", "series-negative", "row_m-short", "next-no-progress",
        "over-max-bytes"])
def test_a_malformed_buffer_answer_is_a_live_source_error_naming_the_buffer_pv_and_the_field(answer, options, field):
    server = HostileBuffer(answer)
    try:
        with pytest.raises(LiveSourceError) as err:
            server.fetch(**options)
    finally:
        server.close()
    assert f"the bridge's buffer {HostileBuffer.PV}: a malformed answer: field '{field}'" in str(err.value)


def test_an_answer_of_another_structure_or_more_frames_than_the_jobs_bound_is_refused_by_name():
    from p4p.wrapper import Type, Value

    other = HostileBuffer(lambda k, req: Value(Type([("value", "d")]), {"value": 1.0}))  # an NTScalar-like answer
    try:
        with pytest.raises(LiveSourceError, match=rf"buffer {HostileBuffer.PV}: a malformed answer: field 'error' "
                                                  r"\(KeyError"):  # before: a bare KeyError
            other.fetch()
    finally:
        other.close()
    many = HostileBuffer(lambda k, req: _well_formed())
    try:
        with pytest.raises(LiveSourceError, match=rf"buffer {HostileBuffer.PV}: more than 1 frames before uniqueId "
                                                  r"3 \(-liveBuffer\)"):
            many.fetch(max_frames=1)
    finally:
        many.close()


def test_a_client_not_in_buffer_clients_is_refused_naming_its_address_and_the_setting_logged_once(caplog):
    """The buffer answers only the clients of ``[stream] buffer_clients`` (before: any pvAccess client reaching its
    port got the held frames). Here it allows a network the test's loopback client is not in."""
    import logging

    import ptychopy.pva_buffer as pb

    d = Detector(f"b{free_port()}:", 1 << 20, clients=["10.9.8.0/24"])
    caplog.set_level(logging.WARNING, logger=pb.log.name)
    try:
        d.post(range(0, 15))
        _wait_held(d, 15)
        for _ in range(2):
            with pytest.raises(LiveSourceError, match=rf"buffer {d.buffer.pv_name}: .*refuses the client "
                                                      r"127\.0\.0\.1: not in \[stream\] buffer_clients "
                                                      r"\(10\.9\.8\.0/24\)"):
                _fetch(d.buffer, 16)
        stats = d.buffer.stats()
    finally:
        d.close()
    assert stats["frames_held"] == 15 and not stats["released"] and stats["clients_refused"] == 2, stats
    logged = [r for r in caplog.records if "refuses the client 127.0.0.1" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING


def test_a_client_in_buffer_clients_gets_its_frames():
    d = Detector(f"b{free_port()}:", 1 << 20, clients=["10.9.8.0/24", "127.0.0.1"])
    try:
        d.post(range(0, 15))
        _wait_held(d, 15)
        source, (frames, indices, _) = d.late_job(15)
    finally:
        d.close()
    assert indices.tolist() == list(range(N)) and source.dropped == 0 and source.frames_from_buffer >= 14
    np.testing.assert_array_equal(frames, d.frames)


def test_a_peers_address_is_read_from_p4ps_host_port_ipv4_ipv6_and_ipv4_mapped():
    from ipaddress import ip_address

    from ptychopy.pva_buffer import peer_address

    assert peer_address("10.2.3.4:51234") == ip_address("10.2.3.4")
    assert peer_address("[::1]:51234") == ip_address("::1")
    assert peer_address("[::ffff:10.2.3.4]:51234") == ip_address("10.2.3.4")  # a dual-stack server's IPv4 client
    assert peer_address("somewhere:1") is None


def _take(source: PvaSource, taken: list[int], n: int, timeout_s: float = 20.0) -> None:
    """Poll ``source`` until it took ``n`` frames in all (their scan points appended to ``taken``)."""
    deadline = time.monotonic() + timeout_s
    while len(taken) < n:
        assert time.monotonic() < deadline, f"the job took {len(taken)} of {n} frames"
        batch = source.poll()
        if batch is None:
            time.sleep(0.01)
        else:
            taken.extend(batch.indices.tolist())


def _pixels_in(d: Detector) -> tuple[int, int]:
    """(pixel bytes, pixel updates) the buffer received since its start."""
    stats = d.buffer.stats()
    return stats["frame_bytes_in"], stats["pixel_updates_in"]


def _next_scan_held_whole(d: Detector, k: int = 8) -> None:
    """The scan ended; the next one's first ``k`` frames come before any BUSY reached the bridge: held (the pixel
    monitor open again from the end on), and a late job takes that scan whole."""
    first = d.buffer.series_now()
    d.streamer.post_status(1)
    wait_for(lambda: d.buffer.stats()["pixel_monitor"] == "open", 10, "the pixel monitor open again at the end")
    bytes_before, _ = _pixels_in(d)
    d.post(range(0, k))
    wait_for(lambda: _next_series(d, first, k), 10, f"the next scan's first {k} frames held")
    assert _pixels_in(d)[0] - bytes_before >= k * FRAME_BYTES
    source, (frames, indices, _) = d.late_job(k)
    assert indices.tolist() == list(range(N)) and source.dropped == 0 and source.frames_from_buffer >= k - 1
    np.testing.assert_array_equal(frames, d.frames)


def test_after_the_handover_the_bridge_receives_no_pixels_of_its_scan_the_job_every_frame_and_the_next_scan_is_held():
    """The bridge's standing monitor of the image PV asks for each frame's uniqueId and time stamp only; the pixels
    come on a second monitor open only while the scan's frames may still be held. Once the job took them, the rest of
    the scan reaches the bridge without pixels (before: every frame of every scan, in full: twice the detector's
    traffic), the job still gets every frame; the next scan's first frames are held again."""
    d = Detector(f"b{free_port()}:", 1 << 20)
    try:
        d.post(range(0, 15))  # the scan began before the job subscribed
        _wait_held(d, 15)
        source = d.source()
        taken: list[int] = []
        try:
            d.post(range(15, 20))
            _take(source, taken, 20)  # the held frames handed over, and its own
            assert source.frames_from_buffer >= 14
            wait_for(lambda: d.buffer.stats()["pixel_monitor"] == "closed", 10, "the pixel monitor closed")
            bytes_before, updates_before = _pixels_in(d)
            d.post(range(20, N))
            _take(source, taken, N)
            wait_for(lambda: d.buffer.stats()["frames_seen"] == N, 10, "the scan's last frames named at the bridge")
        finally:
            source.close()
        assert taken == list(range(N)) and source.dropped == 0
        # the 20 frames after the handover: none of their 20 x 256 pixel bytes (before: all of them)
        assert _pixels_in(d) == (bytes_before, updates_before), (_pixels_in(d), bytes_before, updates_before)
        _next_scan_held_whole(d)
    finally:
        d.close()


def test_past_the_bound_the_bridge_receives_no_pixels_of_its_scan_and_the_next_scan_is_held_again():
    d = Detector(f"b{free_port()}:", 10 * FRAME_BYTES)  # room for 10 frames
    try:
        d.post(range(0, 12))
        _wait_held(d, 12)
        assert d.buffer.stats()["full"]
        wait_for(lambda: d.buffer.stats()["pixel_monitor"] == "closed", 10, "the pixel monitor closed at the bound")
        bytes_before, updates_before = _pixels_in(d)
        d.post(range(12, N))
        wait_for(lambda: d.buffer.stats()["frames_seen"] == N, 10, "the scan's last frames named at the bridge")
        stats = d.buffer.stats()
        assert stats["frames_held"] == 10 and stats["uids_kept"] <= 11, stats
        assert _pixels_in(d) == (bytes_before, updates_before)  # before: 28 more frames' pixels, for nothing
        _next_scan_held_whole(d)
    finally:
        d.close()


def test_a_scan_whose_first_frames_come_while_the_pixel_monitor_is_closed_is_refused_by_name_and_kept_bounded():
    """The pixel monitor closed after the handover and nothing on the status PV said the scan ended or the next
    started: the next scan's first frames reach the bridge without their pixels. It holds none of that scan (a
    prefix with a gap is no use), a job asking is told why, and the frames seen are counted, not kept one by one."""
    d = Detector(f"b{free_port()}:", 1 << 20)
    try:
        d.post(range(0, 15))
        _wait_held(d, 15)
        source, (_frames, indices, _) = d.late_job(15)
        assert indices.tolist() == list(range(N)) and source.dropped == 0
        wait_for(lambda: d.buffer.stats()["pixel_monitor"] == "open", 10, "the pixel monitor open at the end")
        with d.buffer._cond:  # late_job posted the status 1: here as if that end never reached the bridge
            d.buffer._expect_scan = False
            d.buffer._cond.notify_all()
        wait_for(lambda: d.buffer.stats()["pixel_monitor"] == "closed", 10, "the pixel monitor closed")
        first = d.buffer.series_now()
        d.post(range(0, N))  # the next scan, its counter begun again, no status, no BUSY
        wait_for(lambda: d.buffer.stats()["frames_seen"] == N and d.buffer.series_now() == first + 1, 10,
                 "the next scan's frames named")
        stats = d.buffer.stats()
        assert stats["frames_held"] == 0 and stats["full"] and stats["uids_kept"] == 0, stats
        with pytest.raises(LiveSourceError, match=r"held only the first 0 frames of this scan \(the bridge's pixel "
                                                  r"monitor was closed when it came"):
            _fetch(d.buffer, 16)
    finally:
        d.close()


# -- the positions row a job's monitor finds at connect; a frame whose row never comes (issue 21) ------------------
def _plain_source(d: Detector, end_grace_s: float = 1.0) -> PvaSource:
    """A job's source subscribing now, without the bridge's buffer (started by hand before or during the scan)."""
    from p4p.client.thread import Context

    ctx = Context("pva", nt=False, conf=d.client_conf, useenv=False)
    return PvaSource(d.base, PlannedScan(d.planned_m, None, "test"), connect_s=10, end_grace_s=end_grace_s, ctx=ctx)


def _post_without_row(d: Detector, missing: int) -> None:
    """The whole scan, every frame after its row but the row of scan point ``missing`` never posted."""
    for j in range(N):
        if j != missing:
            d.streamer.post_positions([1 + j], d.planned_m[j:j + 1])
        d.streamer.post_frame(1 + j, d.frames[j])


def test_a_frame_whose_row_was_the_value_at_connect_is_taken_with_it_once_the_next_row_continues_the_scan(detector):
    """The job's positions monitor connects after the row of its first frame was posted, before the frame (no
    buffer): the row is the value at connect. Before, it was never taken and the frame waited for it forever (the
    job never ended)."""
    _job_after_rows(detector, range(0, 1), _plain_source)  # its positions monitor finds row 1 at connect


def test_a_mid_scan_jobs_second_frame_whose_row_was_the_value_at_connect_is_taken_with_the_buffers_frames(detector):
    """The job subscribes mid-scan after the rows of its first two frames were posted, before their frames: its
    positions monitor finds the second's row at connect; the buffer gives the rows of the frames before the first
    and the first's (``through_row_m``), not the second's. Before, the second frame waited for its row forever
    (the benchmark's scan that hung at 899 of 900 frames)."""
    detector.post(range(0, 10))
    _wait_held(detector, 10)
    # rows 11 and 12 (scan points 10, 11) posted: the positions monitor finds row 12 at connect
    source = _job_after_rows(detector, range(10, 12), Detector.source)
    assert source.frames_from_buffer == 10


def test_the_row_held_at_connect_from_the_scan_before_is_never_given_to_this_scans_frame_of_its_uniqueid(detector):
    """A job subscribing between scans finds the scan before's last row (uniqueId N, other positions) at connect;
    this scan's frame N, come before its own row, waits for that row instead of taking the scan before's."""
    detector.post(range(N), scale=2.0)  # the scan before: uniqueIds 1..N, other positions
    detector.streamer.post_status(1)
    source = _plain_source(detector)  # connected: its positions monitor found the scan before's row N
    try:
        detector.streamer.post_status(0)
        detector.post(range(N - 1))
        detector.streamer.post_frame(N, detector.frames[N - 1])  # before its row
        taken = []
        deadline = time.monotonic() + 10
        while sum(len(b) for b in taken) < N - 1:
            assert time.monotonic() < deadline, f"{sum(len(b) for b in taken)} frames"
            batch = source.poll()
            taken += [batch] if batch is not None else []
            time.sleep(0.01)
        time.sleep(0.3)
        assert source.poll() is None  # frame N waits for its row
        detector.streamer.post_positions([N], detector.planned_m[N - 1:N])
        wait_for(lambda: taken.append(source.poll()) or taken[-1] is not None, 10, "frame N with its row")
    finally:
        source.close()
    last = taken[-1]
    assert last.indices.tolist() == [N - 1]
    np.testing.assert_allclose(last.positions_m, detector.planned_m[N - 1:N])


def test_a_frame_whose_row_never_comes_is_dropped_by_uniqueid_after_the_scans_end_and_grace_not_waited_for_forever(
        detector):
    """Before, the frame waited for its row forever: the source said acquiring after the scan's end and the job
    never ended (or ended stalled, the frame not named)."""
    from reconstruction.live.run import LiveSummary

    source = _plain_source(detector, end_grace_s=0.5)
    try:
        _post_without_row(detector, missing=5)
        detector.streamer.post_status(1)
        _frames, indices, positions = _drain(source, timeout_s=10)
    finally:
        source.close()
    assert indices.tolist() == [j for j in range(N) if j != 5]
    np.testing.assert_allclose(positions, np.delete(detector.planned_m, 5, axis=0))
    assert source.dropped == 1 and "uniqueId 6" in source.dropped_detail
    label = LiveSummary("pva", ENDED, N, N - 1, source.dropped, source.dropped_detail).label()
    assert label == (f"partial: scan ended early after {N - 1} of {N} frames, 1 dropped (1 without a positions row on "
                     f"PV {source.address.positions}: uniqueId 6)")


def test_a_last_frame_whose_row_never_comes_counts_as_dropped_by_uniqueid_once_the_stream_is_quiet(detector):
    """No end on the status PV (the feed's -liveStall ends the stream): the frame still waiting once nothing came
    for the grace is counted and named. Before, a frame past the newest one taken was not counted at all."""
    source = _plain_source(detector, end_grace_s=0.3)
    try:
        _post_without_row(detector, missing=N - 1)
        got = 0
        deadline = time.monotonic() + 10
        while got < N - 1:
            assert time.monotonic() < deadline, f"{got} frames"
            batch = source.poll()
            got += len(batch) if batch is not None else 0
            time.sleep(0.01)
        assert source.dropped == 0  # still within the grace: waiting, not lost
        wait_for(lambda: source.dropped == 1, 5, "the frame counted dropped")
        assert f"uniqueId {N}" in source.dropped_detail
    finally:
        source.close()

"""Live sources and the feed in one process: the replay's pace, the feed's refusals (frame index outside the plan,
changed frame shape, full buffer) each naming the frame and the source, the stall, and a streaming LSQML run
over a replay."""

from __future__ import annotations

import time

import numpy as np
import pytest

from reconstruction.io.writers import write_frames
from reconstruction.live import ENDED, STALLED, FrameBatch, LiveFeed, LiveSourceError, PlannedScan, open_live_source
from reconstruction.live.replay import ReplaySource
from reconstruction.live.run import StreamingRun
from reconstruction.live.swmr import FRAME_INDEX, PLANNED_POSITIONS, POSITIONS, STATUS, SwmrSource
from reconstruction.parameters import Parameters
from reconstruction.simulate import simulate_from_parameters

SCAN = "./ptycho -size=32 -scanDims=8,8 -step=150e-9,150e-9 -beamSize=500e-9 -photons=1e6 -seed=0"


class ListSource:
    """Hands out the given batches one per poll, then says ``final``."""

    name = "list source"

    def __init__(self, batches: list[FrameBatch], n_planned: int, final: str = ENDED):
        self.batches = list(batches)
        self.final = final
        self.planned = PlannedScan(np.zeros((n_planned, 2)), None, "test")

    def poll(self) -> FrameBatch | None:
        return self.batches.pop(0) if self.batches else None

    def state(self) -> str:
        return self.final if not self.batches else "acquiring"

    def close(self) -> None:
        pass


class SlowSource(ListSource):
    """One batch every 0.2 s: epochs run between arrivals."""

    def poll(self) -> FrameBatch | None:
        time.sleep(0.2)
        return super().poll()


def _batch(indices: list[int], shape: tuple[int, int] = (4, 4)) -> FrameBatch:
    return FrameBatch(np.ones((len(indices), *shape), np.float32), np.asarray(indices, dtype=np.int64))


def _drain(feed: LiveFeed, timeout_s: float = 5.0) -> list[FrameBatch]:
    out: list[FrameBatch] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out += feed.take()
        if feed.finished:
            return out + feed.take()
        time.sleep(0.01)
    raise AssertionError("the feed did not finish")


def test_the_feed_refuses_a_frame_index_outside_the_plan_naming_it_and_the_source():
    feed = LiveFeed(ListSource([_batch([0, 1]), _batch([9])], 4), stall_s=5, max_frames=100).start()
    with pytest.raises(LiveSourceError, match=r"list source, frame index 9: outside the planned scan of 4 points"):
        _drain(feed)


def test_the_feed_refuses_a_changed_frame_shape_naming_the_frame():
    feed = LiveFeed(ListSource([_batch([0]), _batch([1], (5, 4))], 4), stall_s=5, max_frames=100).start()
    with pytest.raises(LiveSourceError, match=r"list source, frame 1: 5x4 px; earlier frames are 4x4 px"):
        _drain(feed)


def test_a_full_buffer_stops_the_feed_with_an_error_instead_of_dropping_frames():
    feed = LiveFeed(ListSource([_batch([0, 1]), _batch([2, 3])], 4), stall_s=5, max_frames=3).start()
    time.sleep(0.3)  # nobody takes: the second batch finds the buffer full
    assert feed.finished
    assert [b.indices.tolist() for b in feed.take()] == [[0, 1]]
    with pytest.raises(LiveSourceError, match=r"frame 2: the host buffer of 3 frames \(-liveBuffer\) is full"):
        feed.take()


def test_no_frame_for_the_stall_time_ends_the_stream_as_stalled():
    source = ListSource([_batch([0])], 4, final="acquiring")
    t0 = time.monotonic()
    feed = LiveFeed(source, stall_s=0.3, max_frames=100).start()
    got = _drain(feed)
    assert feed.outcome == STALLED and time.monotonic() - t0 >= 0.3 and len(got) == 1


def test_the_replay_releases_frames_at_its_rate(tmp_path):
    frames = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    write_frames(tmp_path / "f.h5", frames)
    src = ReplaySource(tmp_path / "f.h5", "/entry/data/data", PlannedScan(np.zeros((40, 2)), None, "test"), 200.0)
    t0 = time.monotonic()
    got = []
    while src.state() != ENDED:
        b = src.poll()
        if b is not None:
            got.append(b)
        time.sleep(0.005)
    took = time.monotonic() - t0
    indices = np.concatenate([b.indices for b in got])
    assert indices.tolist() == list(range(40)) and len(got) > 5
    np.testing.assert_array_equal(np.concatenate([b.frames for b in got]), frames)
    assert 39 / 200 <= took < 39 / 200 + 0.5


def test_a_streaming_lsqml_run_over_a_replay_uses_every_frame_and_converges(tmp_path):
    params = Parameters.from_cmdstr(SCAN)
    sim = simulate_from_parameters(params)
    write_frames(tmp_path / "scan.h5", sim.data.intensities)
    live = params.replace({"data.file_pattern": str(tmp_path / "scan.h5"), "data.live_source": "replay",
                           "data.live_rate_hz": 400.0, "data.live_finish_iterations": 15,
                           "preprocessing.sqrt_data": True, "reconstruction.algorithm": "LSQML",
                           "reconstruction.update_probe_from": 2, "reconstruction.device": "cpu"})
    source = open_live_source(live)
    try:
        run = StreamingRun(live, source)
        result = run.run()
    finally:
        source.close()
    assert run.summary.outcome == ENDED and run.summary.received == 64 and not run.summary.partial
    assert result.positions_px.shape == (64, 2) and result.inputs["live"]["frames_dropped"] == 0
    finishing = result.errors[-15:]  # the epochs over all 64 frames
    assert finishing[-1] < 0.8 * finishing[0]


def _ndfile_like(path, frames: np.ndarray, **extra: np.ndarray) -> None:
    """A finished file as NDFileHDF5 writes it (libver latest, frames only) plus ``extra`` datasets."""
    import h5py

    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("/entry/data/data", data=frames, maxshape=(None, *frames.shape[1:]),
                         chunks=(1, *frames.shape[1:]))
        for name, value in extra.items():
            f.create_dataset(name, data=value)


def test_a_file_with_frames_only_ends_when_the_planned_frames_are_there(tmp_path):
    frames = np.ones((6, 4, 4), np.float32)
    _ndfile_like(tmp_path / "nd.h5", frames)
    plan = PlannedScan(np.zeros((6, 2)), None, "parameters")
    src = SwmrSource(tmp_path / "nd.h5", "/entry/data/data", plan, wait_s=1)
    try:
        assert src.state() == "acquiring" and src.planned.frame_shape == (4, 4)
        batch = src.poll()
        assert batch is not None and batch.indices.tolist() == list(range(6)) and batch.positions_m is None
        assert src.state() == ENDED and src.poll() is None
    finally:
        src.close()


def test_a_swmr_file_with_a_frame_index_outside_the_plan_is_refused_naming_the_file(tmp_path):
    _ndfile_like(tmp_path / "bad.h5", np.ones((3, 4, 4), np.float32),
                 **{FRAME_INDEX: np.array([0, 1, 7]), STATUS: np.array([1], np.int8),
                    PLANNED_POSITIONS: np.zeros((3, 2))})
    src = SwmrSource(tmp_path / "bad.h5", "/entry/data/data", PlannedScan(np.zeros((9, 2)), None, "p"), wait_s=1)
    try:
        assert src.planned.n_positions == 3  # the file's plan wins over the parameters'
        with pytest.raises(LiveSourceError, match=rf"file {tmp_path / 'bad.h5'}, dataset /entry/data/data, frame "
                                                  r"index 7: outside the planned scan of 3 points"):
            _drain(LiveFeed(src, stall_s=5, max_frames=100).start())
    finally:
        src.close()


def test_a_missing_swmr_file_is_refused_after_the_wait_naming_it(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(LiveSourceError, match=rf"file {tmp_path / 'none.h5'}: cannot be opened for SWMR reading "
                                              r"within 0.3 s \(-liveStall\)"):
        SwmrSource(tmp_path / "none.h5", "/entry/data/data", PlannedScan(np.zeros((1, 2)), None, "p"), wait_s=0.3)
    assert time.monotonic() - t0 >= 0.3


def test_measured_positions_growing_beside_the_frames_are_used_instead_of_the_plan(tmp_path):
    from reconstruction.positions import positions_m_from_parameters, positions_px_from_parameters

    params = Parameters.from_cmdstr(SCAN)
    planned_m = positions_m_from_parameters(params)
    measured_m = planned_m.copy()
    measured_m[27, 0] += 2 * params.pixel_size_m  # scan point 27 was 2 px lower than planned
    _ndfile_like(tmp_path / "scan.h5", simulate_from_parameters(params).data.intensities,
                 **{POSITIONS: measured_m, PLANNED_POSITIONS: planned_m, STATUS: np.array([1], np.int8)})
    live = params.replace({"data.file_pattern": str(tmp_path / "scan.h5"), "data.live_source": "swmr",
                           "data.live_finish_iterations": 1, "preprocessing.sqrt_data": True,
                           "reconstruction.device": "cpu"})
    source = open_live_source(live)
    try:
        result = StreamingRun(live, source).run()
    finally:
        source.close()
    expected = np.floor(positions_px_from_parameters(params) + 0.5)
    expected[27, 0] += 2
    np.testing.assert_allclose(result.positions_px, expected)


def test_a_cycled_replay_plays_a_long_scan_from_a_short_file(tmp_path):
    frames = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    write_frames(tmp_path / "short.h5", frames)
    plan = PlannedScan(np.zeros((12, 2)), None, "test")
    with pytest.raises(LiveSourceError, match="holds 5 frames; the planned scan has 12"):
        ReplaySource(tmp_path / "short.h5", "/entry/data/data", plan, 1e6)
    source = ReplaySource(tmp_path / "short.h5", "/entry/data/data", plan, 1e6, cycle=True)
    try:
        source.poll()
        time.sleep(0.01)
        batch = source.poll()
    finally:
        source.close()
    assert batch is not None and batch.indices.tolist() == list(range(1, 12)) and source.state() == ENDED
    np.testing.assert_array_equal(batch.frames, frames[np.arange(1, 12) % 5])


def test_a_live_window_makes_each_epoch_while_acquiring_visit_only_the_newest_frames():
    from reconstruction.positions import positions_m_from_parameters

    params = Parameters.from_cmdstr(SCAN)
    sim = simulate_from_parameters(params)
    batches = [FrameBatch(sim.data.intensities[j:j + 16], np.arange(j, j + 16)) for j in range(0, 64, 16)]
    live = params.replace({"data.live_window_frames": 20, "data.live_finish_iterations": 2,
                           "reconstruction.algorithm": "ePIE", "reconstruction.device": "cpu"})
    shown: list[tuple[int, int]] = []  # (first slot, slots the engine state shows) at each exposure

    class Recording(StreamingRun):
        def _expose(self, first: int = 0) -> None:
            super()._expose(first)
            assert self.rec is not None
            shown.append((first, self.rec.state.n_positions))

    source = SlowSource(batches, 64)
    source.planned = PlannedScan(positions_m_from_parameters(params), None, "parameters")
    run = Recording(live, source)
    result = run.run()
    assert run.summary.received == 64 and result.positions_px.shape == (64, 2)
    windowed = [(first, n) for first, n in shown if first > 0]
    assert windowed and all(n == 20 for _first, n in windowed)  # the newest 20 of 32, 48, 64 frames
    assert {first + 20 for first, _n in windowed} <= {32, 48, 64}
    assert shown[-1] == (0, 64)  # the finishing epochs visit every frame


def test_a_pvaccess_source_is_refused_here_naming_where_it_is_opened():
    live = Parameters.from_cmdstr(SCAN).replace({"data.live_source": "pva://D:Pva1:Image?scan=D:Scan:"})
    with pytest.raises(LiveSourceError, match=r"pva://D:Pva1:Image\?scan=D:Scan:: a pvAccess source is opened by "
                                              r"ptychopy.live.open_source"):
        open_live_source(live)


def test_subpixel_windows_follow_the_positions_of_the_frames_arrived_in_arrival_order():
    from reconstruction.positions import positions_m_from_parameters

    params = Parameters.from_cmdstr(SCAN)
    sim = simulate_from_parameters(params)
    order = np.random.default_rng(1).permutation(64)
    batches = [FrameBatch(sim.data.intensities[order[j:j + 16]], order[j:j + 16]) for j in range(0, 64, 16)]
    live = params.replace({"reconstruction.subpixel_windows": True, "data.live_finish_iterations": 1,
                           "reconstruction.algorithm": "ePIE", "reconstruction.device": "cpu"})

    source = SlowSource(batches, 64)
    source.planned = PlannedScan(positions_m_from_parameters(params), None, "parameters")
    run = StreamingRun(live, source)
    seen: list[bool] = []

    def check(_progress, summary) -> None:
        if summary.finish_iterations == 0:  # while acquiring: the slots are in arrival order
            st = run.rec.state
            seen.append(st.positions_px.shape == (run._k, 2)
                        and np.allclose(st.positions_px, run.planned_px[run._indices[:run._k]]))

    run.run(check)
    assert seen and all(seen)


def test_a_fifo_named_as_the_live_file_is_refused_at_once_instead_of_blocking_the_worker(tmp_path):
    """HDF5 opens a FIFO like a file and blocks in open() until a writer comes, holding the GIL: the whole worker
    process (its heartbeat, and in the embedded mode the web server) stops, beyond the reach of -liveStall and of a
    cancel. The SWMR source and the replay (the batch reader's open_file) refuse a path that is not a regular file
    at once, naming it. Run in a child process: on a blocking open() it is killed after 20 s."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "scan.h5"
    os.mkfifo(fifo)
    program = f"""
import numpy as np
from reconstruction.live import PlannedScan
from reconstruction.live.replay import ReplaySource
from reconstruction.live.swmr import SwmrSource
plan = PlannedScan(np.zeros((4, 2)), None, "p")
for make in (lambda: SwmrSource({str(fifo)!r}, "/entry/data/data", plan, wait_s=2.0),
             lambda: ReplaySource({str(fifo)!r}, "/entry/data/data", plan, 10.0)):
    try:
        make()
    except Exception as exc:
        print(type(exc).__name__, exc)
"""
    try:
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("opening a FIFO blocked the process")
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(str(fifo) in line and "is not a regular file" in line for line in lines), \
        (done.stdout, done.stderr)

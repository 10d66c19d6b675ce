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

"""Merge of region objects and the overlap exchange through the single-process communicator."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from reconstruction.multigpu.exchange import (
    CommunicatorAborted,
    LocalCommunicator,
    as_float32_view,
    paste,
    share_object,
    share_probe,
)
from reconstruction.multigpu.merge import merge_objects, split_object
from reconstruction.multigpu.partition import Window, partition
from reconstruction.simulate import raster_px
from reconstruction.test_object import make_test_object

SHAPE = (60, 80)
WINDOWS = [Window(0, 35, 0, 80), Window(25, 60, 0, 50), Window(25, 60, 40, 80)]


def _run_ranks(size: int, fn):
    """fn(rank) for every rank, one thread each, results in rank order."""
    with ThreadPoolExecutor(max_workers=size) as pool:
        return list(pool.map(fn, range(size)))


def test_merge_of_a_known_object_split_into_regions_is_exact() -> None:
    truth = make_test_object(SHAPE, seed=3)
    rng = np.random.default_rng(0)
    parts = split_object(truth, WINDOWS)
    weights = [rng.uniform(0.1, 5.0, size=w.shape) for w in WINDOWS]
    merged = merge_objects(parts, weights, WINDOWS, SHAPE, fill=0)
    np.testing.assert_allclose(merged, truth, rtol=0, atol=1e-6)


def test_merge_of_regions_cut_by_the_partition_is_exact() -> None:
    corners = np.floor(raster_px((8, 10), 4.0) + 0.5)
    n = 16
    shape = (int(corners[:, 0].max()) + n + 1, int(corners[:, 1].max()) + n + 1)
    truth = make_test_object(shape, seed=5)
    regions = partition(corners, n, shape, 4, overlap_px=6, grid=(2, 2))
    weights = [np.ones(r.window.shape) for r in regions]
    merged = merge_objects(split_object(truth, [r.window for r in regions]), weights,
                           [r.window for r in regions], shape, fill=7)
    covered = np.zeros(shape, bool)
    for r in regions:
        covered[r.window.slices] = True
    np.testing.assert_allclose(merged[covered], truth[covered], atol=1e-6)
    assert np.all(merged[~covered] == 7)


def test_merge_weights_by_illumination_and_handles_dark_pixels() -> None:
    a, b = Window(0, 4, 0, 6), Window(0, 4, 3, 9)
    oa, ob = np.full(a.shape, 1.0 + 0j), np.full(b.shape, 3.0 + 0j)
    wa, wb = np.full(a.shape, 3.0), np.full(b.shape, 1.0)
    wa[:, 5] = 0  # global column 5: a is dark
    wb[:, :2] = 0  # global columns 3-4: b is dark (b's local column k is global k + 3)
    wa[0, 4] = 0  # global pixel (0, 4): both dark -> plain mean
    merged = merge_objects([oa, ob], [wa, wb], [a, b], (4, 9), fill=-1)
    assert merged[1, 0] == 1.0  # a alone
    assert merged[1, 8] == 3.0  # b alone
    assert merged[1, 5] == 3.0  # a dark
    assert merged[1, 3] == 1.0  # b dark (weight 0)
    np.testing.assert_allclose(merged[1, 4], 1.0)  # b dark
    assert merged[0, 4] == 2.0  # nobody lit: plain mean


def test_local_communicator_sums_in_threads_deterministically() -> None:
    comm = LocalCommunicator(4)
    data = [np.random.default_rng(k).standard_normal((3, 5)).astype(np.float32) for k in range(4)]

    def rank_fn(rank: int) -> np.ndarray:
        buf = data[rank].copy()
        for _ in range(3):  # repeated calls reuse the barrier safely
            comm.allreduce_sum(rank, buf)
        return buf

    out = _run_ranks(4, rank_fn)
    expected = np.sum(data, axis=0)
    for _ in range(2):
        expected = 4 * expected
    for buf in out:
        np.testing.assert_allclose(buf, expected, rtol=1e-5)
        assert np.array_equal(buf, out[0])  # every rank holds the same bits


def test_local_communicator_sums_complex_buffers() -> None:
    comm = LocalCommunicator(2)
    out = _run_ranks(2, lambda r: _allreduced(comm, r, np.full(3, 1 + 2j * r, dtype=np.complex64)))
    np.testing.assert_array_equal(out[0], np.full(3, 2 + 2j, dtype=np.complex64))


def _allreduced(comm: LocalCommunicator, rank: int, buf: np.ndarray) -> np.ndarray:
    comm.allreduce_sum(rank, buf)
    return buf


def test_abort_releases_the_ranks_waiting_in_a_collective() -> None:
    comm = LocalCommunicator(3, timeout_s=30)
    errors: list[BaseException] = []

    def waiter(rank: int) -> None:
        try:
            comm.allreduce_sum(rank, np.zeros(2, np.float32))
        except CommunicatorAborted as exc:
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    comm.abort()  # rank 2 failed before its collective
    for t in threads:
        t.join(timeout=10)
    assert len(errors) == 2


def test_share_object_averages_the_overlap_weighted_by_illumination() -> None:
    shape = (4, 9)
    wins = [Window(0, 4, 0, 6), Window(0, 4, 3, 9)]
    comm = LocalCommunicator(2)
    objs = [np.full(w.shape, v, dtype=np.complex64) for w, v in zip(wins, (1 + 1j, 4 - 2j), strict=True)]
    weights = [np.full(wins[0].shape, 2.0, np.float32), np.full(wins[1].shape, 1.0, np.float32)]
    weights[1][:, 0] = 0  # global column 3: only region 0 lights it

    def rank_fn(rank: int) -> None:
        share_object(np, comm, rank, objs[rank], weights[rank], wins[rank], shape)

    _run_ranks(2, rank_fn)
    mixed = (2 * (1 + 1j) + 1 * (4 - 2j)) / 3
    np.testing.assert_allclose(objs[0][:, :3], 1 + 1j)  # only region 0 holds these
    np.testing.assert_allclose(objs[0][:, 3], 1 + 1j, rtol=1e-6)  # region 1 dark there
    np.testing.assert_allclose(objs[0][:, 4:], mixed, rtol=1e-6)
    np.testing.assert_allclose(objs[1][:, 1:3], mixed, rtol=1e-6)
    np.testing.assert_allclose(objs[1][:, 3:], 4 - 2j)
    np.testing.assert_allclose(objs[1][:, 0], 1 + 1j, rtol=1e-6)  # region 1 takes region 0's value


def test_share_object_keeps_pixels_nobody_lights() -> None:
    comm = LocalCommunicator(1)
    obj = np.full((3, 3), 2 + 0j, np.complex64)
    share_object(np, comm, 0, obj, np.zeros((3, 3), np.float32), Window(0, 3, 0, 3), (3, 3))
    assert np.all(obj == 2)


def test_share_probe_averages_over_regions() -> None:
    comm = LocalCommunicator(3)
    probes = [np.full((2, 4, 4), k + 1j, np.complex64) for k in range(3)]
    _run_ranks(3, lambda r: share_probe(np, comm, r, probes[r]))
    for p in probes:
        np.testing.assert_allclose(p, 1 + 1j)


def test_paste_and_float32_view() -> None:
    v = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = paste(np, (4, 5), Window(1, 3, 2, 5), v)
    assert out.sum() == v.sum() and np.array_equal(out[1:3, 2:5], v)
    c = np.array([1 + 2j], np.complex64)
    np.testing.assert_array_equal(as_float32_view(c), [1, 2])
    with pytest.raises(TypeError):
        as_float32_view(np.zeros(2, np.float64))

"""SplitReconstruction on G NumPy "devices": the same object as the one-device run, no seams, the driver's
interface. DM all-reduces its sums (exact up to rounding); ePIE and LSQML exchange the overlap periodically."""

from __future__ import annotations

import numpy as np
import pytest
from multigpu_support import SIZE_PX, run_kwargs

from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.errors import InputDataError, SessionStateError
from reconstruction.metrics import object_nrmse, remove_ambiguities
from reconstruction.multigpu import SplitReconstruction, from_parameters, merge_objects
from reconstruction.multigpu.exchange import LocalCommunicator
from reconstruction.multigpu.shared_dm import SharedDM
from reconstruction.parameters import Parameters
from reconstruction.preview import Preview
from reconstruction.state import Progress, Result


def _split(scan, algorithm: str, iterations: int, g: int, **kw) -> SplitReconstruction:
    batch = kw.pop("batch_size", 0)
    return SplitReconstruction(scan.data.intensities, scan.data.positions_px, devices=kw.pop("devices", list(range(g))),
                               **run_kwargs(algorithm, iterations, batch), **kw)


@pytest.mark.parametrize(("g", "grid"), [(2, None), (4, None), (4, (2, 2))])
def test_dm_with_summed_projections_matches_one_device_nrmse_below_0_02(split_scan, reference, g, grid) -> None:
    one, region = reference("DM", 30)
    split = _split(split_scan, "DM", 30, g, grid=grid)
    assert split.exchange == "sums"
    result = split.run()
    nrmse = object_nrmse(one, result.object, region)
    assert nrmse <= 0.02, nrmse


def test_dm_split_iterations_equal_the_one_device_iterations_up_to_rounding(split_scan) -> None:
    d = split_scan.data
    one = Reconstruction(d.intensities, d.positions_px, device="cpu", **run_kwargs("DM", 6))
    split = _split(split_scan, "DM", 6, 4)
    for _ in range(6):  # probe updates start at iteration 5
        p1, p2 = one.step(), split.step()
        assert abs(p1.error - p2.error) <= 1e-6 * p1.error
    o1 = one.object()
    for obj, reg in zip(split.region_objects(), split.regions, strict=True):
        np.testing.assert_allclose(obj, o1[reg.window.slices], atol=2e-4 * np.abs(o1).max())
    np.testing.assert_allclose(split.probe(), one.probe(), atol=2e-4 * np.abs(one.probe()).max())


@pytest.mark.parametrize("g", [2, 4])
def test_epie_with_overlap_exchange_every_iteration_matches_one_device_nrmse_below_0_02(split_scan, reference,
                                                                                        g) -> None:
    one, region = reference("ePIE", 30)
    result = _split(split_scan, "ePIE", 30, g, overlap_px=8, share_frequency=1).run()
    nrmse = object_nrmse(one, result.object, region)
    assert nrmse <= 0.02, nrmse


def test_epie_with_exchange_every_5_iterations_nrmse_below_0_02(split_scan, reference) -> None:
    one, region = reference("ePIE", 30)
    result = _split(split_scan, "ePIE", 30, 2, overlap_px=8, share_frequency=5).run()
    assert object_nrmse(one, result.object, region) <= 0.02


def test_lsqml_with_overlap_exchange_nrmse_below_0_025(split_scan, reference) -> None:
    """LSQML's mini-batches differ between one device and the regions, so the runs agree less closely:
    NRMSE 0.016 here (overlap n/2, exchange every iteration, 60 iterations), and as close to the truth."""
    one, region = reference("LSQML", 60, 4)
    result = _split(split_scan, "LSQML", 60, 2, overlap_px=SIZE_PX // 2, share_frequency=1, batch_size=4).run()
    assert object_nrmse(one, result.object, region) <= 0.025
    assert object_nrmse(split_scan.object_truth, result.object, region) <= 0.025


def _border_lines(split: SplitReconstruction) -> list[tuple[int, int]]:
    """(axis, index) of every region border: window edges and, per cut, the centre line of the windows of
    the last positions each side owns (the cut plus n/2)."""
    lines = []
    for reg in split.regions:
        lines += [(0, reg.window.r0), (0, reg.window.r1), (1, reg.window.c0), (1, reg.window.c1)]
        lines += [(k // 2, int(cut) + SIZE_PX // 2) for k, cut in enumerate(reg.cell_px) if np.isfinite(cut)]
    return lines


def _seam_ratio(scan, split: SplitReconstruction, obj: np.ndarray, region: np.ndarray, band_px: int = 3) -> float:
    """Mean error against the truth within ``band_px`` of region borders over the mean error elsewhere."""
    err = np.abs(remove_ambiguities(scan.object_truth, obj, region) - scan.object_truth)
    near = np.zeros(region.shape, bool)
    for axis, line in _border_lines(split):
        if 0 < line < region.shape[axis]:
            sl = slice(max(0, line - band_px), line + band_px)
            near[(sl, slice(None)) if axis == 0 else (slice(None), sl)] = True
    near &= region
    assert near.sum() > 100 and (region & ~near).sum() > 100
    return float(err[near].mean() / err[region & ~near].mean())


def _jump_ratio(scan, split: SplitReconstruction, obj: np.ndarray, region: np.ndarray, band_px: int = 2) -> float:
    """How much the error field steps between neighbouring rows at row borders, over the steps elsewhere:
    a seam is a step in the error."""
    e = remove_ambiguities(scan.object_truth, obj, region) - scan.object_truth
    steps = np.abs(np.diff(e, axis=0))  # steps[i]: between rows i and i + 1
    ok = region[1:] & region[:-1]
    near = np.zeros(ok.shape, bool)
    for axis, line in _border_lines(split):
        if axis == 0 and 0 < line < region.shape[0]:
            near[max(0, line - 1 - band_px):line + band_px] = True
    near &= ok
    assert near.sum() > 100 and (ok & ~near).sum() > 100
    return float(steps[near].mean() / steps[ok & ~near].mean())


@pytest.mark.parametrize(("algorithm", "iterations", "kw"), [
    ("ePIE", 30, {"overlap_px": 8, "share_frequency": 1}),
    ("DM", 30, {"grid": (2, 2)}),
])
def test_no_seams_error_near_region_borders_at_most_1_5_times_elsewhere(split_scan, reference, algorithm,
                                                                        iterations, kw) -> None:
    _, region = reference(algorithm, iterations)
    split = _split(split_scan, algorithm, iterations, 4, **kw)
    split.run()
    obj = split.object()
    assert _seam_ratio(split_scan, split, obj, region) <= 1.5
    assert _jump_ratio(split_scan, split, obj, region) <= 1.5


def test_the_seam_measure_flags_a_hard_cut_between_unshared_regions(split_scan, reference) -> None:
    """Control for the test above: regions without halo or exchange, pasted one over the other, step."""
    _, region = reference("ePIE", 30)
    split = _split(split_scan, "ePIE", 30, 4, overlap_px=0, share_frequency=1000, grid=(4, 1))
    split.run()
    objs = split.region_objects()
    first_wins = [np.full(o.shape, 1e-6 ** k) for k, o in enumerate(objs)]  # the first region holding a pixel wins
    hard = merge_objects(objs, first_wins, [r.window for r in split.regions], split.object_shape)
    assert _jump_ratio(split_scan, split, hard, region) > 1.5


def test_partitions_in_sequence_on_one_device_give_the_same_bits(split_scan) -> None:
    """devices=[0, 0]: both regions share one device lock and take turns, waiting in the collective."""
    concurrent = _split(split_scan, "DM", 8, 2, devices=[0, 1]).run()
    sequential = _split(split_scan, "DM", 8, 2, devices=[0, 0]).run()
    assert np.array_equal(concurrent.object, sequential.object)
    assert concurrent.errors == sequential.errors


def test_explicit_single_process_communicator_is_the_same_code_path(split_scan) -> None:
    a = _split(split_scan, "ePIE", 4, 2, overlap_px=8, share_frequency=2).run()
    b = _split(split_scan, "ePIE", 4, 2, overlap_px=8, share_frequency=2, communicator=LocalCommunicator(2)).run()
    assert np.array_equal(a.object, b.object)


def test_periodic_exchange_changes_the_regions(split_scan) -> None:
    never = _split(split_scan, "ePIE", 4, 2, overlap_px=8, share_frequency=1000)
    every = _split(split_scan, "ePIE", 4, 2, overlap_px=8, share_frequency=2)
    never.run()
    every.run()
    (a0, a1), (b0, b1) = never.region_objects(), every.region_objects()
    ov = np.intersect1d(np.arange(never.regions[0].window.r0, never.regions[0].window.r1),
                        np.arange(never.regions[1].window.r0, never.regions[1].window.r1))
    r0, r1 = never.regions[0].window.r0, never.regions[1].window.r0
    gap_never = np.abs(a0[ov - r0] - a1[ov - r1]).mean()
    gap_every = np.abs(b0[ov - r0] - b1[ov - r1]).mean()
    assert gap_every < 0.5 * gap_never
    assert np.array_equal(every.recs[0].probe(), every.recs[1].probe())


def test_driver_interface(split_scan) -> None:
    split = _split(split_scan, "ePIE", 3, 2, overlap_px=8, share_frequency=1, time_limit_s=0)
    progresses = list(split)
    assert [p.iteration for p in progresses] == [1, 2, 3]
    assert all(isinstance(p, Progress) and np.isfinite(p.error) and p.iterations == 3 for p in progresses)
    assert split.done
    with pytest.raises(SessionStateError):
        split.step()
    result = split.result()
    assert isinstance(result, Result) and result.iterations == 3 and result.algorithm == "ePIE"
    assert result.object.shape == split.object_shape == (int(split.positions_px[:, 0].max()) + SIZE_PX + 1,) * 2
    assert result.probe.shape == (1, SIZE_PX, SIZE_PX) and result.object.dtype == np.complex64
    assert "2 regions on CPU" in result.device
    preview = split.preview(max_px=20)
    assert isinstance(preview, Preview) and max(preview.object_amplitude.shape) <= 20
    assert split.illumination().shape == split.object_shape
    split.close()
    with pytest.raises(SessionStateError):
        split.object()


def test_time_limit_stops_early(split_scan) -> None:
    split = _split(split_scan, "ePIE", 50, 2, overlap_px=4, time_limit_s=1e-9)
    assert len(list(split)) == 1 and split.stopped_early


def test_a_failing_region_stops_the_run_with_its_own_error(split_scan) -> None:
    split = _split(split_scan, "DM", 5, 2)

    def broken(iteration: int, update_probe: bool):
        raise RuntimeError("region 1 broke")

    split.recs[1].engine.iterate = broken  # region 0 is left waiting in its first collective
    with pytest.raises(RuntimeError, match="region 1 broke"):
        split.step()
    with pytest.raises(SessionStateError, match="failed"):
        split.step()


def test_bad_arguments_are_refused(split_scan) -> None:
    with pytest.raises(ValueError, match="sums"):
        _split(split_scan, "ePIE", 2, 2, exchange="sums")
    with pytest.raises(ValueError, match="exchange"):
        _split(split_scan, "ePIE", 2, 2, exchange="often")
    with pytest.raises(ValueError, match="share_frequency"):
        _split(split_scan, "ePIE", 2, 2, share_frequency=0)
    bad = split_scan.data.positions_px.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputDataError, match="finite"):
        SplitReconstruction(split_scan.data.intensities, bad, devices=[0, 1])
    with pytest.raises(TypeError, match="reference DM"):
        SharedDM.adopt(_split(split_scan, "ePIE", 2, 1).recs[0].engine, None)


def test_from_parameters_splits_only_for_two_or_more_devices() -> None:
    base = Parameters.from_cmdstr("./ptycho -simulate=1 -size=32 -scanDims=6,6 -algorithm=DM -i=3 -device=cpu "
                                  "-overlap=8 -shareFrequency=2")
    plain = from_parameters(base)
    assert isinstance(plain, Reconstruction)
    assert isinstance(from_parameters(base.replace({"multigpu.gpus": "3"})), Reconstruction)
    split = from_parameters(base.replace({"multigpu.gpus": "0,1"}))
    assert isinstance(split, SplitReconstruction) and len(split.regions) == 2
    assert split.backend_name == "cpu" and split.share_frequency == 2 and split.exchange == "sums"
    capped = from_parameters(base.replace({"multigpu.gpus": "0,1", "reconstruction.memory_cap_gib": 0.5}))
    assert [r.memory_cap_bytes for r in capped.recs] == [2**29, 2**29]  # -memCapGiB reaches every region
    one, two = plain.run(), split.run()
    region = one.object != 0
    assert object_nrmse(one.object, two.object, np.abs(one.object) > 0.1 * np.abs(one.object).max()) <= 0.02
    assert region.any()


@pytest.mark.parametrize("case", ["two probe modes", "per-frame mask"])
def test_dm_sums_stay_exact_with_probe_modes_and_per_frame_masks(split_scan, case) -> None:
    """Regions seed the extra probe mode identically and take their frames' masks: still the one-device run."""
    d = split_scan.data
    kw = dict(algorithm="DM", iterations=12, seed=3, beam_diameter_px=12.8,
              settings=EngineSettings(update_probe_from=3, update_modes_from=6))
    if case == "two probe modes":
        kw["probe_modes"] = 2
    else:
        mask = np.random.default_rng(0).random(d.intensities.shape) > 0.05
        mask[:, 0, 0] = True  # keep the strong zero-frequency pixel
        kw["valid_mask"] = mask
    one = Reconstruction(d.intensities, d.positions_px, device="cpu", **kw)
    r1 = one.run()
    r2 = SplitReconstruction(d.intensities, d.positions_px, devices=[0, 1, 2], **kw).run()
    region = np.abs(r1.object) > 0  # compared where the one-device object is defined
    assert object_nrmse(r1.object, r2.object, region & (np.abs(r1.object) > 0.1)) <= 1e-3
    np.testing.assert_allclose(r2.probe, r1.probe, atol=1e-3 * np.abs(r1.probe).max())
    assert abs(r1.errors[-1] - r2.errors[-1]) <= 1e-5 * r1.errors[-1]

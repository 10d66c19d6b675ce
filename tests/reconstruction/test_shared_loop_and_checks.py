"""The one-device run and the split run share one loop (IterativeRun.step) and one set of input checks
(reconstruction/inputs.py): same errors, same indices, same bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.errors import InputDataError, SessionStateError
from reconstruction.loop import IterativeRun
from reconstruction.multigpu import SplitReconstruction


def _both(data, intensities=None, positions=None, **kw):
    i = data.intensities if intensities is None else intensities
    p = data.positions_px if positions is None else positions
    yield lambda: Reconstruction(i, p, device="cpu", **kw)
    yield lambda: SplitReconstruction(i, p, devices=[0, 1], **kw)


def test_both_kinds_of_run_step_through_the_same_loop():
    assert Reconstruction.step is SplitReconstruction.step is IterativeRun.step
    assert Reconstruction.done is SplitReconstruction.done is IterativeRun.done


@pytest.mark.parametrize(("value", "message"), [(np.nan, r"NaN or infinite values \(first at frame 30, pixel \(2, 3\)"),
                                                (-1.0, r"negative values \(first at frame 30, pixel \(2, 3\)")])
def test_bad_values_are_reported_at_the_same_global_frame_by_both(tiny_scan, value, message):
    bad = tiny_scan.data.intensities.copy()
    bad[30, 2, 3] = value
    for make in _both(tiny_scan.data, intensities=bad):
        with pytest.raises(InputDataError, match=message):
            make()


def test_empty_frames_windows_outside_and_bad_shapes_are_refused_alike(tiny_scan):
    d = tiny_scan.data
    empty = d.intensities.copy()
    empty[[4, 7]] = 0
    outside = d.positions_px.copy()
    outside[5] = (-40, 0)
    cases = [(dict(intensities=empty), r"2 frame\(s\) hold no photons \(frames 4, 7\)"),
             (dict(positions=outside), r"position 5 at \(row -40, col 0\) puts its 32x32 window outside"),
             (dict(positions=d.positions_px[:-1]), r"35 positions for 36 diffraction patterns"),
             (dict(intensities=d.intensities[:, :, :16]), r"expected \(N, n, n\) with square patterns")]
    for kw, message in cases:
        for make in _both(d, **kw):
            with pytest.raises(InputDataError, match=message):
                make()


def test_both_stop_at_the_time_limit_and_refuse_a_step_past_the_end_alike(tiny_scan):
    for make in _both(tiny_scan.data, algorithm="ePIE", iterations=2):
        rec = make()
        progress = [p.iteration for p in rec]
        assert progress == [1, 2] and len(rec.errors) == len(rec.iteration_s) == 2 and rec.done
        with pytest.raises(SessionStateError, match=r"no iteration left to run \(all 2 ran\); iteration 2"):
            rec.step()
    for make in _both(tiny_scan.data, algorithm="ePIE", iterations=50, time_limit_s=1e-9):
        rec = make()
        rec.run()
        assert rec.iteration == 1 and rec.stopped_early == "time limit of 1e-09 s reached"


def test_both_refuse_the_same_settings(tiny_scan):
    for make in _both(tiny_scan.data, algorithm="DM", iterations=-1):
        with pytest.raises(ValueError, match="iterations=-1: must be >= 0"):
            make()

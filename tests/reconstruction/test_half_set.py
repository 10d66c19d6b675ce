"""-halfSet: a scan's two interleaved halves (the half-set FRC's two independent reconstructions)."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction import Parameters
from reconstruction.errors import InputDataError
from reconstruction.loading import half_set, load_scan
from reconstruction.scan_data import ScanData

CMD = "./ptycho -simulate=1 -size=32 -scanDims=6,6 -i=5 -device=cpu -photons=1e5"


def test_the_two_halves_are_the_interleaved_positions_in_one_object_frame() -> None:
    every = load_scan(Parameters.from_cmdstr(CMD))
    first = load_scan(Parameters.from_cmdstr(CMD + " -halfSet=1"))
    second = load_scan(Parameters.from_cmdstr(CMD + " -halfSet=2"))
    assert first.n_positions == second.n_positions == 18
    np.testing.assert_array_equal(first.positions_px, every.positions_px[0::2])
    np.testing.assert_array_equal(second.positions_px, every.positions_px[1::2])
    np.testing.assert_array_equal(second.intensities, every.intensities[1::2])
    assert first.source["half_set"] == 1 and second.source["half_set"] == 2


def test_one_pattern_of_a_half_is_its_own_and_one_past_the_half_is_named() -> None:
    from reconstruction.loading import load_pattern

    second = Parameters.from_cmdstr(CMD.replace("6,6", "5,7") + " -halfSet=2")  # 35 positions: the second half holds 17
    half = load_scan(second)
    np.testing.assert_array_equal(load_pattern(second, 16), half.intensities[16])
    with pytest.raises(ValueError, match=r"position 17: this scan has positions 0\.\.16"):
        load_pattern(second, 17)
    assert load_pattern(Parameters.from_cmdstr(CMD.replace("6,6", "5,7") + " -halfSet=1"), 17).shape == (32, 32)


def test_a_per_frame_mask_follows_and_bad_halves_are_named() -> None:
    data = ScanData(np.ones((5, 4, 4), np.float32), np.zeros((5, 2)), valid_mask=np.arange(80).reshape(5, 4, 4) > 7)
    assert half_set(data, 2).valid_mask.shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"-halfSet=3: must be 1 or 2"):
        half_set(data, 3)
    with pytest.raises(InputDataError, match=r"-halfSet=1: the scan has 3 positions; a half needs at least 2"):
        half_set(ScanData(np.ones((3, 4, 4), np.float32), np.zeros((3, 2))), 1)
    with pytest.raises(Exception, match="halfSet"):
        Parameters.from_cmdstr(CMD + " -halfSet=3")

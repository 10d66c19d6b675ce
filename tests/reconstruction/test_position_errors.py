"""Each scan position's Fourier error (the live view colours the scan by it): zero where the model is the truth,
largest where the object was damaged, and the chunked sweep measures the same values as one full pass."""

from __future__ import annotations

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.position_errors import PositionErrorSweep, position_errors
from reconstruction.simulate import simulate


@pytest.fixture(scope="module")
def truth_run():
    """A noise-free scan and a run whose object and probe are set to the truth."""
    sim = simulate(size_px=32, scan_dims=(6, 6), step_px=8, photons=0, seed=4)
    rec = Reconstruction(sim.data.intensities, sim.data.positions_px, algorithm="ePIE", iterations=1,
                         probe=sim.probe_truth, device="cpu", seed=0)
    assert rec.state.obj.shape == sim.object_truth.shape
    rec.state.obj[...] = sim.object_truth
    return sim, rec


def test_the_truth_has_no_error_and_a_damaged_window_has_the_largest(truth_run) -> None:
    sim, rec = truth_run
    st = rec.state
    everyone = np.arange(st.n_positions)
    exact = position_errors(st, everyone)
    assert exact.shape == (36,) and float(exact.max()) < 1e-3, exact.max()
    saved = st.obj.copy()
    try:
        r, c = int(st.rows[17]), int(st.cols[17])
        st.obj[r + 12 : r + 20, c + 12 : c + 20] *= 0.3  # damage the middle of position 17's window
        damaged = position_errors(st, everyone)
    finally:
        st.obj[...] = saved
    assert int(np.argmax(damaged)) == 17 and damaged[17] > 0.1
    untouched = [j for j in everyone if not (r - 20 < int(st.rows[j]) < r + 20 and c - 20 < int(st.cols[j]) < c + 20)]
    assert untouched and float(damaged[untouched].max()) < 1e-3  # windows that miss the damage keep no error
    kept = st.amplitudes[3].copy()
    try:
        st.amplitudes[3] = 0  # a slot a streaming run has not filled yet: no error rather than a huge one
        assert np.isnan(position_errors(st, np.array([2, 3]))).tolist() == [False, True]
    finally:
        st.amplitudes[3] = kept


def test_the_chunked_sweep_measures_every_shown_position_once_per_round(truth_run) -> None:
    _, rec = truth_run
    st = rec.state
    st.obj[...] *= np.exp(0.2j * np.random.default_rng(0).standard_normal(st.obj.shape)).astype(np.complex64)
    full = position_errors(st, np.arange(0, 36, 2))
    sweep = PositionErrorSweep(36, 2, 32, pixels=5 * 32 * 32)  # 18 shown, 5 a call: 4 calls a round
    assert sweep.chunk == 5 and sweep.calls_per_sweep == 4
    for call in range(1, 5):
        values = sweep.advance(st, iteration=call)
        assert int(np.isnan(values).sum()) == max(0, 18 - 5 * call)
    np.testing.assert_allclose(values, full, rtol=1e-5)
    # the fourth call took the last three and wrapped round to the first two; the next goes on from there
    assert sweep.measured_at.tolist() == [4, 4] + [1] * 3 + [2] * 5 + [3] * 5 + [4] * 3
    sweep.advance(st, iteration=9)
    assert sweep.measured_at[:8].tolist() == [4, 4] + [9] * 5 + [2]


def test_a_preview_carries_the_errors_and_the_chosen_positions_patterns(tiny_scan) -> None:
    d = tiny_scan.data
    rec = Reconstruction(d.intensities, d.positions_px, algorithm="ePIE", iterations=3, device="cpu", seed=0)
    rec.run()
    default = rec.preview()
    assert default.positions is not None and default.positions.errors is not None
    assert default.positions.errors.shape == (d.positions_px.shape[0],)  # 36 shown: one call measures all
    assert np.all(np.isfinite(default.positions.errors)) and np.all(default.positions.errors > 0)
    chosen = rec.preview(diffraction_position=0)
    assert chosen.diffraction.position == 0 != default.diffraction.position
    assert not np.array_equal(chosen.diffraction.measured, default.diffraction.measured)
    with pytest.raises(ValueError, match=r"diffraction_position=36: this scan has positions 0\.\.35"):
        rec.preview(diffraction_position=36)

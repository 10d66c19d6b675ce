"""What each algorithm's reported error measures, checked against what the engines actually feed into it."""

import numpy as np
import pytest

from reconstruction.driver import Reconstruction
from reconstruction.engines import IterationMetrics, error_measure


def _positions_measured(scan, algorithm, iterations, monkeypatch):
    """For each iteration, the sorted indices of the positions whose patterns entered the reported error."""
    rec = Reconstruction(scan.data.intensities, scan.data.positions_px, algorithm=algorithm, iterations=iterations,
                         seed=0, beam_diameter_px=0.4 * 32)
    amps = np.asarray(rec.engine.state.amplitudes).reshape(len(scan.data.intensities), -1)
    seen: list[int] = []
    real_add = IterationMetrics.add

    def spy(self, xp, model_amp, measured_amp, valid, rms):
        rows = np.asarray(measured_amp).reshape(-1, amps.shape[1])
        for row in rows:  # simulated patterns are all different: a pattern names its position
            match = np.flatnonzero(np.all(amps == row, axis=1))
            assert match.size == 1
            seen.append(int(match[0]))
        return real_add(self, xp, model_amp, measured_amp, valid, rms)

    monkeypatch.setattr(IterationMetrics, "add", spy)
    per_iteration = []
    for _ in rec:
        per_iteration.append(sorted(seen))
        seen.clear()
    return per_iteration


@pytest.mark.parametrize("algorithm", ["ePIE", "LSQML"])
def test_epie_and_lsqml_errors_count_every_position_once_an_epoch(tiny_scan, algorithm, monkeypatch):
    n = len(tiny_scan.data.positions_px)
    for measured in _positions_measured(tiny_scan, algorithm, 2, monkeypatch):
        assert measured == list(range(n))
    assert "every position" in error_measure(algorithm)


def test_dm_error_counts_a_rotating_eighth_as_its_label_says(tiny_scan, monkeypatch):
    n = len(tiny_scan.data.positions_px)  # 36: eighths of 5 positions, 8 of them (the last wraps around)
    per_iteration = _positions_measured(tiny_scan, "DM", 8, monkeypatch)
    assert all(len(m) == -(-n // 8) for m in per_iteration)
    assert set().union(*map(set, per_iteration)) == set(range(n))
    assert per_iteration[0] != per_iteration[1]
    assert "rotating 1/8 of the positions" in error_measure("DM") == error_measure("dm")

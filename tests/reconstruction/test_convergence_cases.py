"""The simulated cases of benchmarks/convergence_peers.py are what their names say, and its error removes only
the ambiguities of ptychography (a sub-pixel shift, a global phase and scale), not a wrong object."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import convergence_peers as cp
from reconstruction.compare import fourier_shift


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cases")
    return {kind: dict(np.load(cp.make_case(cache, kind, "data", 32, 6, 1e6))) for kind in cp.OBJECTS}


def test_the_three_objects_are_smooth_sharp_and_binary(cases):
    smooth, sharp, binary = (cases[k]["truth"] for k in cp.OBJECTS)
    assert len(np.unique(binary)) == 2
    assert 20 <= len(np.unique(sharp)) <= 60  # piecewise constant: one value a Voronoi cell
    assert len(np.unique(smooth)) > smooth.size // 2
    smooth_steps, sharp_steps = (np.abs(np.diff(o, axis=1)) for o in (smooth, sharp))
    assert smooth_steps.max() < 0.15 and (smooth_steps == 0).mean() < 0.01  # small steps everywhere
    assert sharp_steps.max() > 0.3 and (sharp_steps == 0).mean() > 0.8  # flat cells, large steps at their edges


def test_the_cases_are_noisy_patterns_of_the_truth_at_whole_pixel_positions(cases):
    d = cases["sharp"]
    assert np.array_equal(d["positions"], np.round(d["positions"])) and d["positions"].min() >= 1
    assert np.array_equal(d["intensities"], np.round(d["intensities"]))  # Poisson counts
    n = d["intensities"].shape[-1]
    r, c = d["positions"][0].astype(int)
    assert d["region"][r + n // 2, c + n // 2] and not d["region"][0, -1]
    assert np.abs(d["probe0"]).sum() > 0


def test_the_error_ignores_shift_phase_and_scale_but_not_a_wrong_object(cases):
    smooth, sharp = cases["smooth"], cases["sharp"]
    assert cp.object_error(smooth, fourier_shift(smooth["truth"], (0.4, -0.3)) * (0.7 * np.exp(1.1j))) < 0.02
    assert cp.object_error(sharp, np.roll(sharp["truth"], (2, -1), axis=(0, 1)) * (1.3 * np.exp(-2j))) < 1e-3
    assert cp.object_error(sharp, sharp["truth"]) < 1e-5
    h, w = sharp["truth"].shape
    assert cp.object_error(sharp, smooth["truth"][:h, :w]) > 0.3

"""``ptychopy compare A.h5 B.h5``: B's shift and global phase relative to A, and the FRC resolution."""

import re

import numpy as np
import pytest

from ptychopy.cli import main
from reconstruction import Result
from reconstruction.compare import compare_results, fourier_shift
from reconstruction.io import read_result, write_result

PIXEL_M = 20e-9


def result_of(obj: np.ndarray, pixel_m: float = PIXEL_M) -> Result:
    rows, cols = np.meshgrid(np.arange(0, 90, 10.0), np.arange(0, 90, 10.0), indexing="ij")
    return Result(object=obj.astype(np.complex64), probe=np.ones((1, 32, 32), np.complex64),
                  positions_px=np.c_[rows.ravel(), cols.ravel()] + 8, errors=[0.1], rms=[], iteration_s=[0.01],
                  algorithm="ePIE", device="cpu", pixel_size_m=pixel_m)


def objects(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = np.hypot(*np.meshgrid(np.fft.fftfreq(140), np.fft.fftfreq(140), indexing="ij"))
    phase = np.fft.ifft2(np.fft.fft2(rng.standard_normal((140, 140))) / np.maximum(q, 1 / 140) ** 2).real
    obj = np.exp(1j * phase / phase.std())
    shifted = fourier_shift(obj, (1.4, -0.6)) * np.exp(-0.5j)
    return obj, shifted + noise * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape))


def test_compare_prints_the_shift_the_phase_and_the_resolution(tmp_path, capsys):
    a, b = objects(noise=0.05)
    write_result(result_of(a), tmp_path / "a.h5")
    write_result(result_of(b), tmp_path / "b.h5")
    assert main(["compare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--csv", str(tmp_path / "frc.csv")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"shift of B onto A: ([-+.\d]+), ([-+.\d]+) px .*global phase ([-+.\d]+) rad", out)
    assert m, out
    # B is A moved by (+1.4, -0.6) px with its phase lowered by 0.5 rad (crops of it: about 0.1 px)
    assert float(m[1]) == pytest.approx(-1.4, abs=0.1) and float(m[2]) == pytest.approx(0.6, abs=0.1)
    assert float(m[3]) == pytest.approx(-0.5, abs=0.02)
    assert "FRC resolution (half period, threshold 0.143)" in out
    curve = np.loadtxt(tmp_path / "frc.csv", delimiter=",", skiprows=1)
    assert curve.shape[1] == 2 and curve[1, 1] > 0.9


def test_more_noise_gives_a_coarser_resolution_and_a_larger_difference():
    found = [compare_results(result_of(a), result_of(b)) for a, b in (objects(0.02), objects(0.3))]
    assert found[0].frc.resolution_m < found[1].frc.resolution_m
    assert found[0].relative_difference < found[1].relative_difference
    assert found[0].frc.resolution_m >= PIXEL_M


def test_different_pixel_sizes_are_refused_naming_both(tmp_path, capsys):
    a, b = objects(noise=0.0)
    write_result(result_of(a), tmp_path / "a.h5")
    write_result(result_of(b, pixel_m=25e-9), tmp_path / "b.h5")
    assert main(["compare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5")]) == 2
    err = capsys.readouterr().err
    assert "pixel sizes differ, A 2e-08 m and B 2.5e-08 m" in err
    assert read_result(tmp_path / "a.h5").pixel_size_m == pytest.approx(PIXEL_M)

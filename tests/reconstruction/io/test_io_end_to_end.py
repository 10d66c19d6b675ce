"""A simulated scan written in the original's multi-file layout, reconstructed by ``ptychopy run``."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from reconstruction.io import read_result, write_scan_files
from reconstruction.metrics import object_nrmse
from reconstruction.parameters import Parameters
from reconstruction.simulate import simulate_from_parameters

REPO = Path(__file__).resolve().parents[3]


def test_ptychopy_run_reconstructs_a_multi_file_lz4_scan_and_exports_it(tmp_path):
    n, rows, cols = 64, 8, 8
    geometry = "-lambda=2.48e-10 -z=1 -dx_d=172e-6 -size=64 -scanDims=8,8"
    pixel_m = 2.48e-10 * 1.0 / (n * 172e-6)
    step = f"-step={8 * pixel_m:.6e},{8 * pixel_m:.6e} -beamSize={24 * pixel_m:.6e}"
    truth_params = Parameters.from_cmdstr(f"./ptycho {geometry} {step} -simulate=1 -seed=3")
    sim = simulate_from_parameters(truth_params)

    # Detector frames as a beamline writes them: zero frequency at the centre, inside a larger uint32 frame.
    detector = np.zeros((rows * cols, 100, 120), dtype=np.float64)
    qy, qx = 47, 70
    detector[:, qy - n // 2:qy + n // 2, qx - n // 2:qx + n // 2] = np.fft.fftshift(sim.data.intensities,
                                                                                    axes=(1, 2))
    files = write_scan_files(detector, tmp_path / "raw", "scan152_data_#06d.h5", dpf=cols, first_file_index=1,
                             compression="bitshuffle-lz4", dtype=np.uint32)
    assert len(files) == rows

    out = tmp_path / "results"
    cmdstr = (f"./ptycho -jobID=e2e -algorithm=ePIE -i=40 -seed=1 {geometry} {step} -qxy={qy},{qx} "
              f"-fp={tmp_path / 'raw' / 'scan152_data_#06d.h5'} -fs=1 -dpf={cols} -sqrtData -fftShiftData "
              f"-updateProbe=5 -probeModes=1")
    proc = subprocess.run([sys.executable, "-m", "ptychopy", "run", cmdstr, "--out", str(out), "--device",
                           "cpu", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]

    result = read_result(out / "e2e.h5")
    assert result.parameters.data.frames_per_file == cols and result.parameters.experiment.job_id == "e2e"
    assert result.inputs["files"] == [str(f) for f in files]
    assert result.inputs["layout"] == "multi-file"
    assert result.probe.shape == (1, n, n) and result.object.shape == sim.object_truth.shape
    np.testing.assert_allclose(result.positions_px, sim.data.positions_px, atol=1e-3)
    assert len(result.errors) == 40 and result.errors[-1] < 0.5 * result.errors[0]

    region = np.zeros(sim.object_truth.shape, dtype=bool)
    for r, c in np.floor(sim.data.positions_px + 0.5).astype(int):
        region[r + 20:r + n - 20, c + 20:c + n - 20] = True
    err = object_nrmse(sim.object_truth, result.object, region)
    assert err < 0.25, err
    assert (out / "e2e_object_0.csv").exists() and (out / "e2e_probes_0.csv").exists()

    exported = subprocess.run([sys.executable, "-m", "ptychopy", "export", str(out / "e2e.h5"), "--format", "tiff",
                               "--out", str(tmp_path / "tiff")], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    assert exported.returncode == 0, exported.stderr[-2000:]
    phase = tifffile.imread(tmp_path / "tiff" / "e2e_object_ph.tif")
    np.testing.assert_allclose(phase, np.angle(result.object), atol=1e-6)


def _small_scan():
    """(geometry flags, step flags, sample pixel size in m, simulation) of a 64 px, 8 x 8 simulated scan."""
    geometry = "-lambda=2.48e-10 -z=1 -dx_d=172e-6 -size=64 -scanDims=8,8"
    pixel_m = 2.48e-10 * 1.0 / (64 * 172e-6)
    step = f"-step={8 * pixel_m:.6e},{8 * pixel_m:.6e} -beamSize={24 * pixel_m:.6e}"
    return geometry, step, pixel_m, simulate_from_parameters(
        Parameters.from_cmdstr(f"./ptycho {geometry} {step} -simulate=1 -seed=3"))


def test_positions_refined_by_one_run_feed_the_next_through_lf(tmp_path):
    """``ptychopy run`` with -refinePositions from a perturbed -lf CSV, then a second run with -lf=<its result>: the
    second run starts from the first run's refined positions (up to the common offset every -lf gets)."""
    geometry, step, pixel_m, sim = _small_scan()
    write_scan_files(sim.data.intensities, tmp_path / "raw", "scan7_data_#06d.h5", dpf=8, first_file_index=1)
    given_m = sim.data.positions_px * pixel_m + np.random.default_rng(0).uniform(-1.5, 1.5, (64, 2)) * pixel_m
    np.savetxt(tmp_path / "given.csv", given_m, delimiter=",")
    data = f"-fp={tmp_path / 'raw' / 'scan7_data_#06d.h5'} -fs=1 -dpf=8 -sqrtData -qxy=32,32 -seed=1"

    def run(job_id: str, extra: str) -> Path:
        cmd = f"./ptycho -jobID={job_id} {geometry} {step} {data} -updateProbe=2 {extra}"
        proc = subprocess.run([sys.executable, "-m", "ptychopy", "run", cmd, "--out", str(tmp_path / "out"),
                               "--device", "cpu", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=150)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return tmp_path / "out" / f"{job_id}.h5"

    first = read_result(run("refine", f"-algorithm=LSQML -i=12 -refinePositions -PPS=3 -lf={tmp_path / 'given.csv'}"))
    start_px = given_m / pixel_m
    moved = (first.positions_px - first.positions_px.mean(0)) - (start_px - start_px.mean(0))
    assert 0 < np.abs(moved).max() < 6  # 10 refining epochs of at most 0.5 px per axis, less the affine part
    second = read_result(run("reuse", f"-algorithm=ePIE -i=1 -lf={tmp_path / 'out' / 'refine.h5'}"))
    # -lf positions are placed with their minimum at 1 px, then rounded to whole-pixel windows (no refinement)
    expected = np.floor(first.positions_px - first.positions_px.min(axis=0) + 1.0 + 0.5)
    np.testing.assert_array_equal(second.positions_px, expected)


def test_a_ptychodus_product_starts_the_next_run_as_probe_object_and_positions(tmp_path):
    """``ptychopy run``, ``ptychopy export --format ptychodus``, then ``ptychopy run -probeGuess=P -objectGuess=P
    -lf=P`` with the product P: the second run continues where the first stopped."""
    geometry, step, _, sim = _small_scan()
    write_scan_files(sim.data.intensities, tmp_path / "raw", "scan9_data_#06d.h5", dpf=8, first_file_index=1)
    data = f"-fp={tmp_path / 'raw' / 'scan9_data_#06d.h5'} -fs=1 -dpf=8 -sqrtData -qxy=32,32 -seed=1"

    def ptychopy(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "ptychopy", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=150)
        assert proc.returncode == 0, proc.stderr[-2000:]

    def run(job_id: str, extra: str) -> Path:
        ptychopy("run", f"./ptycho -jobID={job_id} {geometry} {step} {data} -algorithm=ePIE -updateProbe=2 {extra}",
                 "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet")
        return tmp_path / "out" / f"{job_id}.h5"

    first = read_result(run("first", "-i=20"))
    ptychopy("export", str(tmp_path / "out" / "first.h5"), "--format", "ptychodus", "--out", str(tmp_path / "p"))
    product = tmp_path / "p" / "first_ptychodus.h5"
    second = read_result(run("second", f"-i=1 -probeGuess={product} -objectGuess={product} -lf={product}"))
    assert second.object.shape == first.object.shape
    np.testing.assert_array_equal(second.positions_px, first.positions_px)  # the same whole-pixel windows
    # a fresh start's first iteration scores first.errors[0] (0.139 here); continuing from the product scores
    # below every iteration of the first run (0.123 < 0.129)
    assert second.errors[0] < min(first.errors) < first.errors[0]

"""The paper's Python API: Listing 1's exact code path, whole mode, NumPy variants and the MLs names."""

import numpy as np
import pytest

import ptychopy
from reconstruction import ParameterError, SessionStateError
from reconstruction.io import read_result
from reconstruction.simulate import simulate

# Listing 1 with a smaller scan (the verbatim one, size 512 and 30x30, runs on the GPU: benchmarks/RESULTS.md)
CMDSTR = """./ptycho -jobID=sim64 -beamSize=110e-9 -scanDims=10,10 -step=50e-9,50e-9 -i=12 -size=64
-lambda=2.4796837508399954e-10 -dx_d=172e-6 -z=1 -simulate=1 -blind=0"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_listing1_runs_unchanged_and_writes_the_original_outputs(in_tmp):
    cmdstr = CMDSTR
    its = 12
    ptychopy.epieinit(cmdstr)
    for _i in range(its):
        ptychopy.epiestep()
    resobj = ptychopy.epieresobj()
    resprobe = ptychopy.epieresprobe()
    ptychopy.epiepost()

    assert resobj.dtype == np.complex64 and resobj.ndim == 2
    assert resprobe.dtype == np.complex64 and resprobe.shape == (64, 64)
    obj_csv = np.genfromtxt(in_tmp / "data" / "sim64_object_0.csv", delimiter=",", dtype=complex)
    np.testing.assert_allclose(obj_csv, resobj, rtol=1e-4, atol=1e-5)
    probe_csv = np.genfromtxt(in_tmp / "data" / "sim64_probes_0.csv", delimiter=",", dtype=complex)
    assert probe_csv.shape == (64, 64)
    result = read_result(in_tmp / "data" / "sim64.h5")
    assert len(result.errors) == its and result.algorithm == "ePIE"


def test_step_functions_without_init_or_after_post_are_clear_errors():
    with pytest.raises(SessionStateError, match=r"call dminit\(cmdstr\) first"):
        ptychopy.dmstep()
    ptychopy.lsqmlinit(CMDSTR.replace("-i=12", "-i=2"))
    ptychopy.lsqmlstep()
    ptychopy.lsqmlstep()
    with pytest.raises(SessionStateError, match="no iteration left"):
        ptychopy.lsqmlstep()
    ptychopy.lsqmlpost()
    with pytest.raises(SessionStateError):
        ptychopy.lsqmlresobj()


def test_mls_names_are_aliases_of_lsqml():
    assert ptychopy.mlsinit is ptychopy.lsqmlinit and ptychopy.mlspost is ptychopy.lsqmlpost
    ptychopy.mlsinit(CMDSTR.replace("-i=12", "-i=1"))
    ptychopy.mlsstep()
    assert ptychopy.mlsresprobe().shape == (64, 64)
    ptychopy.mlspost()


def test_mls_with_refine_positions_writes_the_refined_positions_into_the_result_file(in_tmp):
    # the original's examples/mls.py adds -delta_p=0.1 -PPS=20 to an MLs run (which always refined positions);
    # here refinement is asked for, from iteration 3 of 6
    ptychopy.mlsinit(CMDSTR.replace("-jobID=sim64", "-jobID=pps").replace("-i=12", "-i=6")
                     + " -delta_p=0.1 -refinePositions -PPS=3")
    for _ in range(6):
        ptychopy.mlsstep()
    ptychopy.mlspost()
    refined = read_result(in_tmp / "data" / "pps.h5").positions_px
    ptychopy.mlsinit(CMDSTR.replace("-jobID=sim64", "-jobID=plain").replace("-i=12", "-i=1"))
    ptychopy.mlsstep()
    ptychopy.mlspost()
    corners = read_result(in_tmp / "data" / "plain.h5").positions_px
    np.testing.assert_array_equal(corners, np.round(corners))  # whole-pixel windows without -refinePositions
    moved = np.abs(refined - corners)
    assert refined.shape == corners.shape and np.any(refined != np.round(refined))
    assert 0 < moved.max() < 3  # at most 0.5 px an epoch over 4 epochs, plus the sub-pixel start


def test_multimode_probe_comes_back_stacked_along_axis_0():
    ptychopy.dminit(CMDSTR.replace("-i=12", "-i=2") + " -probeModes=3 -updateModes=1")
    ptychopy.dmstep()
    probe = ptychopy.dmresprobe()
    assert probe.shape == (3 * 64, 64)
    modes = probe.reshape(3, 64, 64)
    assert np.all(np.sum(np.abs(modes) ** 2, axis=(1, 2)) > 0)
    ptychopy.dmpost()


def test_cmdstr_whole_mode_returns_the_object_and_forces_the_algorithm(in_tmp):
    obj = ptychopy.dmcmdstr(CMDSTR.replace("-i=12", "-i=3").replace("-jobID=sim64", "-jobID=w") + " -algorithm=ePIE")
    assert obj.dtype == np.complex64
    assert read_result(in_tmp / "data" / "w.h5").algorithm == "DM"


def test_keyword_whole_mode_maps_the_original_keyword_names(in_tmp):
    assert ptychopy.epie(jobID="kw", simulate=1, size=64, scanDimsx=6, scanDimsy=7, stepx=60e-9, stepy=60e-9,
                         lambd=2.48e-10, iter=3, beamSize=150e-9) is True
    res = read_result(in_tmp / "data" / "kw.h5")
    p = res.parameters
    assert p.experiment.scan_dims == (6, 7) and p.reconstruction.iterations == 3
    assert len(res.positions_px) == 42


def test_unknown_keyword_is_rejected_with_a_suggestion():
    with pytest.raises(ParameterError, match="did you mean"):
        ptychopy.epie(simulate=1, sise=64)


def test_calls_are_independent(in_tmp):
    ptychopy.epie(jobID="a", simulate=1, size=64, scanDimsx=5, scanDimsy=5, stepx=60e-9, stepy=60e-9, iter=1,
                  sqrtData=1, probeModes=2)
    ptychopy.epie(jobID="b", simulate=1, size=64, scanDimsx=5, scanDimsy=5, stepx=60e-9, stepy=60e-9, iter=1)
    b = read_result(in_tmp / "data" / "b.h5").parameters
    assert not b.preprocessing.sqrt_data and b.reconstruction.probe_modes == 1


def test_numpy_variants_take_fft_order_amplitudes_and_metre_positions(in_tmp):
    sim = simulate(size_px=32, scan_dims=(5, 5), photons=1e5, seed=4)
    pixel = 2.48e-10 * 1.0 / (32 * 172e-6)
    positions_m = sim.data.positions_px * pixel
    amplitudes = np.sqrt(sim.data.intensities)
    assert ptychopy.epienp(jobID="np", diffractionNP=amplitudes, positionNP=positions_m, size=32, iter=2,
                           scanDimsx=5, scanDimsy=5) is True
    res = read_result(in_tmp / "data" / "np.h5")
    np.testing.assert_allclose(res.positions_px - res.positions_px.min(0),
                               np.floor(sim.data.positions_px + 0.5) - np.floor(sim.data.positions_px + 0.5).min(0))
    ptychopy.epienpinit(diffractionNP=amplitudes, positionNP=positions_m, size=32, iter=2, probeNP=sim.probe_truth[0])
    ptychopy.epiestep()
    assert ptychopy.epieresobj().ndim == 2
    ptychopy.epiepost()
    assert ptychopy.mlsnp(jobID="m", diffractionNP=amplitudes, positionNP=positions_m, size=32, iter=1) is True
    assert ptychopy.dmnp(jobID="d", diffractionNP=amplitudes, positionNP=positions_m, size=32, iter=1) is True


def test_numpy_variant_rejects_a_wrong_shape():
    from reconstruction import InputDataError

    with pytest.raises(InputDataError, match=r"diffractionNP has shape \(4, 16, 16\): expected \(N, 32, 32\)"):
        ptychopy.epienp(diffractionNP=np.ones((4, 16, 16)), size=32)


def test_save_every_writes_intermediate_results(in_tmp):
    ptychopy.epiecmdstr(CMDSTR.replace("-i=12", "-i=4").replace("-jobID=sim64", "-jobID=s") + " -save=2")
    assert (in_tmp / "data" / "s_object_1.csv").exists()
    assert (in_tmp / "data" / "s_object_0.csv").exists()


def test_helloworld_prints_the_originals_elements(capsys):
    ptychopy.helloworld([0, 1, 2], np.arange(10).reshape(5, 2), np.arange(12).reshape(2, 2, 3))
    assert capsys.readouterr().out.split() == ["2.0", "7.0", "8.0"]

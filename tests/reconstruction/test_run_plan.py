"""The run plan (reconstruction/run_plan.py): every decision with its reason, from sizes alone, on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconstruction.backend import Backend
from reconstruction.driver import Reconstruction
from reconstruction.engines import EngineSettings
from reconstruction.engines.base import EngineState
from reconstruction.memory_plan import GIB, estimate_memory_bytes
from reconstruction.multigpu import SplitReconstruction
from reconstruction.run_plan import (
    FAST_PATH_SUPPORTS,
    RUN_OPTIONS,
    DataSizes,
    plan_of_regions,
    plan_run,
    run_options,
)

ALGORITHMS = ("ePIE", "DM", "LSQML")
SIZES = DataSizes(900, 256, (900, 900))
FREE = 79 * GIB

# (settings, probe modes, mask) -> the option each adds
OPTION_CASES = {
    "rms_metric": (EngineSettings(compute_rms=True), 1, "none"),
    "position_refinement": (EngineSettings(position_refinement_from=5), 1, "none"),
    "variable_intensity": (EngineSettings(variable_intensity=True), 1, "none"),
    "poisson_noise": (EngineSettings(noise_model="poisson"), 1, "none"),
    "valid_mask": (EngineSettings(), 1, "detector"),
    "probe_modes": (EngineSettings(), 3, "none"),
    "subpixel_windows": (EngineSettings(subpixel_windows=True), 1, "none"),
    "position_affine": (EngineSettings(position_refinement_from=5, position_affine=("scale",)), 1, "none"),
    "coarse_search": (EngineSettings(position_refinement_from=5, coarse_search_px=3, coarse_search_epochs=2), 1,
                      "none"),
}
REFINEMENT_PARTS = ("position_affine", "coarse_search")  # options of refinement: each comes with it


def _gpu(algorithm, settings=None, sizes=SIZES, **kw):
    return plan_run(algorithm, settings or EngineSettings(), sizes, backend="gpu", free_bytes=FREE, **kw)


def test_every_option_of_the_table_has_a_case_here_and_the_table_names_only_known_options():
    assert set(OPTION_CASES) == set(RUN_OPTIONS)
    assert set(FAST_PATH_SUPPORTS) == set(ALGORITHMS)
    for algorithm, supported in FAST_PATH_SUPPORTS.items():
        assert supported <= set(RUN_OPTIONS), (algorithm, supported - set(RUN_OPTIONS))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_plain_gpu_run_is_fast_resident_and_on_one_device(algorithm):
    plan = _gpu(algorithm)
    assert (plan.implementation, plan.residency, plan.split, plan.exchange) == ("fast", "resident", False, "")
    assert plan.implementation_reason == f"the fast {algorithm} implements every option of this run"
    assert plan.residency_reason.startswith("the data fit on the device (") and "of 79.00 GiB" in plan.residency_reason
    assert plan.devices_reason == "one device"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("option", list(OPTION_CASES))
def test_each_option_selects_the_implementation_the_capability_table_says(algorithm, option):
    settings, modes, mask = OPTION_CASES[option]
    sizes = DataSizes(900, 256, (900, 900), modes, mask)
    uses = run_options(algorithm, settings, probe_modes=modes, mask=mask)
    expected = ("position_refinement", option) if option in REFINEMENT_PARTS else (option,)
    assert uses == expected
    plan = _gpu(algorithm, settings, sizes)
    assert plan.options == expected
    missing = [o for o in expected if o not in FAST_PATH_SUPPORTS[algorithm]]
    if not missing:
        assert plan.implementation == "fast"
    else:
        assert plan.implementation == "reference"
        assert plan.implementation_reason == (f"the fast {algorithm} does not implement "
                                              f"{', '.join(RUN_OPTIONS[o] for o in missing)}")
        with pytest.raises(ValueError, match=f"implementation='fast' is not possible: the fast {algorithm} does not"):
            _gpu(algorithm, settings, sizes, implementation="fast")


def test_the_reason_lists_every_option_the_fast_path_lacks():
    plan = _gpu("LSQML", EngineSettings(compute_rms=True, position_refinement_from=2, coarse_search_px=2,
                                        coarse_search_epochs=2))
    assert plan.implementation_reason == ("the fast LSQML does not implement the RMS metric (-RMS), the coarse "
                                          "whole-pixel position search")


def test_the_cpu_runs_the_reference_engines_with_the_data_in_host_memory():
    plan = plan_run("DM", EngineSettings(), SIZES, backend="cpu")
    assert (plan.implementation, plan.residency) == ("reference", "resident")
    assert plan.implementation_reason == "the CPU runs the NumPy reference engines"
    assert plan.residency_reason == "on the CPU the data stay in host memory"
    with pytest.raises(ValueError, match="implementation='fast' needs a CUDA GPU"):
        plan_run("DM", EngineSettings(), SIZES, backend="cpu", implementation="fast")


def test_the_reference_engine_can_be_asked_for_on_the_gpu():
    plan = _gpu("ePIE", implementation="reference")
    assert plan.implementation == "reference"
    assert plan.implementation_reason == "the reference engine was asked for (implementation='reference')"


def test_a_run_too_big_for_the_cap_streams_on_the_fast_path_and_is_refused_on_the_reference_one():
    big = DataSizes(250_000, 256, (2791, 64231))
    streamed = _gpu("ePIE", sizes=big, memory_cap_bytes=24 * GIB)
    assert (streamed.implementation, streamed.residency) == ("fast", "streamed")
    assert streamed.memory is not None and streamed.memory.chunk_positions == 2048
    assert "streamed in chunks of 2048 patterns" in streamed.residency_reason
    refused = _gpu("ePIE", sizes=big, memory_cap_bytes=24 * GIB, implementation="reference")
    assert refused.residency == "refused" and refused.refused
    assert "only the fast GPU engines stream from host memory" in refused.residency_reason
    dm = _gpu("DM", sizes=big, memory_cap_bytes=24 * GIB)
    assert dm.residency == "refused" and "DM keeps every exit wave on the device" in dm.residency_reason
    per_frame = _gpu("LSQML", sizes=DataSizes(250_000, 256, (2791, 64231), mask="per_frame"),
                     memory_cap_bytes=24 * GIB)
    assert per_frame.residency == "refused" and "per-frame" in per_frame.residency_reason


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_only_lsqml_reports_the_mean_of_its_iterates_and_says_so(algorithm):
    plan = _gpu(algorithm)
    assert plan.iterate_mean is (algorithm == "LSQML")
    assert ("reports the mean of its iterates (span 5" in plan.summary_lines()[1]) is (algorithm == "LSQML")
    assert plan.to_dict()["iterate_mean"] is (algorithm == "LSQML")
    one = _gpu(algorithm, EngineSettings(mean_span=1))
    assert not one.iterate_mean and one.iterate_mean_reason == ""


def test_the_mean_costs_one_object_and_probe_and_gives_way_where_only_the_run_without_it_fits():
    big = DataSizes(250_000, 256, (2791, 64231))
    roomy = _gpu("LSQML", sizes=big, memory_cap_bytes=26 * GIB)
    tight = _gpu("LSQML", sizes=big, memory_cap_bytes=24 * GIB)
    assert roomy.iterate_mean and roomy.residency == "streamed"
    extra = 2791 * 64231 * 8 + 256 * 256 * 8
    for fast_gpu in (True, False):  # the mean's object and probe, on either engine
        sizes = dict(n_positions=250_000, size_px=256, object_shape=(2791, 64231), algorithm="LSQML",
                     fast_gpu=fast_gpu)
        assert estimate_memory_bytes(**sizes, iterate_mean=True) - estimate_memory_bytes(**sizes) == extra
    assert tight.residency == "streamed" and not tight.iterate_mean
    assert "the last iterate is reported (-meanSpan=5 asks for the mean" in tight.iterate_mean_reason
    assert "1.34 GiB, does not fit" in tight.summary_lines()[1]
    small = _gpu("LSQML", sizes=big, memory_cap_bytes=4 * GIB)
    assert small.refused and small.iterate_mean  # refused either way: the refusal names the full need


@pytest.mark.parametrize(("algorithm", "exchange", "implementation"),
                         [("DM", "sums", "reference"), ("ePIE", "periodic", "fast"), ("LSQML", "periodic", "fast")])
def test_two_or_more_devices_split_the_run_with_the_exchange_the_algorithm_needs(algorithm, exchange, implementation):
    plan = _gpu(algorithm, devices=(0, 1, 2, 3))
    assert (plan.split, plan.devices, plan.exchange, plan.implementation) == (True, (0, 1, 2, 3), exchange,
                                                                              implementation)
    assert plan.devices_reason == (f"4 devices listed: the scan is cut into 4 regions, kept one reconstruction by "
                                   f"the {exchange} exchange")
    assert plan.residency == "per region" and plan.memory is None
    if algorithm == "DM":
        assert plan.implementation_reason == ("the split DM all-reduces the reference DM's overlap sums "
                                              "(exchange 'sums')")
    one = _gpu(algorithm, devices=(3,))
    assert not one.split and one.devices_reason == "one device (-gpus lists one)"


def test_a_split_run_refuses_per_position_fits_and_a_sum_exchange_without_dm():
    with pytest.raises(ValueError, match="run on one device, not in a split run"):
        _gpu("LSQML", EngineSettings(variable_intensity=True), devices=(0, 1))
    with pytest.raises(ValueError, match="exchange='sums' needs DM"):
        _gpu("ePIE", devices=(0, 1), exchange="sums")
    with pytest.raises(ValueError, match="implementation='fast' is not possible: the split DM"):
        _gpu("DM", devices=(0, 1), implementation="fast")


def test_the_split_plan_streams_when_any_region_streams():
    split = _gpu("ePIE", devices=(0, 1))
    resident = _gpu("ePIE")
    streamed = _gpu("ePIE", sizes=DataSizes(250_000, 256, (2791, 64231)), memory_cap_bytes=24 * GIB)
    both = plan_of_regions(split, [resident, streamed])
    assert both.residency == "streamed" and both.residency_reason == ("1 of 2 regions stream their data from host "
                                                                      "memory")
    fits = plan_of_regions(split, [resident, resident])
    assert fits.residency == "resident" and fits.residency_reason == "every region's data fit on its device (2 regions)"
    with pytest.raises(ValueError, match="takes the plan of a split run"):
        plan_of_regions(resident, [resident])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="backend='tpu'"):
        plan_run("DM", EngineSettings(), SIZES, backend="tpu")
    with pytest.raises(ValueError, match="implementation='quick'"):
        _gpu("DM", implementation="quick")
    with pytest.raises(ValueError, match="algorithm='PIE'"):
        _gpu("PIE")
    with pytest.raises(ValueError, match="mask='some'"):
        DataSizes(1, 8, (8, 8), mask="some")


def test_the_plan_as_a_dict_is_json_and_the_summary_names_every_choice_and_reason():
    plan = _gpu("LSQML", EngineSettings(compute_rms=True))
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["implementation"] == "reference" and d["residency"] == "resident" and d["split"] is False
    assert d["options"] == ["rms_metric"] and d["needed_bytes"] == plan.memory.needed_bytes
    first, second = plan.summary_lines()
    assert first == "run plan: reference LSQML, data resident, one GPU"
    assert plan.implementation_reason in second and plan.residency_reason in second and "one device" in second


def test_the_driver_builds_the_engine_the_plan_names_and_exposes_the_plan(tiny_scan):
    d = tiny_scan.data
    rec = Reconstruction(d.intensities, d.positions_px, algorithm="DM", iterations=1, device="cpu")
    assert rec.plan.implementation == "reference" and rec.plan.residency == "resident"
    assert type(rec.engine).__name__ == "DM"
    assert rec.memory_plan is rec.plan.memory
    with pytest.raises(ValueError, match="implementation='fast' needs a CUDA GPU"):
        Reconstruction(d.intensities, d.positions_px, algorithm="DM", device="cpu", implementation="fast")


def test_the_driver_plans_on_the_free_memory_the_backend_reports(tiny_scan, monkeypatch):
    """With a GPU-sized limit the driver's plan is the pure function's plan for the same sizes."""
    monkeypatch.setattr(Backend, "free_memory_bytes", lambda self: 3 * GIB)
    d = tiny_scan.data
    rec = Reconstruction(d.intensities, d.positions_px, algorithm="ePIE", iterations=0, device="cpu",
                         probe_modes=2)
    expected = plan_run("ePIE", EngineSettings(), DataSizes(len(d.positions_px), d.intensities.shape[-1],
                                                            rec.object_shape, 2), backend="cpu", free_bytes=3 * GIB)
    assert rec.plan == expected and rec.plan.options == ("probe_modes",)


def test_the_split_run_has_one_plan_for_its_regions(tiny_scan):
    d = tiny_scan.data
    split = SplitReconstruction(d.intensities, d.positions_px, devices=[0, 1], algorithm="DM", iterations=1)
    assert split.plan.split and split.plan.exchange == "sums" and split.plan.devices == (0, 1)
    assert split.plan.residency == "resident"
    assert all(r.plan.implementation == "reference" and not r.plan.split for r in split.recs)
    one = SplitReconstruction(d.intensities, d.positions_px, devices=[0], algorithm="ePIE", iterations=1)
    assert one.plan.split and one.plan.devices_reason.startswith("1 device listed: the scan is cut into 1 region,")


def test_no_environment_variable_changes_the_plan(monkeypatch):
    before = _gpu("ePIE")
    for name in ("PTYCHOPY_GPU_FAST", "PTYCHOPY_BENCH_GPU_GRAPHS", "PTYCHOPY_BENCH_EPIE_COLS"):
        monkeypatch.setenv(name, "0")
    assert _gpu("ePIE") == before


def test_the_engine_factory_refuses_an_unknown_implementation():
    from reconstruction.engines import create_engine

    st = EngineState(xp=np, obj=np.ones((12, 12), np.complex64), probe=np.ones((1, 8, 8), np.complex64),
                     amplitudes=np.ones((2, 8, 8), np.float32), valid=None, rows=np.array([0, 4]),
                     cols=np.array([0, 4]), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="implementation='auto': expected 'fast' or 'reference'"):
        create_engine("DM", st, EngineSettings(), "auto")


def test_only_the_benchmark_switches_read_the_environment_in_the_reconstruction_code():
    """No environment variable changes what a run computes: reconstruction/ reads the environment only in
    bench_switches.py (PTYCHOPY_BENCH_*), plus NCCL's transport switch and CuPy's cache location (a report)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "reconstruction"
    allowed = {"bench_switches.py", "multigpu/exchange.py", "gpu/warmup.py"}
    readers = {str(p.relative_to(root)) for p in root.rglob("*.py")
               if re.search(r"os\.environ|os\.getenv|getenv\(", p.read_text())}
    assert readers <= allowed, sorted(readers - allowed)
    from reconstruction.bench_switches import SWITCHES, bench_switch

    with pytest.raises(KeyError, match="unknown benchmark switch 'GPU_FAST'"):
        bench_switch("GPU_FAST")
    documented = (root.parent / "docs" / "performance.md").read_text()
    assert [name for name in SWITCHES if f"`PTYCHOPY_BENCH_{name}`" not in documented] == []

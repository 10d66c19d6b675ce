"""The host memory plan: an oversized run is refused from its sizes alone, with the bytes needed and allowed."""

import pytest

from reconstruction import Parameters
from reconstruction.memory_plan import (
    GIB,
    available_host_memory_bytes,
    host_plan_for_parameters,
    plan_host_memory,
)

CAP_6_GB = 6 * 10**9


@pytest.mark.parametrize("flags", ["-scanDims=200,200 -size=256", "-size=8192", "-probeModes=64 -size=2048"])
def test_the_runs_that_oom_killed_workers_are_refused_under_a_6_gb_cap(flags):
    params = Parameters.from_cmdstr(f"./ptycho -simulate=1 {flags}")
    plan = host_plan_for_parameters(params, limit_bytes=CAP_6_GB, limit_source="the cap")
    assert not plan.fits and plan.needed_bytes > CAP_6_GB
    assert f"more than the {CAP_6_GB / GIB:.2f} GiB allowed (the cap)" in plan.message
    assert "-scanDims, -size or -probeModes" in plan.message and "GiB of host memory" in plan.message


def test_a_small_run_fits_and_the_estimate_covers_the_data():
    params = Parameters.from_cmdstr("./ptycho -simulate=1 -size=64 -scanDims=10,10")
    plan = host_plan_for_parameters(params, limit_bytes=CAP_6_GB)
    assert plan.fits and plan.message == ""
    assert plan.parts["data"] == 100 * 64 * 64 * 4
    assert plan.needed_bytes < 64 * 2**20


def test_no_limit_means_not_judged():
    plan = plan_host_memory(10**6, 1024, (10**4, 10**4), algorithm="ePIE", limit_bytes=None)
    assert plan.fits and plan.needed_bytes > 4 * 10**12


def test_a_gpu_host_keeps_only_data_object_and_probes_in_host_memory():
    kw = dict(algorithm="DM", limit_bytes=None, probe_modes=4)
    cpu = plan_host_memory(10_000, 256, (3000, 3000), **kw)
    gpu = plan_host_memory(10_000, 256, (3000, 3000), on_gpu=True, **kw)
    assert gpu.parts["data"] == cpu.parts["data"] and gpu.needed_bytes < cpu.needed_bytes / 3


def test_a_cpu_lsqml_run_reporting_the_mean_of_its_iterates_counts_one_more_object_and_probe():
    kw = dict(algorithm="LSQML", limit_bytes=None, probe_modes=2)
    mean = plan_host_memory(400, 128, (700, 900), iterate_mean=True, **kw)
    last = plan_host_memory(400, 128, (700, 900), **kw)
    assert mean.needed_bytes - last.needed_bytes == 700 * 900 * 8 + 2 * 128 * 128 * 8
    gpu = plan_host_memory(400, 128, (700, 900), iterate_mean=True, on_gpu=True, **kw)
    assert gpu.needed_bytes == plan_host_memory(400, 128, (700, 900), on_gpu=True, **kw).needed_bytes  # on the device

    def planned(flags):
        params = Parameters.from_cmdstr(f"./ptycho -simulate=1 -size=128 -scanDims=20,20 {flags}")
        return host_plan_for_parameters(params, limit_bytes=None).parts["engine"]

    assert planned("-algorithm=LSQML") - planned("-algorithm=LSQML -meanSpan=1") > 128 * 128 * 8
    assert planned("-algorithm=ePIE") == planned("-algorithm=ePIE -meanSpan=1")  # ePIE reports its iterate


def test_this_machine_reports_how_much_host_memory_is_available():
    limit, source = available_host_memory_bytes()
    assert limit is not None and limit > 0 and source

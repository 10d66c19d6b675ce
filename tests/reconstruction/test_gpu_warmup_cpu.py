"""The GPU warm-up (reconstruction/gpu/warmup.py) on a machine without a GPU: skipped at once; its small runs
checked as a dry run on NumPy."""

from __future__ import annotations

import time

import pytest

from reconstruction.backend import gpu_available
from reconstruction.gpu.warmup import WARMUP_ALGORITHMS, warm_up


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU path")
def test_without_a_gpu_the_warm_up_does_nothing_and_says_why():
    t0 = time.perf_counter()
    report = warm_up((256,))
    assert time.perf_counter() - t0 < 0.5
    assert report.skipped.startswith("CuPy ") and report.steps == () and report.device == ""
    assert report.summary().startswith("GPU warm-up skipped: CuPy ")


def test_the_dry_run_runs_every_engine_at_every_size():
    report = warm_up((16, 32), device="cpu")
    assert [what for what, _ in report.steps] == [f"{a} {n}^2" for n in (16, 32) for a in WARMUP_ALGORITHMS]
    assert all(s > 0 for _, s in report.steps) and report.seconds >= sum(s for _, s in report.steps)
    assert report.summary().startswith(f"warm-up on {report.device} took ")


def test_bad_sizes_and_devices_are_named():
    with pytest.raises(ValueError, match=r"pattern sizes must be >= 8 pixels, not \[4\]"):
        warm_up((256, 4), device="cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        warm_up((256,), device="tpu")


def test_the_cold_start_benchmark_runs_its_four_scenarios_as_a_cpu_dry_run(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "cold_start.py"
    out = tmp_path / "cold.json"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--scan", "4,4", "--size", "16",
                           "--iterations", "2", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [r["scenario"] for r in rows] == ["fresh", "fresh+warmup", "warm", "warm+warmup"]
    for r in rows:
        assert r["positions"] == 16 and r["size"] == 16 and r["plan"] == "reference"
        assert 0 < r["first_frame_s"] == pytest.approx(r["setup_s"] + r["first_iteration_s"] + r["preview_s"])
        assert r["boot_s"] >= r["import_s"] > 0
        assert (r["warmup_s"] > 0) == r["scenario"].endswith("+warmup")
    assert rows[0]["cache_dir"] != rows[1]["cache_dir"] == rows[2]["cache_dir"] == rows[3]["cache_dir"]

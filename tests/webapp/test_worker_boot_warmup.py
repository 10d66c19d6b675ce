"""A worker process warms its GPU up when it boots (webapp/worker_boot.py); without a GPU that is a cheap no-op,
and a failing warm-up never stops the worker from starting."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from reconstruction.backend import gpu_available
from webapp.envconfig import Env
from webapp.site_security import SiteConfigError


def test_the_boot_module_imports_in_a_fresh_process_and_says_what_the_warm_up_did(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    env.update(PTYCHOPY_HOME=str(tmp_path), PTYCHOPY_GPU_WARMUP_SIZES="64", DJANGO_SETTINGS_MODULE="webapp.settings")
    code = "import webapp.worker_boot as b; print('BOOTED', b.warm_up_gpu())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    expected = "warm-up on " if gpu_available() else "GPU warm-up skipped: CuPy "
    assert line.startswith("BOOTED " + expected), line


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU path")
def test_without_a_gpu_the_warm_up_is_skipped_at_once(settings):
    from webapp import worker_boot

    settings.PTYCHOPY_GPU_WARMUP_SIZES = [256, 512]
    t0 = time.perf_counter()
    line = worker_boot.warm_up_gpu()
    assert time.perf_counter() - t0 < 0.5
    assert line.startswith("GPU warm-up skipped: CuPy ")


def test_a_failing_warm_up_is_logged_and_the_worker_still_starts(settings, monkeypatch, caplog):
    from reconstruction.gpu import warmup
    from webapp import worker_boot

    def broken(sizes):
        raise RuntimeError("nvrtc: out of disk")

    monkeypatch.setattr(warmup, "warm_up", broken)
    settings.PTYCHOPY_GPU_WARMUP_SIZES = [256]
    with caplog.at_level(logging.WARNING, logger="webapp.worker"):
        line = worker_boot.warm_up_gpu()
    assert line == "GPU warm-up failed: RuntimeError: nvrtc: out of disk"
    assert "the first job compiles its kernels instead" in caplog.text


def test_an_empty_size_list_turns_the_warm_up_off_and_a_bad_one_is_named(settings, monkeypatch):
    from webapp import worker_boot

    settings.PTYCHOPY_GPU_WARMUP_SIZES = []
    assert worker_boot.warm_up_gpu() == "GPU warm-up off (PTYCHOPY_GPU_WARMUP_SIZES is empty)"
    monkeypatch.setenv("PTYCHOPY_GPU_WARMUP_SIZES", "128, 256")
    assert Env().int_list("PTYCHOPY_GPU_WARMUP_SIZES", "256") == [128, 256]
    monkeypatch.setenv("PTYCHOPY_GPU_WARMUP_SIZES", "256px")
    with pytest.raises(SiteConfigError, match=r"PTYCHOPY_GPU_WARMUP_SIZES='256px' is not a list of whole numbers"):
        Env().int_list("PTYCHOPY_GPU_WARMUP_SIZES", "256")

"""reconstruction.host_allocator: NumPy temporaries stop costing page faults once the CPU backend is chosen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Allocates and frees 50 arrays of 64 kB-8 MB ten times (like an engine's temporaries) and prints the minor page
# faults taken while doing so, after one warm-up round.
CHURN = """
import resource, sys
import numpy as np
from reconstruction.backend import get_backend
if sys.argv[1] == "cpu":
    get_backend("cpu")
sizes = [int(s) for s in np.random.default_rng(0).integers(64 * 1024, 8 * 1024 * 1024, 50)]
def churn():
    for s in sizes:
        a = np.ones(s // 4, np.float32); b = a * 2; c = b + a; del a, b, c
churn()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(select: str, **env: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, select], cwd=REPO, env={**os.environ, **env},
                         capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_choosing_the_cpu_backend_removes_page_faults_of_array_temporaries() -> None:
    untuned = _faults("none")
    assert untuned > 10_000, "glibc's defaults no longer fault here: the tuning may be obsolete"
    assert _faults("cpu") < untuned // 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_ptychopy_host_malloc_0_leaves_the_allocator_alone() -> None:
    assert _faults("cpu", PTYCHOPY_BENCH_HOST_MALLOC="0") > 10_000

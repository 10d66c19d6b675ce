"""The fast path's CUDA translation unit compiles for the H100/H200 (sm_90) on a machine without a GPU, through the
CUDA toolkit's nvcc (skipped where it is not installed). Device time is scarce: a kernel that does not compile, or
that spills registers or asks for more static shared memory than a block gets without opting in, is found here
before a GPU session is spent on it. Whether the kernels compute the right numbers is tests/gpu's job."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reconstruction.gpu.runtime import KERNEL_OPTIONS, kernel_names, kernel_source

NVCC = shutil.which("nvcc")
STATIC_SHARED_LIMIT_B = 48 * 1024  # a block's static shared memory without the opt-in (dynamic is opted into)

pytestmark = pytest.mark.skipif(NVCC is None, reason="no nvcc (the CUDA toolkit) on this machine")


@pytest.fixture(scope="module")
def ptxas_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    """{kernel: {"registers", "smem_b", "spill_stores_b"}} from ptxas' verbose report of the whole unit."""
    folder = tmp_path_factory.mktemp("kernels")
    source = folder / "kernels.cu"
    source.write_text(kernel_source())
    assert NVCC is not None
    done = subprocess.run([NVCC, *KERNEL_OPTIONS, "-arch=sm_90", "-cubin", "-Xptxas", "-v",
                           "-o", str(folder / "kernels.cubin"), str(source)],
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "warning" not in output.lower(), output[-4000:]
    return _parse(output)


def _parse(output: str) -> dict[str, dict[str, int]]:
    report: dict[str, dict[str, int]] = {}
    current = ""
    for line in output.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            current = m.group(1)
            report[current] = {"registers": 0, "smem_b": 0, "spill_stores_b": 0}
        elif current and (m := re.search(r"(\d+) bytes spill stores", line)):
            report[current]["spill_stores_b"] = int(m.group(1))
        elif current and (m := re.search(r"Used (\d+) registers", line)):
            report[current]["registers"] = int(m.group(1))
            if smem := re.search(r"(\d+) bytes smem", line):
                report[current]["smem_b"] = int(smem.group(1))
    return report


def test_every_kernel_the_engines_launch_compiles_for_sm90(ptxas_report: dict[str, dict[str, int]]) -> None:
    assert sorted(ptxas_report) == sorted(kernel_names())
    assert len(ptxas_report) >= 40


def test_no_kernel_spills_registers_to_local_memory(ptxas_report: dict[str, dict[str, int]]) -> None:
    spilling = {k: v["spill_stores_b"] for k, v in ptxas_report.items() if v["spill_stores_b"]}
    assert not spilling, f"register spills (bytes stored) in {spilling}"


def test_static_shared_memory_fits_a_block_without_opting_in(ptxas_report: dict[str, dict[str, int]]) -> None:
    over = {k: v["smem_b"] for k, v in ptxas_report.items() if v["smem_b"] > STATIC_SHARED_LIMIT_B}
    assert not over, f"static shared memory over {STATIC_SHARED_LIMIT_B} B: {over}"
    assert all(v["registers"] > 0 for v in ptxas_report.values())


def test_the_unit_is_the_kernel_folder_in_name_order() -> None:
    folder = Path(__file__).resolve().parents[2] / "reconstruction" / "gpu" / "kernels"
    names = re.findall(r"^// ---- (\S+)$", kernel_source(), flags=re.M)
    assert names == ["common.cuh", *sorted(p.name for p in folder.glob("*.cu"))]


def test_plain_epie_updates_keep_six_blocks_per_multiprocessor(ptxas_report: dict[str, dict[str, int]]) -> None:
    """The plain ePIE updates are compiled without the flux fit's and the Poisson model's arguments: with them
    (848d1cf) epie_update_gather needed 44 registers, five 256-thread blocks per multiprocessor instead of six,
    and plain ePIE ran 2.6 % slower on the H100 (RESULTS.md). Registers are allocated per warp in steps of 8."""
    regs_per_sm, threads = 65536, 256
    for name in ("epie_update_gather", "epie_update"):
        plain, fit = ptxas_report[name]["registers"], ptxas_report[f"{name}_fit"]["registers"]
        blocks = regs_per_sm // (-(-plain // 8) * 8 * threads)
        assert blocks >= 6, f"{name}: {plain} registers, {blocks} blocks of {threads} threads per multiprocessor"
        assert plain <= fit, f"{name}: the plain kernel ({plain}) uses more registers than its _fit twin ({fit})"

"""``ptychopy run --out`` on a full disk (a real 256 KiB tmpfs): a clear message, exit status 1, and no partial
CSV or temporary file left; a run after space is freed writes everything."""

import subprocess
import sys

import pytest

from tests.support.tmpfs import TmpfsUnavailable, fill, small_tmpfs

SMALL = "./ptycho -jobID=full -simulate=1 -size=32 -scanDims=6,6 -step=150e-9,150e-9 -beamSize=500e-9 -i=2"


def run_cli(out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptychopy", "run", SMALL, "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_full_output_disk_leaves_no_partial_csv_and_says_so():
    try:
        with small_tmpfs(256 * 1024) as disk:
            filler = fill(disk, leave_bytes=4 * 1024)
            proc = run_cli(disk)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "disk full writing" in proc.stderr and "bytes needed" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
            assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]
            filler.unlink()
            proc = run_cli(disk)
            assert proc.returncode == 0, proc.stderr
            assert {"full_object_0.csv", "full_probes_0.csv", "full.h5"} <= {p.name for p in disk.iterdir()}
    except TmpfsUnavailable as exc:
        pytest.skip(f"no tmpfs here ({exc}); tests/reconstruction/io covers ENOSPC without one")

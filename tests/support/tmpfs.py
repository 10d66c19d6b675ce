"""A small real file system that fills up: a tmpfs of a few hundred KiB, mounted for one test (needs root and
``mount``; :func:`small_tmpfs` says why it cannot when it cannot, and the caller skips)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class TmpfsUnavailable(RuntimeError):
    """This machine cannot mount a tmpfs for the test (not root, or mount refused)."""


@contextlib.contextmanager
def small_tmpfs(size_bytes: int, *, prefix: str = "ptychopy-full-disk-") -> Iterator[Path]:
    """A fresh, empty tmpfs of ``size_bytes`` (rounded up to pages), unmounted and removed afterwards."""
    if os.geteuid() != 0:
        raise TmpfsUnavailable("mounting a tmpfs needs root")
    mount_point = Path(tempfile.mkdtemp(prefix=prefix))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0777", "tmpfs", str(mount_point)],
                         capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0:
        mount_point.rmdir()
        raise TmpfsUnavailable(f"mount -t tmpfs failed: {res.stderr.strip() or res.stdout.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30, check=False)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of ``folder`` up to ``leave_bytes`` free (one filler file, returned)."""
    filler = folder / "filler.bin"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))
    return filler

"""Is a scan's data on disk complete? One look, no waiting (the worker retries with back-off).

Readability and frame counts come from ``reconstruction.io.scan`` (the same file list and reader the
reconstruction will use: every file opens read-only and holds its frames, the last one readable). The bridge
adds what only it cares about: the areaDetector ``TempSuffix`` convention (``name + suffix`` is renamed to the
final name on close, so "still being written" can be told from "missing"), and a (size, mtime) signature so
the worker can ask for the files to stay unchanged across consecutive looks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from reconstruction import InputDataError, Parameters


@dataclass(frozen=True)
class FilesStatus:
    """Result of one look: ``complete``, or ``reason`` naming the file and dataset that is not ready."""

    complete: bool
    reason: str
    signature: tuple[tuple[str, int, int], ...] = ()  # (path, size, mtime_ns) of each file
    frames: int = 0
    permanent: bool = False  # a closed file lacks the dataset: waiting cannot help


# What reconstruction.io.hdf5_reader says when a file that opened has no dataset at the configured path.
_WRONG_DATASET = ("no such dataset", "is a group, not a dataset")


def check_scan_files(params: Parameters, temp_suffix: str = ".tmp") -> FilesStatus:
    """Look once at every data file of the scan described by ``params``.

    ``permanent`` is set when a file under its final name (closed, by the ``temp_suffix`` convention) opened
    but has no dataset at the configured path: the worker fails such a scan at once instead of waiting."""
    from reconstruction.io.scan import Scan

    try:
        scan = Scan.from_parameters(params, read_metadata=False)
    except InputDataError as exc:
        return FilesStatus(False, str(exc))
    signature = []
    for path in scan.files:
        name = str(path)
        try:
            st = os.stat(name)
        except FileNotFoundError:
            if temp_suffix and os.path.exists(name + temp_suffix):
                return FilesStatus(False, f"file {name}: still being written ({name + temp_suffix} exists)")
            return FilesStatus(False, f"file {name}: does not exist yet")
        except OSError as exc:
            return FilesStatus(False, f"file {name}: cannot stat: {exc.strerror or exc}")
        signature.append((name, st.st_size, st.st_mtime_ns))
    try:
        scan.wait_until_complete(0.0)  # one look: raises at once when a file is locked, short or unreadable
    except InputDataError as exc:
        reason = str(exc)
        wrong_dataset = any(phrase in reason for phrase in _WRONG_DATASET)
        # with the temp-suffix convention a file under its final name is closed: its datasets are final
        return FilesStatus(False, reason, tuple(signature), permanent=wrong_dataset and bool(temp_suffix))
    return FilesStatus(True, f"{len(signature)} file(s), {scan.frames} frames, dataset {scan.dataset}",
                       tuple(signature), scan.frames)

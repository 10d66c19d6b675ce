"""A real submitter for tests: records every submission as a JSON line (no deduplication, so a double
submission by the bridge shows), and can refuse the first ``fail_first`` calls as an unreachable web app would.

At each accepted submission it also notes whether every data file of the scan was complete at that moment,
checked with h5py independently of the bridge's own file check.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import h5py


class WebAppDown(ConnectionError):
    """What the recorder raises while it plays an unreachable web app."""


class RecordingSubmitter:
    def __init__(self, path: str, fail_first: int = 0):
        self.path = Path(path)
        self.fail_first = int(fail_first)

    def submit(self, request: Any) -> str:
        with open(str(self.path) + ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            calls_path = Path(str(self.path) + ".calls")
            calls = int(calls_path.read_text()) if calls_path.exists() else 0
            # replaced, never truncated in place: the bridge is SIGKILLed at any moment in the stress tests, and a
            # half-written counter would fail every later submission
            tmp_path = Path(str(calls_path) + ".tmp")
            tmp_path.write_text(str(calls + 1))
            os.replace(tmp_path, calls_path)
            if calls < self.fail_first:
                raise WebAppDown(f"simulated: web app unreachable (call {calls + 1} of {self.fail_first})")
            params = request.params
            line = dict(dedup_key=request.dedup_key, label=request.label, source=request.source,
                        scan=request.scan, params=params.to_dict(), at=time.time(), call=calls + 1,
                        files_complete=files_complete(params))
            existing = self.path.read_text().splitlines() if self.path.exists() else []
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return f"rec-{len(existing) + 1}"


def files_complete(params: Any) -> bool:
    """Every file of the scan exists under its final name with all its frames."""
    rows, cols = params.experiment.scan_dims
    dpf = params.data.frames_per_file
    n = rows * cols
    k = 0
    index = params.data.first_file_index
    while k < n:
        path = params.data.file_pattern.replace("#06d", f"{index:06d}")
        try:
            with h5py.File(path, "r") as f:
                if f[params.data.hdf5_path].shape[0] < min(dpf, n - k):
                    return False
        except (OSError, KeyError):
            return False
        k += dpf
        index += 1
    return True

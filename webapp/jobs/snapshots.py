"""A run's history for the page's iteration scrubber: a few of its frames, kept as they were sent.

The worker keeps at most ``SNAPSHOTS`` frames per run (the first frame past each ``iterations / SNAPSHOTS`` mark,
and the last), each the encoded frame bytes (:mod:`webapp.live.frames`, downsampled previews: tens of kB for the
demo, at most about 1 MB), as ``<results>/job_<id>/snapshots/it_<iteration>.frame``. A new attempt starts a new
history; deleting the job deletes the folder with its results.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings

SNAPSHOTS = 24
_PREFIX, _SUFFIX = "it_", ".frame"


def snapshots_dir(job_id: int) -> Path:
    return Path(settings.PTYCHOPY_RESULTS_DIR) / f"job_{job_id}" / "snapshots"


def list_snapshots(job_id: int) -> list[int]:
    """The iterations that have a stored frame, in order."""
    folder = snapshots_dir(job_id)
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob(f"{_PREFIX}*{_SUFFIX}"):
        digits = path.name[len(_PREFIX):-len(_SUFFIX)]
        if digits.isdigit():
            out.append(int(digits))
    return sorted(out)


def snapshot_path(job_id: int, iteration: int) -> Path:
    return snapshots_dir(job_id) / f"{_PREFIX}{int(iteration):08d}{_SUFFIX}"


class SnapshotWriter:
    """Keeps the frames of one run that the scrubber replays (a new writer clears the previous attempt's)."""

    def __init__(self, job_id: int, iterations: int, count: int = SNAPSHOTS):
        self.job_id = job_id
        self.every = max(1.0, iterations / max(1, count))
        self.next_mark = 1.0
        shutil.rmtree(snapshots_dir(job_id), ignore_errors=True)

    def offer(self, iteration: int, data: bytes, *, final: bool = False) -> bool:
        """Store ``data`` (an encoded frame of ``iteration``) when it passes the next mark or is the last;
        returns whether it was stored."""
        if iteration < 1 or (iteration < self.next_mark and not final):
            return False
        path = snapshot_path(self.job_id, iteration)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)  # a reader never sees half a frame
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk keeps no partial frame
            raise
        while self.next_mark <= iteration:
            self.next_mark += self.every
        return True

"""``ptychopy simwrite``: write a simulated scan into an HDF5 file with SWMR, frame by frame, as a detector would.

    ptychopy simwrite OUT.h5 "<command string>" [--rate 200] [--abort-after K] [--stop-after K]
                     [--shuffle B] [--duplicate J]

The command string describes the scan (-size, -scanDims, -step, -beamSize, -lambda, -z, -dx_d, -photons, -seed),
as for ``-simulate=1``. The file has the layout ``reconstruction/live/swmr.py`` reads: frames (counts, so read
them with -sqrtData=1), frame_index, positions_m growing, planned_positions_m and a status (0 acquiring,
1 ended, 2 aborted). ``--abort-after K``: after K frames mark the scan aborted and exit; ``--stop-after K``: after
K frames exit leaving it 'acquiring' (a writer that died: the reader sees a stall); ``--shuffle B``: frames go
out in a random order within blocks of B; ``--duplicate J``: frame J is written a second time right after it.
Prints one JSON line at the end: frames written, first/last frame times (Unix seconds), rate achieved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .swmr import FRAME_INDEX, PLANNED_POSITIONS, POSITIONS, SCAN_GROUP, STATUS

#: when each row was written (Unix s; the acquisition time a benchmark measures latency from; readers ignore it)
ACQUIRED = f"{SCAN_GROUP}/acquired_unix_s"


def frame_order(n: int, shuffle_block: int, duplicate: int | None, seed: int = 0) -> list[int]:
    """The order frames 0..n-1 are written in: in blocks of ``shuffle_block`` shuffled (0/1 = in order), with
    frame ``duplicate`` repeated right after itself."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for start in range(0, n, max(1, shuffle_block)):
        block = list(range(start, min(n, start + max(1, shuffle_block))))
        if shuffle_block > 1:
            rng.shuffle(block)
        order.extend(block)
    if duplicate is not None:
        at = order.index(duplicate)
        order.insert(at + 1, duplicate)
    return order


class SwmrWriter:
    """An HDF5 file in the layout :mod:`reconstruction.live.swmr` reads, grown frame by frame with SWMR, as a
    detector's file writer in stream mode does: frames ``(k, rows, cols)`` of ``dtype`` at ``dataset``, their
    ``frame_index`` and, with ``planned_m`` (N, 2) metres, the planned scan and each frame's ``positions_m``
    (without it a reader takes row j as scan point j at the parameters' planned position), a status, and the time
    each row was written (``acquired_unix_s``)."""

    def __init__(self, out: Path, frame_shape: tuple[int, int], *, dtype: Any = np.float32,
                 dataset: str = "/entry/data/data", planned_m: np.ndarray | None = None):
        rows, cols = frame_shape
        self.file = h5py.File(out, "w", libver="latest")
        f = self.file
        self.data = f.create_dataset(dataset, shape=(0, rows, cols), maxshape=(None, rows, cols), dtype=dtype,
                                     chunks=(1, rows, cols))
        self.index = f.create_dataset(FRAME_INDEX, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        self.acquired = f.create_dataset(ACQUIRED, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        self.pos = None
        if planned_m is not None:
            self.pos = f.create_dataset(POSITIONS, shape=(0, 2), maxshape=(None, 2), dtype=np.float64,
                                        chunks=(1024, 2))
            f.create_dataset(PLANNED_POSITIONS, data=planned_m)
        self.status = f.create_dataset(STATUS, data=np.zeros(1, dtype=np.int8))
        f.swmr_mode = True
        self.written = 0

    def append(self, frames: np.ndarray, indices: list[int] | np.ndarray, positions_m: np.ndarray | None = None
               ) -> None:
        """Add frames ``(B, rows, cols)`` of scan points ``indices`` (and their positions, when planned) and flush,
        the index last, so a reader never sees an index before its frame."""
        k0, k1 = self.written, self.written + len(indices)
        growing = [self.data, self.index, self.acquired] + ([self.pos] if self.pos is not None else [])
        for ds in growing:
            ds.resize(k1, axis=0)
        self.data[k0:k1] = frames
        if self.pos is not None and positions_m is not None:
            self.pos[k0:k1] = positions_m
        self.acquired[k0:k1] = time.time()
        self.index[k0:k1] = np.asarray(indices, dtype=np.int64)
        for ds in [self.data, self.acquired] + ([self.pos] if self.pos is not None else []) + [self.index]:
            ds.flush()
        self.written = k1

    def end(self, aborted: bool = False) -> None:
        """Say the scan ended (1) or was aborted (2)."""
        self.status[0] = 2 if aborted else 1
        self.status.flush()

    def close(self) -> None:
        self.file.close()


def write_scan(out: Path, frames: np.ndarray, positions_m: np.ndarray, *, rate_hz: float, order: list[int],
               dataset: str = "/entry/data/data", abort_after: int | None = None,
               stop_after: int | None = None) -> dict[str, object]:
    """Write ``frames`` (N, r, c) float32 at ``positions_m`` (N, 2) metres in ``order`` at ``rate_hz`` with SWMR;
    returns what was written and when."""
    n, rows, cols = frames.shape
    writer = SwmrWriter(out, (rows, cols), dataset=dataset, planned_m=positions_m)
    try:
        t0 = time.time()
        written = 0
        first_s = last_s = 0.0
        limit = len(order)
        for stop_at in (abort_after, stop_after):
            if stop_at is not None:
                limit = min(limit, stop_at)
        while written < limit:
            due = min(limit, int((time.time() - t0) * rate_hz) + 1)
            if due > written:
                chosen = order[written:due]
                writer.append(frames[chosen], chosen, positions_m[chosen])
                last_s = time.time()
                first_s = first_s or last_s
                written = due
            time.sleep(max(0.0, t0 + (written + 1) / rate_hz - time.time()))
        if stop_after is not None and written >= stop_after:
            return _report(written, first_s, last_s, "stopped")
        aborted = abort_after is not None and written >= abort_after
        writer.end(aborted)
    finally:
        writer.close()
    return _report(written, first_s, last_s, "aborted" if aborted else "ended")


def _report(written: int, first_s: float, last_s: float, how: str) -> dict[str, object]:
    span = last_s - first_s
    return {"frames": written, "first_frame_unix_s": first_s, "last_frame_unix_s": last_s, "how": how,
            "rate_hz": (written - 1) / span if span > 0 else 0.0}


def main(argv: list[str] | None = None) -> int:
    from ..parameters import Parameters
    from ..simulate import simulate_from_parameters

    p = argparse.ArgumentParser(prog="ptychopy simwrite", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the HDF5 file to write (replaced)")
    p.add_argument("cmdstr", help='the scan, e.g. "./ptycho -size=64 -scanDims=40,40 -photons=1e6"')
    p.add_argument("--rate", type=float, default=200.0, help="frames per second (default 200)")
    p.add_argument("--abort-after", type=int, help="mark the scan aborted after this many frames")
    p.add_argument("--stop-after", type=int, help="exit after this many frames without ending the scan")
    p.add_argument("--shuffle", type=int, default=1, help="write frames out of order within blocks of this size")
    p.add_argument("--duplicate", type=int, help="write this frame index twice")
    args = p.parse_args(argv)
    if args.rate <= 0:
        p.error(f"--rate {args.rate}: expected > 0 frames/s")
    params = Parameters.from_cmdstr(args.cmdstr)
    sim = simulate_from_parameters(params)
    from ..positions import positions_m_from_parameters

    positions_m = positions_m_from_parameters(params)
    frames = sim.data.intensities
    if args.duplicate is not None and not 0 <= args.duplicate < frames.shape[0]:
        p.error(f"--duplicate {args.duplicate}: the scan has frames 0..{frames.shape[0] - 1}")
    order = frame_order(frames.shape[0], args.shuffle, args.duplicate)
    report = write_scan(args.out, frames, positions_m, rate_hz=args.rate, order=order, dataset=params.data.hdf5_path,
                        abort_after=args.abort_after, stop_after=args.stop_after)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

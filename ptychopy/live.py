"""``ptychopy run`` with ``-liveSource``: reconstruct while the scan acquires and write the batch run's files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconstruction.parameters import Parameters
from reconstruction.parameters.model import PVA_LIVE_SCHEME

if TYPE_CHECKING:
    from collections.abc import Callable

    from reconstruction.live import LiveSource


MIN_CONNECT_S = 5.0  # the PVs get at least this long to connect, also with a short -liveStall


def open_source(params: Parameters, stop: Callable[[], bool] | None = None) -> LiveSource:
    """The live source ``-liveSource`` names: ``pva://...`` (an NTNDArray over pvAccess, :mod:`ptychopy.pva_source`)
    or a file source of :func:`reconstruction.live.open_live_source` (swmr, replay). ``stop``: asked while the
    file or the PVs (connecting, the planned scan read) are awaited; True ends the wait with ``LiveSourceError``."""
    from reconstruction.live import open_live_source, planned_from_parameters

    d = params.data
    if d.live_source.startswith(PVA_LIVE_SCHEME):
        from .pva_source import PvaSource

        return PvaSource(d.live_source, planned_from_parameters(params), connect_s=max(d.live_stall_s, MIN_CONNECT_S),
                         max_pending=d.live_buffer_frames, stop=stop)
    return open_live_source(params, stop)


def run_live(params: Parameters, quiet: bool = False) -> list[Path]:
    """Open the live source, reconstruct as frames arrive, run the finishing iterations and write the result files.

    Prints one ``live: {...}`` JSON line: the stream's outcome, frames planned/received/dropped, duplicates,
    epochs while acquiring and finishing, and ``written_after_last_frame_s`` / ``overhead_s`` (the time from the
    last frame's arrival to the written result, without the finishing iterations).
    """
    from reconstruction.live.run import LiveSummary, StreamingRun, check_streaming

    from .session import write_outputs

    check_streaming(params)  # before waiting for the file
    source = open_source(params)
    try:
        run = StreamingRun(params, source)
        r = params.reconstruction
        planned = source.planned
        h, w = run.object_shape
        print(f"{r.algorithm} live from {source.name}: {planned.n_positions} planned points "
              f"({planned.origin}), object {h}x{w}, {run.finish_iterations} finishing iterations", flush=True)
        shown = [0.0]

        def report(progress: Any, summary: LiveSummary) -> None:
            now = time.monotonic()
            if quiet or now - shown[0] < 1.0:
                return
            shown[0] = now
            print(f"  it {progress.iteration}: {run.feed.received}/{planned.n_positions} frames, "
                  f"error {progress.error:.4g}", flush=True)

        result = run.run(report)
    finally:
        source.close()
    paths = write_outputs(result, params, index=0, with_hdf5=True)
    written = time.monotonic()
    s = run.summary
    info = s.to_dict()
    if s.last_frame_monotonic is not None:
        after = written - s.last_frame_monotonic
        info.update(written_after_last_frame_s=round(after, 3), overhead_s=round(after - s.finish_s, 3))
    if s.partial:
        print(f"kept the partial result: {s.label()}")
    print("live: " + json.dumps(info), flush=True)
    return paths

"""Live sources (a growing SWMR file, a replay) and the streaming run that reconstructs as frames arrive.

Pure reading and computing: no network code. ``open_live_source(params)`` picks the source ``-liveSource`` names;
``StreamingRun(params, source).run()`` reconstructs (docs/streaming.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..parameters.model import PVA_LIVE_SCHEME
from .feed import LiveFeed
from .source import (
    ABORTED,
    ACQUIRING,
    CANCELLED,
    ENDED,
    STALLED,
    STOPPED,
    FrameBatch,
    LiveSource,
    LiveSourceError,
    PlannedScan,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..parameters import Parameters


def planned_from_parameters(params: Parameters) -> PlannedScan:
    """The raster or spiral the parameters describe, as the plan of a live scan."""
    from ..positions import positions_m_from_parameters

    return PlannedScan(positions_m_from_parameters(params), None, "parameters (-scanDims, -step)")


def open_live_source(params: Parameters, stop: Callable[[], bool] | None = None) -> LiveSource:
    """The file source ``-liveSource`` names (swmr, replay) over the ``-fp`` file (``-hdf5path`` dataset); a
    ``pva://`` source is :func:`ptychopy.live.open_source`'s. ``stop``: asked while an SWMR file is awaited
    (up to ``-liveStall``); True ends the wait with :class:`LiveSourceError`."""
    d = params.data
    if d.live_source == "none":
        raise LiveSourceError("-liveSource=none: no live source to open")
    if d.live_source.startswith(PVA_LIVE_SCHEME):
        raise LiveSourceError(f"-liveSource={d.live_source}: a pvAccess source is opened by "
                              "ptychopy.live.open_source (reconstruction/ reads files only)")
    if not d.file_pattern:
        raise LiveSourceError(f"-liveSource={d.live_source}: give the file with -fp=...")
    if "#" in d.file_pattern or "%" in d.file_pattern:
        raise LiveSourceError(f"-liveSource={d.live_source} -fp={d.file_pattern}: a live source reads one file, "
                              "not a numbered pattern")
    plan = planned_from_parameters(params)
    if d.live_source == "swmr":
        from .swmr import SwmrSource

        return SwmrSource(d.file_pattern, d.hdf5_path, plan, wait_s=d.live_stall_s, stop=stop)
    from .replay import ReplaySource

    return ReplaySource(d.file_pattern, d.hdf5_path, plan, d.live_rate_hz)


__all__ = ["ABORTED", "ACQUIRING", "CANCELLED", "ENDED", "STALLED", "STOPPED", "FrameBatch", "LiveFeed", "LiveSource",
           "LiveSourceError", "PlannedScan", "open_live_source", "planned_from_parameters"]

"""Where the bridge's events come from: Channel Access (pyepics), pvAccess (p4p, ``pva://`` names), for the
bluesky trigger a 0MQ subscription to run documents, and for the pva_frames trigger the detector's frames over
pvAccess (:mod:`epics_bridge.frames`). Each source feeds the same event queue."""

from __future__ import annotations

import queue
from typing import Protocol

from .config import FRAMES_SCHEME, BridgeConfig
from .trigger import Event


class Source(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def make_sources(config: BridgeConfig, events: queue.Queue[Event]) -> list[Source]:
    """The monitors for ``config.pvs``: CA for plain names, p4p for ``pva://`` names, 0MQ for the bluesky
    trigger's document stream, the frames' watch for the pva_frames trigger (its ``frames://`` values); a transport
    is loaded only when some name needs it."""
    from .pva import is_pva

    stream = config.trigger.document_source
    ca_names = [n for n in config.pvs if not is_pva(n) and n != stream and not n.startswith(FRAMES_SCHEME)]
    pva_names = [n for n in config.pvs if is_pva(n)]
    sources: list[Source] = []
    if stream:
        from .bluesky import DocumentSource

        sources.append(DocumentSource(config.trigger, events))
    if config.trigger.kind == "pva_frames":
        from .frames import FrameWatch, template_frames

        sources.append(FrameWatch(config.trigger, events, planned=template_frames(config.template)))
    if pva_names:
        from .pva import PvaMonitor

        sources.append(PvaMonitor(pva_names, events))
    if ca_names:
        from .monitor import Monitor

        sources.append(Monitor(ca_names, events))
    return sources

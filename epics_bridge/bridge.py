"""The bridge assembled: monitor -> queue -> worker, with the journal and the state. Start, run, stop.

In production ``python -m epics_bridge --config FILE`` runs :func:`run_forever`; in the embedded mode the server
builds a :class:`Bridge` and calls :meth:`Bridge.start` / :meth:`Bridge.stop` itself.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from typing import Any

from .config import BridgeConfig
from .journal import Journal
from .sources import make_sources
from .state import BridgeState
from .submit import Submitter, load_submitter
from .trigger import Event
from .worker import BridgeWorker

log = logging.getLogger(__name__)


class Bridge:
    """One running bridge; :attr:`state` is what the dashboard shows."""

    def __init__(self, config: BridgeConfig, submitter: Submitter | None = None):
        self.config = config
        self.events: queue.Queue[Event] = queue.Queue()
        self.state = BridgeState(config.beamline, config.pvs, config.state_path, roles=config.pv_roles,
                                 heartbeat_s=config.heartbeat_s)
        self.journal = Journal(config.journal_path)
        self.submitter = submitter if submitter is not None else load_submitter(config.submit)
        self.worker = BridgeWorker(config, self.events, self.journal, self.submitter, self.state)
        self.sources = make_sources(config, self.events)
        self.frame_buffer: Any = None  # ptychopy.pva_buffer.FrameBuffer, with a buffered pva:// [stream] source

    def _start_frame_buffer(self) -> None:
        """With ``[stream]`` over pvAccess: subscribe to the detector's frames before any scan, to hand a scan's
        first frames to its streaming job (docs/streaming.md, "Frames before the job subscribed")."""
        st = self.config.stream
        if not (st.enabled and st.buffered):
            return
        from ptychopy.pva_buffer import FrameBuffer

        self.frame_buffer = FrameBuffer(st.source, st.buffer_address, st.buffer_pv, int(st.buffer_mib * 2**20),
                                        keep_after_handover=st.keeps_for_replacement,
                                        clients=st.buffer_clients).start()
        self.worker.buffer_series = self.frame_buffer.series_now
        self.worker.buffer_scan_series = self.frame_buffer.series_of_scan_started

    def start(self) -> None:
        log.info("EPICS bridge for %s: %s trigger, %d PVs, journal %s", self.config.beamline,
                 self.config.trigger.kind, len(self.config.pvs), self.config.journal_path)
        self._start_frame_buffer()
        self.worker.start()
        for source in self.sources:
            source.start()

    def stop(self) -> None:
        for source in self.sources:
            source.stop()
        self.worker.stop()
        if self.frame_buffer is not None:
            self.frame_buffer.stop()
        self.journal.close()
        log.info("EPICS bridge stopped")


def run_forever(config: BridgeConfig, submitter: Submitter | None = None) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 1 when the worker died."""
    bridge = Bridge(config, submitter)
    done = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    bridge.start()
    try:
        while not done.wait(1.0):
            if not bridge.worker.alive:
                log.error("the bridge worker thread died")
                return 1
    finally:
        bridge.stop()
    return 0

"""A bridge worker driven by hand (no EPICS): fake clock, real journal, real state, any submitter."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from epics_bridge.config import config_from_dict
from epics_bridge.journal import Journal
from epics_bridge.simdata import SimGeometry
from epics_bridge.state import BridgeState
from epics_bridge.trigger import ConnectionEvent, ValueEvent
from epics_bridge.worker import BridgeWorker

GEOM = SimGeometry(rows=2, cols=3, size_px=16)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_config(tmp: Path, submit: dict[str, Any] | None = None, template: str = "-size=16 -qxy=8,8 -fs=1 -i=2",
                stream: dict[str, Any] | None = None, trigger: dict[str, Any] | None = None, **file_check: Any):
    raw = {
        "bridge": {"beamline": "BL", "journal": "j.sqlite3", "debounce_s": 0.5, "heartbeat_s": 1.0},
        "trigger": trigger or {"kind": "sscan", "busy_pv": "BUSY", "message_pv": "SMSG"},
        "data": {"path_pv": "PATH", "name_pv": "NAME", "scan_number_pv": "NUM"},
        "metadata": {"scan_dims": ["ROWS", "COLS"], "parameters": {"data.frames_per_file": "COLS"}},
        "parameters": {"template": template},
        "file_check": {"initial_backoff_s": 0.1, "max_backoff_s": 0.4, "timeout_s": 5.0, **file_check},
        "submit": submit or {"kind": "callable", "target": "recording_submitter:RecordingSubmitter",
                             "initial_backoff_s": 0.5, "max_backoff_s": 2.0},
    }
    if stream is not None:
        raw["stream"] = stream
    return config_from_dict(raw, base_dir=tmp)


class Rig:
    """A worker with a fake clock, a real journal, a real state and a submitter."""

    def __init__(self, tmp: Path, submitter: Any, geom: SimGeometry = GEOM, name: str = "scan7", number: int = 7,
                 **config: Any):
        self.tmp = tmp
        self.clock = Clock()
        self.config = make_config(tmp, **config)
        self.journal = Journal(self.config.journal_path)
        self.state = BridgeState("BL", self.config.pvs, tmp / "state.json")
        self.worker = BridgeWorker(self.config, queue.Queue(), self.journal, submitter, self.state, self.clock)
        self.worker.resume()
        for pv, v in (("BUSY", 0), ("SMSG", ""), ("PATH", str(tmp)), ("NAME", name), ("NUM", number),
                      ("ROWS", geom.rows), ("COLS", geom.cols)):
            self.worker.handle(ConnectionEvent(pv, True, self.clock.t))
            self.value(pv, v)

    def value(self, pv: str, v: Any) -> None:
        self.worker.handle(ValueEvent(pv, v, str(v), self.clock.t))

    def scan_ends(self, msg: str = "SCAN Complete") -> None:
        self.value("BUSY", 1)
        self.clock.t += 1
        self.value("SMSG", msg)
        self.value("BUSY", 0)

    def reconnect(self, *pvs: str) -> None:
        """Each PV disconnects and connects again (its next value is then a replay)."""
        for connected in (False, True):
            for pv in pvs:
                self.worker.handle(ConnectionEvent(pv, connected, self.clock.t))
            self.clock.t += 1

    def run(self, seconds: float, step_s: float = 0.05) -> None:
        end = self.clock.t + seconds
        while self.clock.t < end:
            self.clock.t += step_s
            self.worker.tick(self.clock.t)


class Killed(BaseException):
    """The bridge process dies here (no handler of the bridge's catches it)."""


class LosesAnswer:
    """A submitter whose web side takes every request, and for each that ``lost`` picks the bridge dies before it
    reads the answer (:class:`Killed`); ``job_state`` is the wrapped submitter's."""

    def __init__(self, inner: Any, lost: Callable[[Any], bool]):
        self.inner, self.lost = inner, lost

    def submit(self, request: Any) -> str:
        job = self.inner.submit(request)
        if self.lost(request):
            raise Killed()
        return str(job)

    def job_state(self, job_id: str) -> Any:
        return self.inner.job_state(job_id)

    def __getattr__(self, name: str) -> Any:  # the wrapped submitter's (e.g. the recorder's path)
        return getattr(self.inner, name)


def put_value(events: queue.Queue[Any], pv: str, v: Any) -> None:
    """A live value of ``pv`` for a running worker."""
    events.put(ValueEvent(pv, v, str(v), time.monotonic(), time.time()))


def connect_pvs(events: queue.Queue[Any], tmp: Path, name: str = "scan7", number: int = 7,
                geom: SimGeometry = GEOM) -> None:
    """The rig's PVs connecting with their first values, for a running worker."""
    for pv, v in (("BUSY", 0), ("SMSG", ""), ("PATH", str(tmp)), ("NAME", name), ("NUM", number),
                  ("ROWS", geom.rows), ("COLS", geom.cols)):
        events.put(ConnectionEvent(pv, True, time.monotonic()))
        put_value(events, pv, v)


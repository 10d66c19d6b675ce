"""Submissions go through a sender thread: while the web side hangs on one scan, the worker thread keeps
journalling the next scan's end (a bridge killed meanwhile would otherwise lose events held only in memory)."""

from __future__ import annotations

import http.server
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_rig import GEOM, connect_pvs, make_config, put_value

from benchmarks.latency.procs import free_port, wait_for
from epics_bridge import journal as jr
from epics_bridge.journal import Journal
from epics_bridge.simdata import write_scan_files
from epics_bridge.state import BridgeState
from epics_bridge.submit import load_submitter
from epics_bridge.worker import BridgeWorker
from tests.support.jsonhttp import JsonHandler


class HangingApi:
    """A real HTTP server on loopback: job submissions wait until :meth:`release`, then get 201 and an id; state
    reports get 200 at once."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.submissions: list[str] = []
        api = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/v1/jobs/":
                    api.submissions.append(self.headers.get("Idempotency-Key", ""))
                    number = len(api.submissions)
                    api.released.wait(30)
                    self.send_json(201, {"id": number})
                else:
                    self.send_json(200, {"beamline": "BL", "last_seen": "now"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[HangingApi]:
    server = HangingApi()
    yield server
    server.stop()


def test_the_worker_journals_the_next_scan_while_a_submission_hangs(api: HangingApi, tmp_path: Path) -> None:
    for name in ("scan7", "scan8"):
        write_scan_files(tmp_path, name, GEOM)
    config = make_config(tmp_path, submit={"kind": "http", "url": api.url, "token": "t" * 20, "timeout_s": 30.0,
                                           "initial_backoff_s": 0.2, "max_backoff_s": 1.0})
    events: queue.Queue = queue.Queue()
    journal = Journal(config.journal_path)
    worker = BridgeWorker(config, events, journal, load_submitter(config.submit),
                          BridgeState("BL", config.pvs, tmp_path / "state.json"))

    def value(pv: str, v: object) -> None:
        put_value(events, pv, v)

    def scan_ends(name: str, number: int) -> None:
        value("NAME", name)
        value("NUM", number)
        value("BUSY", 1)
        value("SMSG", "SCAN Complete")
        value("BUSY", 0)

    worker.start()
    try:
        connect_pvs(events, tmp_path)
        scan_ends("scan7", 7)
        wait_for(lambda: api.submissions, 10, "scan 7's submission to reach the server")
        scan_ends("scan8", 8)  # the server still holds scan 7's answer

        def scan8_journalled() -> bool:
            row = journal.get(f"BL:8:{tmp_path}/scan8_data_#06d.h5")
            return row is not None and row.status == jr.SUBMITTING
        wait_for(scan8_journalled, 5, "scan 8 to be journalled while scan 7's submission hangs")
        assert len(api.submissions) == 1 and not api.released.is_set()
        assert [e.outcome for e in journal.edges()] == ["complete", "complete"]
        api.release()

        def both_queued() -> list[str]:
            rows = [journal.get(f"BL:{n}:{tmp_path}/scan{n}_data_#06d.h5") for n in (7, 8)]
            return [r.job_id for r in rows if r is not None and r.status == jr.SUBMITTED]
        assert wait_for(lambda: len(both_queued()) == 2, 10, "both scans to be queued")
        assert sorted(both_queued()) == ["1", "2"] and len(api.submissions) == 2
    finally:
        worker.stop()
        journal.close()

"""A streaming job over pvAccess (``-liveSource=pva://...``) on the worker, against a real p4p server in this
process: each of its waits before the first frame (the planned scan a server never publishes, an image PV that
never connects, the first frame that never comes) ends within about a second when its worker stops (Dramatiq's
shutdown, as on SIGTERM) or its user cancels it, as the SWMR source's wait for its file does, with the documented
message and no result. The end's time is recorded (``end_s`` in the JUnit XML)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from webapp_helpers import stop_worker_when, wait_for

from benchmarks.latency.procs import free_port_pair
from epics_bridge.simioc_pva import pva_client_env, pva_server_conf
from reconstruction import Parameters
from webapp.jobs import reconciler, services
from webapp.jobs.models import Job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.epics, pytest.mark.timeout(120)]

SCAN = "./ptycho -size=32 -scanDims=8,8 -step=150e-9,150e-9 -beamSize=500e-9 -photons=1e6 -seed=0"
REC = "-sqrtData=1 -updateProbe=2 -phaseConstraint=0 -device=cpu -algorithm=ePIE -liveStall=60"
PLANNED_POINTS = 10  # the served plan's length (the parameters plan 64): a job that read it plans 10 frames
END_S = 2.0  # a stop or a cancel ends the wait within this (it is asked every 10-250 ms; -liveStall is 60 s)

#: what each wait's address names: the planned scan of a PV served but never opened (no value ever), an image PV
#: nothing serves, and an image PV that is served and never posts a frame
ADDRESSES = {
    "planned scan": "pva://w:Pva1:Image?planned=w:Scan:Never&status=w:Scan:Status",
    "connect": "pva://w:Nowhere:Image?planned=w:Scan:Planned&status=w:Scan:Status",
    "first frame": "pva://w:Pva1:Image?planned=w:Scan:Planned&status=w:Scan:Status",
}


@pytest.fixture
def pva_server(monkeypatch) -> Iterator[None]:
    """A p4p server on a private loopback port pair with the image, status and planned-scan PVs (and
    ``w:Scan:Never``, never opened); the worker's client (this process) reaches only it."""
    from p4p.nt import NTNDArray, NTScalar, NTTable
    from p4p.server import Server
    from p4p.server.thread import SharedPV

    port = free_port_pair()
    for name, value in pva_client_env(port).items():
        monkeypatch.setenv(name, value)
    planned = [{"row_m": 150e-9 * (k // 5), "col_m": 150e-9 * (k % 5)} for k in range(PLANNED_POINTS)]
    pvs = {"w:Pva1:Image": SharedPV(nt=NTNDArray(), initial=np.zeros((1, 1), dtype=np.float32)),
           "w:Scan:Status": SharedPV(nt=NTScalar("i"), initial=0),
           "w:Scan:Planned": SharedPV(nt=NTTable([("row_m", "d"), ("col_m", "d")]), initial=planned),
           "w:Scan:Never": SharedPV()}
    server = Server(providers=[pvs], conf=pva_server_conf(port), useenv=False)
    try:
        yield
    finally:
        server.stop()


def _submit(wait: str, owner=None) -> Job:
    return services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -liveSource={ADDRESSES[wait]}"), owner=owner)


def _waiting(job: Job, wait: str) -> bool:
    """The job is in ``wait``: the first frame's wait shows the phase on the row (the source is open); the others
    have been running for half a second with no stream yet (the source is still being opened)."""
    row = Job.objects.get(pk=job.pk)
    if wait == "first frame":
        return (row.live or {}).get("phase") == "waiting"
    return (row.status == "running" and not row.live and row.started is not None
            and timezone.now() - row.started >= timedelta(seconds=0.5))


def _check_no_stream_kept(job: Job, wait: str) -> None:
    assert job.result_path == "", job.result_path
    if wait == "first frame":  # the source was open: its plan came from the planned-scan PV
        assert job.live["frames_received"] == 0 and job.live["frames_planned"] == PLANNED_POINTS, job.live
    else:
        assert not job.live, job.live


@pytest.mark.parametrize("wait", list(ADDRESSES))
def test_a_stopped_worker_ends_a_pvaccess_job_in_each_wait_before_any_frame_within_a_second(
        data_root, broker, pva_server, record_property, wait):
    job = _submit(wait)
    stop_s = stop_worker_when(broker, lambda: _waiting(job, wait))
    record_property("end_s", round(stop_s, 3))
    job.refresh_from_db()
    assert job.status == "failed" and stop_s < END_S, (job.message, stop_s)
    planned = f" of {PLANNED_POINTS}" if wait == "first frame" else ""  # the plan is known once the source is open
    assert f"stopped while streaming, after 0{planned} frames received (phase waiting); not re-queued" in job.message
    _check_no_stream_kept(job, wait)
    assert reconciler.requeue_unfinished() == 0 and not broker.queues["reconstruct"].qsize()


@pytest.mark.parametrize("wait", list(ADDRESSES))
def test_a_cancel_ends_a_pvaccess_job_in_each_wait_before_any_frame_within_a_second(
        data_root, broker, worker, user, pva_server, record_property, wait):
    job = _submit(wait, owner=user)
    wait_for(lambda: _waiting(job, wait), timeout_s=60)
    t0 = time.monotonic()
    services.cancel_job(job, user)
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, timeout_s=30, every_s=0.01)
    end_s = time.monotonic() - t0
    record_property("end_s", round(end_s, 3))
    job.refresh_from_db()
    assert job.status == "cancelled" and job.message == "cancelled before any frame arrived", job.message
    assert end_s < END_S, end_s
    _check_no_stream_kept(job, wait)

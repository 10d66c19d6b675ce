"""The bridge's worker submitting through ``webapp.jobs.services.submit_job`` in-process (the embedded mode):
DjangoSubmitter -> Job row -> the StubBroker's worker thread -> a finished job."""

from __future__ import annotations

from pathlib import Path

import dramatiq
import pytest
from bridge_harness import wait_for
from dramatiq import Worker
from worker_rig import Rig

from epics_bridge import journal as jr
from epics_bridge.django_submit import DjangoSubmitter
from epics_bridge.simdata import SimGeometry, write_scan_files
from epics_bridge.submit import SubmitRejected, SubmitRequest

pytestmark = pytest.mark.django_db(transaction=True)

GEOM = SimGeometry(rows=3, cols=4, size_px=32)
TEMPLATE = "-size=32 -qxy=16,16 -dx_d=75e-6 -z=1.9 -lambda=1.409e-10 -step=0.5e-6 -fs=1 -sqrtData -fftShiftData " \
           "-beamSize=1e-6 -i=3 -device=cpu"


@pytest.fixture
def bridge_site(settings, tmp_path: Path):
    """The site's settings for a bridge beside an embedded server (no worker in this process), and its broker,
    emptied before and after: a message left there would hold up a later test's broker.join."""
    settings.PTYCHOPY_DATA_ROOTS = [tmp_path]
    settings.PTYCHOPY_RESULTS_DIR = tmp_path / "results"
    settings.PTYCHOPY_EMBEDDED_WORKER = False
    from webapp.jobs import tasks  # noqa: F401  (registers the actor)

    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
def stub_worker(bridge_site):
    broker = bridge_site
    worker = Worker(broker, queues={"reconstruct"}, worker_threads=1, worker_timeout=50)
    worker.start()
    yield worker
    worker.stop(timeout=10_000)


def test_embedded_worker_submits_once_and_the_job_finishes(stub_worker, tmp_path: Path, client,
                                                            django_user_model) -> None:
    from webapp.jobs.models import Job

    write_scan_files(tmp_path, "scan7", GEOM)
    rig = Rig(tmp_path, DjangoSubmitter(), geom=GEOM, template=TEMPLATE,
              submit={"kind": "django", "initial_backoff_s": 0.5})
    rig.scan_ends()
    rig.run(2.0)
    key = f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    row = rig.journal.get(key)
    assert row is not None and row.status == jr.SUBMITTED
    job = Job.objects.get(dedup_key=key)
    assert str(job.pk) == row.job_id and job.source == "epics" and job.label == "BL scan 7"
    assert job.parameters["data"]["file_pattern"] == f"{tmp_path}/scan7_data_#06d.h5"
    # where each parameter came from reaches the job and its page: a PV, the template, the bridge
    prov = job.provenance
    assert prov["experiment.scan_dims"]["source"] == "pv" and prov["experiment.scan_dims"]["pv"] == "ROWS, COLS"
    assert prov["reconstruction.iterations"] == {"source": "template", "value": 3}
    assert prov["experiment.job_id"]["source"] == "bridge"
    client.force_login(django_user_model.objects.create_user("viewer", password="pw-12345-xyz"))
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    table = html.split('id="provenance"')[1].split("</table>")[0]
    scan_dims_row = table.split("<th>experiment.scan_dims</th>")[1].split("</tr>")[0]
    assert "<td>PV</td>" in scan_dims_row and "<code>ROWS, COLS</code>" in scan_dims_row
    iterations_row = table.split("<th>reconstruction.iterations</th>")[1].split("</tr>")[0]
    assert "<td>3</td><td>template</td>" in iterations_row

    def finished() -> bool:
        job.refresh_from_db()
        return job.status in ("done", "failed", "cancelled")

    wait_for(finished, 120, "the job to finish", interval_s=0.2)
    assert job.status == "done", job.message
    # submitting the same scan again (a retry after a lost reply) returns the same job
    again = DjangoSubmitter().submit(SubmitRequest(job_params(job), key, "x"))
    assert again == str(job.pk) and Job.objects.filter(dedup_key=key).count() == 1


def job_params(job):
    from reconstruction import Parameters

    return Parameters.from_dict(job.parameters)


def test_bad_source_is_a_rejection_not_a_retry(bridge_site) -> None:
    from reconstruction import Parameters
    from webapp.jobs.models import Job

    with pytest.raises(SubmitRejected, match="source"):
        DjangoSubmitter().submit(SubmitRequest(Parameters(), "k", "l", source="nope"))
    assert not Job.objects.filter(dedup_key="k").exists()


def test_a_process_without_a_worker_or_redis_is_told_once_that_its_jobs_wait(bridge_site, caplog) -> None:
    """A bridge beside an embedded server writing to its SQLite (kind = "django" in its own process): its jobs
    go to a broker no worker reads, so it says so, once, and names the two ways out."""
    from reconstruction import Parameters

    caplog.set_level("WARNING", logger="epics_bridge.submit")
    submitter = DjangoSubmitter()
    for n in (1, 2):
        submitter.submit(SubmitRequest(Parameters.from_cmdstr("./ptycho -simulate=1 -size=16 -i=1"), f"k{n}", "l"))
    warnings = [r.getMessage() for r in caplog.records if "no worker and no Redis" in r.getMessage()]
    assert len(warnings) == 1 and "serve --bridge" in warnings[0] and 'kind = "http"' in warnings[0]


def test_a_streaming_job_whose_worker_was_lost_is_failed_and_replaced_by_one_batch_job(bridge_site,
                                                                                       tmp_path: Path) -> None:
    """The web side's reconciler fails the streaming job of a dead worker (never re-queues it); the bridge, which
    covered the scan's end with that job, sees the failure and queues the one batch job under ``key#batch``."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp.jobs import reconciler
    from webapp.jobs.models import Job
    from webapp.workers.heartbeat import this_host

    rig = Rig(tmp_path, DjangoSubmitter(), geom=GEOM, template=TEMPLATE,
              submit={"kind": "django", "initial_backoff_s": 0.5}, stream={"enabled": True})
    rig.value("BUSY", 1)
    rig.run(1.0)
    key = f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    stream = Job.objects.get(dedup_key=key)
    dead = f"{this_host()}:{2**22 + 1}"  # above any pid_max: a worker that died
    Job.objects.filter(pk=stream.pk).update(status="running", worker=dead, attempts=1,
                                            started=timezone.now() - timedelta(seconds=30),
                                            live={"phase": "acquiring", "frames_planned": 12, "frames_received": 5})
    write_scan_files(tmp_path, "scan7", GEOM)
    rig.scan_ends()
    rig.run(2.0)
    assert rig.journal.get(key).status == jr.FOLLOWING and Job.objects.count() == 1  # running: it covers the end
    assert reconciler.reconcile_once(bridge_site).failed == [stream.pk]
    rig.run(3.0)
    stream.refresh_from_db()
    assert stream.status == "failed" and "lost while streaming, after 5 of 12 frames" in stream.message
    batch = Job.objects.get(dedup_key=key + jr.BATCH_SUFFIX)
    assert batch.parameters["data"]["live_source"] == "none" and Job.objects.count() == 2
    assert "failed after 5 frames" in rig.journal.events("stream_failed_batch")[0]["message"]
    assert not reconciler.reconcile_once(bridge_site).failed
    rig.run(3.0)
    assert Job.objects.count() == 2


def test_a_streaming_job_whose_worker_stopped_is_failed_and_replaced_by_one_batch_job(bridge_site,
                                                                                      tmp_path: Path) -> None:
    """A worker stopped (Dramatiq's shutdown, as on SIGTERM) while the bridge's streaming job waited for its live
    file: the job ends failed at once, not re-queued, and the bridge, which covered the scan's end with it, queues
    the one batch job under ``key#batch``."""
    from webapp.jobs import runner
    from webapp.jobs.models import Job

    rig = Rig(tmp_path, DjangoSubmitter(), geom=GEOM, template=TEMPLATE,
              submit={"kind": "django", "initial_backoff_s": 0.5},
              stream={"enabled": True, "values": {"data.live_stall_s": 60}})
    rig.value("BUSY", 1)
    rig.run(1.0)
    key = f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    stream = Job.objects.get(dedup_key=key)
    worker = Worker(bridge_site, queues={"reconstruct"}, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        wait_for(lambda: Job.objects.filter(pk=stream.pk, status="running").exists(), 30, "the job to run")
        write_scan_files(tmp_path, "scan7", GEOM)
        rig.scan_ends()
        rig.run(2.0)
        assert rig.journal.get(key).status == jr.FOLLOWING  # running: it covers the end
    finally:
        worker.stop(timeout=10_000)
        runner.clear_stop()
    stream.refresh_from_db()
    assert stream.status == "failed" and "stopped while streaming, after 0 frames" in stream.message
    rig.run(3.0)
    batch = Job.objects.get(dedup_key=key + jr.BATCH_SUFFIX)
    assert batch.parameters["data"]["live_source"] == "none" and Job.objects.count() == 2
    (why,) = [e["message"] for e in rig.journal.events("stream_failed_batch")]
    assert f"streaming job {stream.pk} failed before any frame (its worker" in why and "stopped while" in why
    rig.run(3.0)
    assert Job.objects.count() == 2 and stream.attempts == 1

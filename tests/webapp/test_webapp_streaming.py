"""Streaming jobs (issue 21) on the worker: a real writer process (``ptychopy simwrite``) fills an SWMR file inside
the data roots while the worker reconstructs it. Frames carry the stream's state, the row keeps it, the API shows
it; an abort and a stall keep a partial result labelled partial; frames out of order are placed; a cancel keeps
what arrived; DM is refused; a live source's file need not exist at submit but must be inside the data roots. A
worker that stops (the Dramatiq shutdown of SIGTERM or an embedded stop) never hands a streaming job back: it ends
failed with the partial result of the frames that arrived, or at once while it waits for its file."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from dramatiq.middleware import TimeLimitExceeded
from webapp_helpers import api_auth, api_post, small_parameters, stop_worker_when, wait_for

from reconstruction import Parameters
from reconstruction.io import read_result
from webapp.jobs import reconciler, runner, services
from webapp.jobs.models import Job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

SCAN = "./ptycho -size=32 -scanDims=8,8 -step=150e-9,150e-9 -beamSize=500e-9 -photons=1e6 -seed=0"
REC = "-sqrtData=1 -updateProbe=2 -phaseConstraint=0 -device=cpu -algorithm=ePIE -liveSource=swmr"
N = 64


def _stream(data_root: Path, broker, worker, writer_args: list[str], flags: str = "-liveFinish=10",
            name: str = "scan.h5", file_first: bool = False) -> Job:
    """Submit a streaming job on ``name`` and start the writer (``file_first``: once the file exists, for a short
    -liveStall), wait for the job; the finished row."""
    path = data_root / name
    writer = subprocess.Popen([sys.executable, "-m", "ptychopy", "simwrite", str(path), SCAN, *writer_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while file_first and not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        job = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={path} {flags}"))
        broker.join("reconstruct", fail_fast=True)
        worker.join()
        _out, err = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert writer.returncode == 0, err
    job.refresh_from_db()
    return job


def test_a_streaming_job_shows_frames_arriving_and_writes_the_batch_result(data_root, broker, worker, sent_frames,
                                                                         client, token):
    job = _stream(data_root, broker, worker, ["--rate", "100"])
    assert job.status == "done", job.message
    assert job.live["outcome"] == "ended" and job.live["frames_received"] == N and job.live["frames_dropped"] == 0
    assert not job.partial and job.message == ""
    live = [h["live"] for h, images in sent_frames if "live" in h and images]
    received = [x["frames_received"] for x in live]
    assert received == sorted(received) and received[-1] == N and all(x["frames_dropped"] == 0 for x in live)
    assert live[-1]["phase"] == "ended" and live[-1]["frames_in_image"] == N
    assert job.live["phase"] == "ended" and job.live["frames_in_image"] == N
    positions = [h["positions"] for h, _ in sent_frames if "positions" in h]
    assert len(positions[-1]["row"]) == N  # the positions measured so far: all of them at the end
    res = read_result(job.result_path)
    assert res.inputs["live"]["frames_received"] == N and res.object.size > 0
    body = client.get(f"/api/v1/jobs/{job.pk}/", **api_auth(token)).json()
    assert body["streaming"] is True and body["partial"] is False and body["live"]["frames_received"] == N


def test_an_aborted_scan_keeps_its_partial_result_labelled_partial(data_root, broker, worker, client, user, token):
    job = _stream(data_root, broker, worker, ["--rate", "400", "--abort-after", "30"])
    assert job.status == "done", job.message
    assert job.partial and job.message == f"partial: scan aborted after 30 of {N} frames"
    assert read_result(job.result_path).stopped_early == job.message
    assert client.get(f"/api/v1/jobs/{job.pk}/", **api_auth(token)).json()["partial"] is True
    client.force_login(user)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="partial" class="partial-label" >' in page or 'id="partial" class="partial-label">' in page


def test_a_stalled_scan_times_out_with_its_partial_result(data_root, broker, worker):
    job = _stream(data_root, broker, worker, ["--rate", "400", "--stop-after", "20"], "-liveFinish=5 -liveStall=1",
                  file_first=True)
    assert job.status == "done" and job.live["outcome"] == "stalled" and job.partial
    assert job.message == f"partial: scan stalled after 20 of {N} frames"


def test_frames_out_of_order_and_a_duplicate_are_placed_and_counted(data_root, broker, worker):
    job = _stream(data_root, broker, worker, ["--rate", "400", "--shuffle", "8", "--duplicate", "5"])
    assert job.status == "done" and not job.partial, job.message
    assert job.live["out_of_order"] > 0 and job.live["duplicates_ignored"] == [5]
    assert job.live["frames_received"] == N


def test_a_cancelled_streaming_job_keeps_the_frames_that_arrived(data_root, broker, worker, user):
    path = data_root / "slow.h5"
    job = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={path} -liveFinish=50"), owner=user)
    writer = subprocess.Popen([sys.executable, "-m", "ptychopy", "simwrite", str(path), SCAN, "--rate", "10"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if (job.live or {}).get("frames_received", 0) >= 5:
                break
            time.sleep(0.1)
        services.cancel_job(job, user)
        broker.join("reconstruct", fail_fast=True)
        worker.join()
    finally:
        writer.kill()
        writer.wait()
    job.refresh_from_db()
    assert job.status == "cancelled" and job.partial and job.live["outcome"] == "cancelled"
    assert 5 <= job.live["frames_received"] < N and job.live["finish_iterations"] == 0
    assert job.message.startswith("cancelled after ") and Path(job.result_path).is_file()


def test_a_stopped_worker_fails_its_streaming_job_keeping_the_frames_that_arrived_never_requeued(data_root,
                                                                                                 broker):
    path = data_root / "slow.h5"
    job = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={path} -liveFinish=50"))
    writer = subprocess.Popen([sys.executable, "-m", "ptychopy", "simwrite", str(path), SCAN, "--rate", "10"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stop_s = stop_worker_when(broker, lambda: (Job.objects.get(pk=job.pk).live or {}).get(
            "frames_received", 0) >= 5)
    finally:
        writer.kill()
        writer.wait()
    job.refresh_from_db()
    k = job.live["frames_received"]
    assert job.status == "failed" and job.attempts == 1 and 5 <= k < N, job.message
    assert (f"stopped while streaming, after {k} of {N} frames received (phase acquiring); the partial result of "
            "those frames was kept; not re-queued (the frames went past)") in job.message
    assert job.partial and job.live["outcome"] == "stopped" and job.live["finish_iterations"] == 0
    assert read_result(job.result_path).stopped_early == f"partial: run stopped after {k} of {N} frames"
    assert reconciler.requeue_unfinished() == 0 and not broker.queues["reconstruct"].qsize()
    assert stop_s < 10, stop_s


def test_a_streaming_job_waiting_for_its_file_ends_at_once_when_its_worker_stops(data_root, broker):
    job = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={data_root / 'never.h5'} -liveStall=60"))
    stop_s = stop_worker_when(broker, lambda: Job.objects.filter(pk=job.pk, status="running").exists())
    job.refresh_from_db()
    assert job.status == "failed" and job.result_path == "" and stop_s < 2, (job.message, stop_s)
    assert "stopped while streaming, after 0 frames received (phase waiting); not re-queued" in job.message


def test_a_cancel_ends_a_streaming_job_still_waiting_for_its_file(data_root, broker, worker, user):
    job = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={data_root / 'never.h5'} -liveStall=60"),
                              owner=user)
    wait_for(lambda: Job.objects.filter(pk=job.pk, status="running").exists())
    t0 = time.monotonic()
    services.cancel_job(job, user)
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, timeout_s=10)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.message == "cancelled before any frame arrived"
    assert time.monotonic() - t0 < 2


def test_an_interrupted_streaming_job_is_failed_where_a_batch_job_is_handed_back(data_root, monkeypatch):
    from webapp.jobs import streaming

    def interrupted(*_args):
        raise TimeLimitExceeded()

    monkeypatch.setattr(streaming, "execute_streaming", interrupted)
    stream = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={data_root / 'x.h5'}"))
    batch = services.submit_job(small_parameters(iterations=1_000_000))
    monkeypatch.setattr(runner.JobRun, "iterate", lambda self, rec: interrupted())
    for job in (stream, batch):
        with pytest.raises(TimeLimitExceeded):
            runner.run_job(job.pk)
        job.refresh_from_db()
    assert stream.status == "failed" and "stopped while streaming, after 0 frames" in stream.message
    assert batch.status == "queued" and "re-queued" in batch.message


def test_dm_is_refused_with_a_live_source(data_root, broker, worker):
    job = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={data_root / 'x.h5'}").replace(
        {"reconstruction.algorithm": "DM"}))
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    job.refresh_from_db()
    assert job.status == "failed" and "DM keeps an exit wave per position" in job.message


def test_the_api_takes_a_live_source_not_written_yet_inside_the_data_roots_and_refuses_dm(data_root, client, token):
    later = data_root / "scan_later.h5"
    ok = api_post(client, "/api/v1/jobs/", {"cmdstr": f"{SCAN} {REC} -fp={later}"}, token)
    assert ok.status_code == 201, ok.content
    assert ok.json()["streaming"] is True and ok.json()["live"] is None
    outside = api_post(client, "/api/v1/jobs/", {"cmdstr": f"{SCAN} {REC} -fp=/tmp/elsewhere.h5"}, token)
    assert outside.status_code == 400 and "outside the data folders" in outside.content.decode()
    pva = api_post(client, "/api/v1/jobs/", {"cmdstr": f"{SCAN} {REC.replace('-liveSource=swmr', '')} "
                                               "-liveSource=pva://t:Pva1:Image?scan=t:Scan:"}, token)
    assert pva.status_code == 201, pva.content  # frames over pvAccess: no file to name
    dm = api_post(client, "/api/v1/jobs/", {"cmdstr": f"{SCAN} {REC.replace('ePIE', 'DM')} -fp={later}"}, token)
    assert dm.status_code == 400 and "DM keeps an exit wave per position" in dm.content.decode()


def test_a_pva_source_naming_a_bridge_buffer_not_in_ptychopy_pva_buffers_is_refused_at_submit(
        data_root, client, token, settings):
    pva = (f"{SCAN} {REC.replace('-liveSource=swmr', '')} -liveSource=pva://t:Pva1:Image?scan=t:Scan:"
           "&buffer=ptychopy:bridge:t:Frames&buffer_at=")
    refused = api_post(client, "/api/v1/jobs/", {"cmdstr": pva + "10.1.2.3:22"}, token)
    assert refused.status_code == 400, refused.content  # a worker would open a connection to any host and port
    assert "buffer_at=10.1.2.3:22: this server lets workers reach only the EPICS bridges' frame buffers named in " \
           "PTYCHOPY_PVA_BUFFERS (none); a bridge submitting over HTTP needs its [stream] buffer_address there" \
           in refused.content.decode()
    settings.PTYCHOPY_PVA_BUFFERS = ["10.1.2.3:5079"]
    ok = api_post(client, "/api/v1/jobs/", {"cmdstr": pva + "10.1.2.3:5079"}, token)
    assert ok.status_code == 201, ok.content
    assert Job.objects.get().parameters["data"]["live_source"].endswith("&buffer_at=10.1.2.3:5079")


def test_the_bridge_reads_a_jobs_state_in_process_and_over_the_api(data_root, live_server, token):
    from epics_bridge.django_submit import DjangoSubmitter
    from epics_bridge.http_submit import HttpSubmitter

    job = services.submit_job(Parameters.from_cmdstr(f"{SCAN} {REC} -fp={data_root / 'later.h5'}"))
    Job.objects.filter(pk=job.pk).update(status="failed", message="LiveSourceError: no file",
                                         live={"frames_received": 0})
    expected = {"status": "failed", "message": "LiveSourceError: no file", "live": {"frames_received": 0}}
    assert DjangoSubmitter().job_state(str(job.pk)) == expected
    over_http = HttpSubmitter(live_server.url, token)
    assert over_http.job_state(str(job.pk)) == expected
    assert over_http.job_state(str(job.pk + 1000)) is None


def test_the_form_opens_a_streaming_job_on_a_file_not_written_yet(client, user, data_root):
    from test_webapp_form import form_data

    client.force_login(user)
    later = data_root / "form_later.h5"
    params = Parameters.from_cmdstr(f"{SCAN} {REC} -fp={later}")
    response = client.post("/jobs/new/", form_data(params))
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get()
    assert job.is_streaming and job.parameters["data"]["file_pattern"] == str(later)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="st-live-box"' in page and 'id="st-live-box" hidden' not in page  # frames shown for streaming


def test_the_form_takes_a_pvaccess_live_source_typed_in_and_refuses_a_bad_word_naming_the_flag(client, user):
    # -liveSource is a choice that also takes pva://<PV> (the tree's open_prefix): the form's field is text, not a
    # select that could only offer none/swmr/replay
    from test_webapp_form import form_data

    client.force_login(user)
    params = Parameters.from_cmdstr(f"{SCAN} {REC.replace('-liveSource=swmr', '')} "
                                    "-liveSource=pva://t:Pva1:Image?scan=t:Scan:")
    data = form_data(params)
    assert any(v == "pva://t:Pva1:Image?scan=t:Scan:" for v in data.values())
    response = client.post("/jobs/new/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Job.objects.get().parameters["data"]["live_source"] == "pva://t:Pva1:Image?scan=t:Scan:"
    bad = {k: ("sw mr" if v == "pva://t:Pva1:Image?scan=t:Scan:" else v) for k, v in data.items()}
    page = client.post("/jobs/new/", bad).content.decode()
    assert "one of none, swmr, replay, or pva://..." in page and Job.objects.count() == 1

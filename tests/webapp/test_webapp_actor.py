"""The Dramatiq actor on the StubBroker with a worker thread: statuses, frames, cancel, OOM, idempotence."""

import os

import h5py
import numpy as np
import pytest
from webapp_helpers import dead_pid, small_parameters, wait_for

from reconstruction.errors import DeviceMemoryError
from webapp.jobs import reconciler, runner, services
from webapp.jobs.models import Job, WorkerHeartbeat
from webapp.jobs.results import job_results_dir
from webapp.live.frames import decode_frame
from webapp.workers.heartbeat import this_host

pytestmark = pytest.mark.django_db(transaction=True)


def test_job_runs_to_done_with_frames_of_increasing_iteration(worker, broker, sent_frames, user):
    job = services.submit_job(small_parameters(iterations=40), owner=user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    job.refresh_from_db()
    assert job.status == "done", job.message
    assert job.iteration == 40 and len(job.error_history) == 40 and job.final_error == job.error_history[-1]
    assert job.started <= job.finished and job.device.startswith("CPU")
    assert job.worker == f"{this_host()}:{os.getpid()}"
    with h5py.File(job.result_path) as f:
        assert len(f.keys()) > 0
    running = [h for h, _ in sent_frames if h["status"] == "running"]
    assert len(running) >= 2
    iterations = [h["iteration"] for h in running]
    assert iterations == sorted(iterations) and iterations[-1] == 40
    seqs = [h["seq"] for h, _ in sent_frames]
    assert seqs == sorted(set(seqs))
    last_header, last_images = sent_frames[-1]
    assert last_header["status"] == "done" and last_header["iteration"] == 40
    assert {"object_amplitude", "object_phase", "probe_amplitude_0"} <= set(last_images)
    assert all(max(img.shape) <= 512 and img.dtype.name == "uint8" for img in last_images.values())
    stored, _ = decode_frame(bytes(job.last_preview))
    assert stored["seq"] == job.last_seq == last_header["seq"] and stored["status"] == "done"


def test_frames_carry_pixel_sizes_every_probe_modes_amplitude_phase_and_power(worker, broker, sent_frames):
    params = small_parameters(iterations=4).replace({"reconstruction.probe_modes": 2,
                                                     "reconstruction.update_modes_from": 1})
    services.submit_job(params)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    header, images = sent_frames[-1]
    assert header["status"] == "done"
    assert {"probe_amplitude_0", "probe_phase_0", "probe_amplitude_1", "probe_phase_1"} <= set(images)
    assert header["pixel_size_m"] == pytest.approx(params.pixel_size_m)
    entries = {e["name"]: e for e in header["images"]}
    # the 32 px probe and the cropped object fit 512 px: one preview pixel is one reconstruction pixel
    for name in ("object_amplitude", "probe_phase_1"):
        assert entries[name]["pixel_m"] == pytest.approx(params.pixel_size_m, rel=1e-5)
    power = header["probe_power"]
    assert len(power) == 2 and sum(power) == pytest.approx(1, abs=1e-3) and power[0] > power[1] > 0
    # one position's measured and model pattern (32 px patterns: not binned), no sample-plane size
    assert images["diffraction_measured"].shape == images["diffraction_model"].shape == (32, 32)
    assert 0 <= header["diffraction_position"] < 36 and "pixel_m" not in entries["diffraction_model"]
    assert header["diffraction_binning"] == 1  # detector pixels per preview pixel along a side (the page's hover)


def test_frames_show_the_diffraction_position_a_viewer_chose_and_every_positions_error(worker, broker,
                                                                                         sent_frames):
    from webapp.live import viewer_choice

    job = services.submit_job(small_parameters(iterations=4))
    viewer_choice.choose_position(job.pk, 5)  # as the websocket does (tests/webapp/test_webapp_consumers.py)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    header, _ = sent_frames[-1]
    assert header["status"] == "done" and header["diffraction_position"] == 5 and header["n_positions"] == 36
    errors = header["positions"]["error"]
    assert len(errors) == 36 and all(e is not None and 0 < e < 2 for e in errors)  # 32 px: all in one preview
    viewer_choice.choose_position(job.pk, 36)  # not a position of this scan: the middle of the scan instead
    assert viewer_choice.chosen_position(job.pk, 36) is None


def test_frames_are_time_throttled(worker, broker, sent_frames, settings):
    settings.PTYCHOPY_FRAME_RATE_HZ = 0.001  # one frame per 1000 s: only the final iteration's and the status
    job = services.submit_job(small_parameters(iterations=30))
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    iterations = [h["iteration"] for h, _ in sent_frames if h["status"] == "running"]
    assert iterations == [1, 30]  # the first one is due at once, then only the final one
    assert Job.objects.get(pk=job.pk).status == "done"


def test_cancel_stops_between_iterations_and_keeps_the_last_iterate(worker, broker, sent_frames, user):
    job = services.submit_job(small_parameters(iterations=1_000_000), owner=user)
    wait_for(lambda: Job.objects.filter(pk=job.pk, iteration__gte=5).exists())
    services.cancel_job(Job.objects.get(pk=job.pk), user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    job.refresh_from_db()
    assert job.status == "cancelled" and "the result so far was kept" in job.message
    assert 5 <= job.iteration < 1_000_000 and len(job.error_history) == job.iteration
    from reconstruction.io import read_result

    result = read_result(job.result_path)
    assert len(result.errors) == job.iteration
    assert sent_frames[-1][0]["status"] == "cancelled"


def test_device_memory_error_fails_with_the_memory_needed(worker, broker, sent_frames, monkeypatch):
    from reconstruction.driver import Reconstruction

    def out_of_memory(cls, params, **kw):
        raise DeviceMemoryError("does not fit on GPU 0", needed_bytes=12 * 2**30, available_bytes=4 * 2**30)

    monkeypatch.setattr(Reconstruction, "from_parameters", classmethod(out_of_memory))
    job = services.submit_job(small_parameters())
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    job.refresh_from_db()
    assert job.status == "failed"
    assert "GPU out of memory" in job.message and "12.00 GiB" in job.message and "4.00 GiB" in job.message
    assert sent_frames[-1][0]["status"] == "failed" and "12.00 GiB" in sent_frames[-1][0]["message"]


def test_a_done_job_is_not_run_again(small_params, sent_frames):
    job = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="done", iteration=12)
    assert runner.run_job(job.pk) == "already finished"
    job.refresh_from_db()
    assert job.status == "done" and job.iteration == 12 and not sent_frames


def test_a_job_left_running_by_a_dead_worker_is_rerun_from_the_start(small_params, sent_frames):
    job = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                             worker=f"{this_host()}:{dead_pid()}", iteration=7, error_history=[1.0] * 7, last_seq=4)
    assert runner.run_job(job.pk) == "done"
    job.refresh_from_db()
    assert job.status == "done" and job.iteration == small_params.reconstruction.iterations
    assert len(job.error_history) == job.iteration and job.last_seq > 4


def test_a_job_running_on_a_live_worker_is_left_alone(small_params, sent_frames):
    job = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                             worker=f"{this_host()}:{os.getppid()}", iteration=3)
    assert runner.run_job(job.pk) == "running elsewhere"
    job.refresh_from_db()
    assert job.status == "running" and job.iteration == 3


def test_a_late_heartbeat_on_another_host_is_checked_again_later(small_params, broker, settings):
    from datetime import timedelta

    from django.utils import timezone

    job = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="running",
                             worker="gpu-node-3:42")
    WorkerHeartbeat.objects.create(worker_id="gpu-node-3:42", host="gpu-node-3", pid=42,
                                   last_seen=timezone.now() - timedelta(seconds=8))
    assert runner.run_job(job.pk).startswith("running elsewhere")
    delayed = broker.queues["reconstruct.DQ"]
    assert delayed.qsize() == 1
    WorkerHeartbeat.objects.filter(worker_id="gpu-node-3:42").update(
        last_seen=timezone.now() - timedelta(seconds=settings.PTYCHOPY_HEARTBEAT_STALE_S + 1))
    job.refresh_from_db()
    claimed = runner.claim(job.pk)
    assert isinstance(claimed, Job) and claimed.status == "running"


def test_worker_heartbeat_records_the_current_job(worker, broker, sent_frames, settings):
    settings.PTYCHOPY_HEARTBEAT_S = 0.05
    job = services.submit_job(small_parameters(iterations=1_000_000))
    beat = wait_for(lambda: WorkerHeartbeat.objects.filter(current_job_id=job.pk).first())
    assert beat.worker_id == f"{this_host()}:{os.getpid()}" and beat.alive
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    assert Job.objects.get(pk=job.pk).status == "cancelled"


def test_owner_is_mailed_when_they_asked(worker, broker, sent_frames, user, mailoutbox):
    job = services.submit_job(small_parameters(iterations=3), owner=user, notify_email=True)
    services.submit_job(small_parameters(iterations=3), owner=user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["alice@example.org"] and f"job {job.pk} done" in mail.subject
    assert f"/jobs/{job.pk}/" in mail.body


def test_deleting_a_running_job_stops_it_and_leaves_no_files(worker, broker, sent_frames, user):
    job = services.submit_job(small_parameters(iterations=1_000_000), owner=user)
    wait_for(lambda: Job.objects.filter(pk=job.pk, iteration__gte=2).exists())
    services.delete_job(Job.objects.get(pk=job.pk), user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not job_results_dir(job.pk).exists()


def test_an_interrupted_run_hands_the_job_back_to_the_queue(small_params, sent_frames, monkeypatch):
    from reconstruction.driver import Reconstruction

    class Shutdown(BaseException):
        pass

    def interrupted(cls, params, **kw):
        raise Shutdown()

    monkeypatch.setattr(Reconstruction, "from_parameters", classmethod(interrupted))
    job = Job.objects.create(parameters=small_params.to_dict(), algorithm="ePIE", status="queued")
    with pytest.raises(Shutdown):
        runner.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == "queued" and "re-queued" in job.message


def test_heartbeats_of_dead_workers_are_pruned(small_params):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.workers.heartbeat import prune

    WorkerHeartbeat.objects.create(worker_id=f"{this_host()}:{dead_pid()}", host=this_host(), pid=dead_pid())
    WorkerHeartbeat.objects.create(worker_id=f"{this_host()}:{os.getppid()}", host=this_host(), pid=os.getppid())
    WorkerHeartbeat.objects.create(worker_id="far:1", host="far", pid=1,
                                   last_seen=timezone.now() - timedelta(days=2))
    WorkerHeartbeat.objects.create(worker_id="near:1", host="near", pid=1)
    assert prune() == 2
    assert sorted(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == sorted(
        [f"{this_host()}:{os.getppid()}", "near:1"])


def test_a_stopping_embedded_worker_hands_its_job_back(worker, broker, sent_frames):
    job = services.submit_job(small_parameters(iterations=1_000_000))
    wait_for(lambda: Job.objects.filter(pk=job.pk, iteration__gte=2).exists())
    runner.request_stop()
    try:
        wait_for(lambda: Job.objects.filter(pk=job.pk, status="queued").exists())
        assert runner.run_job(job.pk) == "worker stopping"
    finally:
        runner.clear_stop()
    job.refresh_from_db()
    assert job.status == "queued" and "re-queued" in job.message and 2 <= job.iteration < 1_000_000
    assert reconciler.requeue_unfinished() == 1
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)  # let the worker fixture stop quickly


def test_frames_of_jobs_that_refine_positions_or_fit_flux_carry_them_and_others_do_not(worker, broker, sent_frames):
    params = small_parameters(iterations=8).replace({"reconstruction.algorithm": "LSQML",
                                                     "reconstruction.refine_positions": True,
                                                     "reconstruction.position_search_from": 3})
    job = services.submit_job(params)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    assert Job.objects.get(pk=job.pk).status == "done"
    last = sent_frames[-1][0]
    assert last["status"] == "done"
    pos = last["positions"]
    assert pos["stride"] == 1 and all(len(pos[k]) == 36 for k in ("row", "col", "row0", "col0"))
    assert pos["refined"] and "flux" not in pos
    moved = np.hypot(np.subtract(pos["row"], pos["row0"]), np.subtract(pos["col"], pos["col0"]))
    assert 0 < moved.max() < 3
    from reconstruction.io import read_result

    refined = read_result(Job.objects.get(pk=job.pk).result_path).positions_px
    np.testing.assert_allclose(refined, np.c_[pos["row"], pos["col"]], atol=1e-3)
    sent_frames.clear()
    plain = small_parameters(iterations=2)
    services.submit_job(plain)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    assert sent_frames and all(not h["positions"]["refined"] and "row0" not in h["positions"] for h, _ in sent_frames)
    assert len(sent_frames[-1][0]["positions"]["row"]) == 36
    sent_frames.clear()
    services.submit_job(small_parameters(iterations=4).replace({"reconstruction.algorithm": "LSQML",
                                                                "reconstruction.variable_intensity": True}))
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    pos = sent_frames[-1][0]["positions"]
    assert not pos["refined"] and "row0" not in pos and len(pos["flux"]) == 36
    assert abs(np.mean(pos["flux"]) - 1) < 0.05 and min(pos["flux"]) < max(pos["flux"])


def test_the_worker_stores_the_run_plan_and_the_job_page_and_api_show_it(worker, broker, sent_frames, user, client):
    job = services.submit_job(small_parameters(iterations=3), owner=user)
    assert job.run_plan == {}
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    job.refresh_from_db()
    assert job.status == "done", job.message
    plan = job.run_plan
    assert (plan["implementation"], plan["residency"], plan["split"]) == ("reference", "resident", False)
    assert plan["implementation_reason"] == "the CPU runs the NumPy reference engines"
    client.force_login(user)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    shown = page[page.index('id="run-plan"'):]
    shown = shown[:shown.index("</dd>")]
    assert f"reference {job.algorithm}, data resident, one CPU" in shown
    assert "the CPU runs the NumPy reference engines; on the CPU the data stay in host memory; one device" in shown
    assert "mean of its iterates" not in shown  # ePIE reports its last iterate
    from webapp.jobs.serialize import job_detail

    assert job_detail(job)["run_plan"] == plan
    lsqml = services.submit_job(small_parameters(iterations=3, **{"reconstruction.algorithm": "LSQML"}), owner=user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    lsqml.refresh_from_db()
    assert lsqml.status == "done" and lsqml.run_plan["iterate_mean"] is True, lsqml.message
    page = client.get(f"/jobs/{lsqml.pk}/").content.decode()
    shown = page[page.index('id="run-plan"'):]
    assert "one device; the run reports the mean of its iterates (span 5" in shown[:shown.index("</dd>")]

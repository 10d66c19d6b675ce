"""A finished job's diffraction panel (/jobs/<id>/diffraction/?position=k): the measured pattern and the model of
the result file, equal to the physics; the refusals name what is wrong."""

from __future__ import annotations

import base64
import fcntl
import time

import numpy as np
import pytest
from webapp_helpers import api_auth, small_parameters

from reconstruction import Result, simulated_patterns
from reconstruction.io import write_result
from reconstruction.physics import propagation, subpixel
from reconstruction.simulate import simulate_from_parameters
from webapp.jobs.models import Job
from webapp.jobs.results import job_results_dir
from webapp.jobs.services import delete_job


def finished_job(tmp_path, user, params, positions_px, truth, probe, scale=None) -> Job:
    result = Result(
        object=truth,
        probe=probe,
        positions_px=positions_px,
        errors=[0.1],
        rms=[],
        iteration_s=[0.1],
        algorithm="ePIE",
        device="cpu",
        pixel_size_m=params.pixel_size_m,
        parameters=params,
        intensity_scale=scale,
    )
    path = write_result(result, tmp_path / f"result_{len(Job.objects.all())}.h5")
    return Job.objects.create(
        owner=user, parameters=params.to_dict(), algorithm="ePIE", status="done", result_path=str(path)
    )


def log_counts(body: dict, name: str) -> np.ndarray:
    """The endpoint's image ``name`` back in log10(1 + counts)."""
    img = next(i for i in body["images"] if i["name"] == name)
    q = np.frombuffer(base64.b64decode(img["bdata"]), np.uint8).reshape(img["shape"]).astype(np.float64)
    return img["vmin"] + (img["vmax"] - img["vmin"]) * q / 255


@pytest.mark.django_db
def test_a_finished_jobs_model_pattern_is_the_physics_of_its_result_file(client, user, tmp_path):
    params = small_parameters().replace({"data.photons": 0})  # noise-free: the truth's model is the measurement
    sim = simulate_from_parameters(params)
    corners = np.floor(sim.data.positions_px + 0.5)  # the whole-pixel windows the simulation used
    moved = corners.copy()
    moved[7] += (0.3, -0.2)  # position 7 sub-pixel and at 0.8 of the flux
    scale = np.ones(len(corners), np.float32)
    scale[7] = 0.8
    job = finished_job(tmp_path, user, params, moved, sim.object_truth, sim.probe_truth, scale)
    client.force_login(user)

    exact = client.get(f"/jobs/{job.pk}/diffraction/?position=8").json()
    assert exact["position"] == 8 and exact["n_positions"] == 36 and exact["binning"] == 1
    measured = log_counts(exact, "diffraction_measured")
    assert measured.shape == (32, 32)
    counts = np.log10(1 + np.fft.fftshift(sim.data.intensities[8]))
    np.testing.assert_allclose(measured, counts, atol=exact["log_range"][1] / 255)
    np.testing.assert_allclose(log_counts(exact, "diffraction_model"), measured, atol=exact["log_range"][1] / 255)

    # the model of position 7: |F(probe moved by the fraction, times 0.8, times the object window)|^2
    body = client.get(f"/jobs/{job.pk}/diffraction/?position=7").json()
    r, c = corners[7].astype(int)
    lit = subpixel.moved_probes(np, sim.probe_truth, np.array([[0.3, -0.2]]))[0][0] * 0.8
    far = propagation.forward(np, lit * sim.object_truth[r : r + 32, c : c + 32])
    model = np.log10(1 + np.fft.fftshift(np.sum(np.abs(far) ** 2, axis=0)))
    step = body["log_range"][1] / 255
    np.testing.assert_allclose(log_counts(body, "diffraction_model"), model, atol=step)
    assert np.abs(log_counts(body, "diffraction_model") - log_counts(body, "diffraction_measured")).max() > 20 * step


@pytest.mark.django_db
def test_a_bad_position_no_result_or_no_raw_data_is_refused_naming_why(client, user, tmp_path, data_root):
    params = small_parameters()
    sim = simulate_from_parameters(params)
    corners = np.floor(sim.data.positions_px + 0.5)
    job = finished_job(tmp_path, user, params, corners, sim.object_truth, sim.probe_truth)
    url = f"/jobs/{job.pk}/diffraction/"
    assert client.get(f"{url}?position=1").status_code == 302  # to the login page
    client.force_login(user)
    answer = client.get(f"{url}?position=36")
    assert answer.status_code == 400
    assert answer.json()["error"] == f"position 36 is not one of job {job.pk}'s scan positions (0 to 35)"
    assert client.get(f"{url}?position=-1").json()["error"] == "position must be a whole number >= 0, got '-1'"
    assert client.get(f"/jobs/{job.pk + 100}/diffraction/?position=1").status_code == 404
    queued = Job.objects.create(owner=user, parameters=params.to_dict(), algorithm="ePIE")
    answer = client.get(f"/jobs/{queued.pk}/diffraction/?position=1")
    assert answer.status_code == 404 and answer.json()["error"] == f"job {queued.pk} has no result file (queued)"
    # a result whose raw scan has gone: 409 naming the file
    gone = params.replace({"data.simulate": False, "data.file_pattern": str(data_root / "gone.h5")})
    moved = finished_job(tmp_path, user, gone, corners, sim.object_truth, sim.probe_truth)
    answer = client.get(f"/jobs/{moved.pk}/diffraction/?position=1")
    assert answer.status_code == 409
    assert (
        answer.json()["error"].startswith(f"job {moved.pk}'s raw data cannot be read")
        and "gone.h5" in answer.json()["error"]
    )
    # a result of fewer positions than its scan (a stream that ended early): which frame is which is not known
    short = finished_job(tmp_path, user, params, corners[:30], sim.object_truth, sim.probe_truth)
    answer = client.get(f"/jobs/{short.pk}/diffraction/?position=1")
    assert answer.status_code == 409 and "the result holds 30 positions, the scan 36" in answer.json()["error"]
    client.logout()
    assert client.get(f"{url}?position=1", **api_auth("not-a-token")).status_code == 401


@pytest.mark.django_db
def test_a_simulated_jobs_clicks_show_the_simulations_noisy_pattern_kept_in_the_jobs_folder(client, user, tmp_path):
    params = small_parameters()  # 1e6 photons: Poisson noise, drawn over the whole scan
    sim = simulate_from_parameters(params)
    corners = np.floor(sim.data.positions_px + 0.5)
    job = finished_job(tmp_path, user, params, corners, sim.object_truth, sim.probe_truth)
    client.force_login(user)
    folder = job_results_dir(job.pk)
    for k in (8, 30):  # the first simulates the scan and keeps its patterns; the second reads them
        body = client.get(f"/jobs/{job.pk}/diffraction/?position={k}").json()
        counts = np.log10(1 + np.fft.fftshift(sim.data.intensities[k]))
        np.testing.assert_allclose(log_counts(body, "diffraction_measured"), counts, atol=body["log_range"][1] / 255)
        kept = sorted(p.name for p in folder.iterdir())  # the patterns and the lock their maker held
        assert len(kept) == 2 and kept[0].startswith("sim_patterns_") and kept[1] == kept[0] + ".lock", kept
    delete_job(job, user)
    assert not folder.exists()


@pytest.mark.django_db
def test_a_click_while_another_simulates_the_scan_is_answered_503_try_again_not_held(client, user, tmp_path,
                                                                                     monkeypatch):
    params = small_parameters()  # noisy: the first click simulates the whole scan and keeps its patterns
    sim = simulate_from_parameters(params)
    job = finished_job(tmp_path, user, params, np.floor(sim.data.positions_px + 0.5), sim.object_truth,
                       sim.probe_truth)
    client.force_login(user)
    folder = job_results_dir(job.pk)
    assert client.get(f"/jobs/{job.pk}/diffraction/?position=2").status_code == 200  # makes the patterns file
    (kept,) = folder.glob("sim_patterns_*.npy")
    kept.unlink()  # as before the first click, and another request (this test) is making it: it holds the lock
    monkeypatch.setattr(simulated_patterns, "LOCK_WAIT_S", 0.3)
    with open(folder / (kept.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        answer = client.get(f"/jobs/{job.pk}/diffraction/?position=8")
        assert time.monotonic() - t0 < 3
        assert answer.status_code == 503 and answer["Retry-After"] == "3"
        assert "being prepared" in answer.json()["error"] and "try again in a few seconds" in answer.json()["error"]
        fcntl.flock(lock, fcntl.LOCK_UN)
    body = client.get(f"/jobs/{job.pk}/diffraction/?position=8").json()  # free again: simulated and kept
    counts = np.log10(1 + np.fft.fftshift(sim.data.intensities[8]))
    np.testing.assert_allclose(log_counts(body, "diffraction_measured"), counts, atol=body["log_range"][1] / 255)

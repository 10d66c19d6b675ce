"""Production mode end to end with real processes: Daphne + ``python -m webapp.worker`` on Redis + PostgreSQL.

A job submitted over the JSON API streams >= 3 live frames over a real websocket, ends in the history with its
result file; a worker SIGKILLed mid-job leaves a job that a restarted worker finishes.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import socket
import time
import zipfile

import h5py
import pytest

from tests.support.frames import FINAL_STATUSES, Frame, collect_frames
from tests.support.processes import container_like_worker
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient, WebClient

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(240)]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def logged_in(stack: ProductionStack, user: User) -> WebClient:
    client = WebClient(stack.base_url)
    client.login(user.username, user.password)
    return client


def assert_live_frames(frames: list[Frame], job_id: int) -> None:
    assert frames, "no frame at all arrived over the websocket"
    for f in frames:
        assert int(f.header["job"]) == job_id, f"frame of job {f.header['job']} on job {job_id}'s socket"
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs), f"frame seq numbers go backwards: {seqs}"
    # a viewer that connects as the job is claimed first gets the "running, iteration 0" status frame, which has
    # no images yet; every frame of a finished iteration carries them
    running = [f for f in frames if f.status == "running" and f.iteration >= 1]
    iterations = [f.iteration for f in running]
    assert len(set(iterations)) >= 3, f">= 3 running frames with distinct iterations expected: {iterations}"
    assert iterations == sorted(iterations), f"iterations go backwards: {iterations}"
    names = sorted(running[0].images)
    assert names, f"running frames carry no image: {running[0].header}"
    changed = [n for n in names if running[0].images[n] != running[-1].images.get(n)]
    assert changed, f"no image changed between iteration {iterations[0]} and {iterations[-1]} ({names})"


MAGIC = {"tiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "png": (b"\x89PNG",)}


def assert_export(body: bytes, fmt: str) -> None:
    """One file of the format, or a zip of several (e.g. amplitude and phase)."""
    if body.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            members = zf.namelist()
            assert members, f"the {fmt} download is an empty zip"
            for name in members:
                assert_export(zf.read(name), fmt)
        return
    if fmt in MAGIC:
        assert body.startswith(MAGIC[fmt]), f"the {fmt} download is not a {fmt} file: {body[:16]!r}"
    else:
        assert body and b"\x00" not in body[:4096], f"the {fmt} download is not text"


def test_job_streams_live_frames_and_lands_in_history(prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    web = logged_in(prod_stack, alice)
    job = api.submit(small_sim_cmdstr(60, job_id="e2e-stream"), label="e2e-stream")
    job_id = int(job["id"])
    assert job.get("status") in {"queued", "running"}, job

    frames = asyncio.run(collect_frames(prod_stack.base_url, job_id, web.cookie_header(), prod_stack.origin,
                                        timeout=150))
    assert frames and frames[-1].status in FINAL_STATUSES, (
        f"the websocket never reported the end of job {job_id}: {[f.header for f in frames[-3:]]}")
    assert frames[-1].status == "done", (
        f"job {job_id} ended {frames[-1].status}: {frames[-1].header.get('error')}")
    assert frames[-1].iteration == frames[-1].header["iterations"] == 60, frames[-1].header
    assert_live_frames(frames, job_id)

    done = api.wait_status(job_id, {"done"}, timeout=20)
    assert done["status"] == "done"

    history = web.get("/")
    assert history.status == 200, history
    assert re.search(rf'href="/jobs/{job_id}/"', history.text), "the job is not linked from the history"
    assert "e2e-stream" in history.text

    download = web.get(f"/jobs/{job_id}/download/h5/")
    assert download.status == 200, download
    assert download.body.startswith(HDF5_MAGIC), "the h5 download is not an HDF5 file"
    with h5py.File(io.BytesIO(download.body), "r") as h5:
        images: list[str] = []
        h5.visititems(lambda name, obj: images.append(name) if isinstance(obj, h5py.Dataset)
                      and obj.dtype.kind == "c" and obj.ndim >= 2 else None)
    assert images, "no complex image (object, probe) in the result file"
    assert list(prod_stack.results_dir.rglob("*.h5")), f"no result file under {prod_stack.results_dir}"
    for fmt in ("tiff", "png", "csv"):
        resp = web.get(f"/jobs/{job_id}/download/{fmt}/")
        assert resp.status == 200, f"{fmt} download: {resp!r}"
        assert_export(resp.body, fmt)


def test_worker_killed_mid_job_job_finishes_after_restart(prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    web = logged_in(prod_stack, alice)
    for other in prod_stack.workers[1:]:  # another test's second worker would take the job half the time
        other.stop()
    worker = prod_stack.start_worker(0)
    job_id = int(api.submit(small_sim_cmdstr(400, job_id="e2e-crash"), label="e2e-crash")["id"])

    # Watch until the job is visibly mid-way (a running frame past iteration 2), then crash the worker.
    frames = asyncio.run(collect_frames(prod_stack.base_url, job_id, web.cookie_header(), prod_stack.origin,
                                        min_frames=3, until_final=False, timeout=90))
    running = [f for f in frames if f.status == "running"]
    assert running, f"job {job_id} never ran: {[f.header for f in frames]}"
    assert running[-1].iteration < 400, "the job finished before the crash could be staged; make it longer"
    worker.kill()
    assert not worker.alive
    # with no worker alive, the web process's reconciler re-queues the job within a few seconds (the page shows
    # the truth, not "running")
    row = api.wait_status(job_id, {"queued"}, timeout=10)
    assert "stopped mid-run" in row["message"], row

    t0 = time.monotonic()
    prod_stack.start_worker(0)  # a fresh process takes the re-queued job
    done = api.wait_status(job_id, FINAL_STATUSES, timeout=150)
    assert done["status"] == "done", f"the re-queued job ended {done['status']}: {done}"
    print(f"job {job_id} finished {time.monotonic() - t0:.1f} s after the worker restart")
    download = web.get(f"/jobs/{job_id}/download/h5/")
    assert download.status == 200 and download.body.startswith(HDF5_MAGIC), download


CONTRACT_HEADER_KEYS = {"job", "seq", "iteration", "iterations", "status", "error", "errors", "rate_per_s", "eta_s",
                        "images"}
CONTRACT_IMAGE_KEYS = {"name", "shape", "offset", "length", "vmin", "vmax"}


def test_late_viewer_first_gets_the_latest_state(prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    web = logged_in(prod_stack, alice)
    job_id = int(api.submit(small_sim_cmdstr(20), label="e2e-late")["id"])
    api.wait_status(job_id, FINAL_STATUSES, timeout=90)
    t0 = time.monotonic()
    frames = asyncio.run(collect_frames(prod_stack.base_url, job_id, web.cookie_header(), prod_stack.origin,
                                        min_frames=1, until_final=False, timeout=10))
    assert frames, "a viewer of a finished job got no frame on connect"
    first = frames[0]
    print(f"first frame {time.monotonic() - t0:.2f} s after connecting")
    assert first.status == "done" and first.iteration == 20, f"not the latest state: {first.header}"
    missing = CONTRACT_HEADER_KEYS - set(first.header)
    assert not missing, f"frame header lacks {sorted(missing)}: {sorted(first.header)}"
    assert len(first.header["errors"]) >= 1, "the stored frame carries no error curve"
    for img in first.header["images"]:
        assert not CONTRACT_IMAGE_KEYS - set(img), f"image entry lacks {sorted(CONTRACT_IMAGE_KEYS - set(img))}"
        assert img["vmin"] <= img["vmax"], img


def test_cancel_from_the_page_keeps_the_last_iterate(prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    web = logged_in(prod_stack, alice)
    job_id = int(api.submit(small_sim_cmdstr(3000), label="e2e-cancel")["id"])
    frames = asyncio.run(collect_frames(prod_stack.base_url, job_id, web.cookie_header(), prod_stack.origin,
                                        min_frames=3, until_final=False, timeout=90))
    assert any(f.status == "running" and f.iteration >= 1 for f in frames), [f.header for f in frames]
    page = web.get(f"/jobs/{job_id}/")
    assert page.status == 200
    resp = web.post_form(f"/jobs/{job_id}/cancel/", {"csrfmiddlewaretoken": page.csrf_token()})
    assert resp.status in (200, 302, 303), f"cancel from the page: {resp!r}"
    row = api.wait_status(job_id, FINAL_STATUSES, timeout=60)
    assert row["status"] == "cancelled", row
    assert 1 <= int(row.get("iteration", 0)) < 3000, f"the cancelled job's iteration: {row}"
    download = web.get(f"/jobs/{job_id}/download/h5/")
    assert download.status == 200 and download.body.startswith(HDF5_MAGIC), (
        f"a cancelled job keeps its last iterate as a result file: {download!r}")


def test_dashboard_and_openapi(prod_stack: ProductionStack, alice: User) -> None:
    web = logged_in(prod_stack, alice)
    deadline = time.monotonic() + 15  # a worker restarted by an earlier test beats within its first period
    while True:
        dash = web.get("/dashboard/")
        assert dash.status == 200, dash
        if socket.gethostname() in dash.text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert socket.gethostname() in dash.text, "the dashboard shows no heartbeat of this host's worker"
    spec = web.get("/api/v1/openapi.json")
    assert spec.status == 200, spec
    doc = spec.json()
    assert str(doc.get("openapi", "")).startswith("3"), f"not an OpenAPI 3 document: {list(doc)[:10]}"
    paths = doc.get("paths", {})
    for path in ("/api/v1/jobs/", "/api/v1/jobs/{id}/", "/api/v1/jobs/{id}/cancel/"):
        assert any(p.replace("{job_id}", "{id}").replace("{pk}", "{id}") == path for p in paths), (
            f"{path} missing from the OpenAPI paths {sorted(paths)}")


def test_api_parameters_round_trip_and_owner_delete(prod_stack: ProductionStack, alice: User) -> None:
    """What the API says about a job submits again as ``{"parameters": ...}``; the owner may delete her job."""
    api = ApiClient(prod_stack.base_url, alice.token)
    first = api.submit(small_sim_cmdstr(4), label="e2e-params")
    params = api.job(first["id"]).get("parameters")
    assert isinstance(params, dict) and params, f"the API's job has no parameters object: {first}"
    resp = api.post("/api/v1/jobs/", {"parameters": params, "label": "e2e-params-again"})
    assert resp.status in (200, 201, 202), f"the API's own parameters were refused: {resp!r}"
    second = resp.json()
    assert api.job(second["id"]).get("parameters") == params, "the parameters changed on the round trip"
    listing = api.get("/api/v1/jobs/")
    assert listing.status == 200
    body = listing.json()
    rows = body if isinstance(body, list) else body.get("results", body.get("jobs", []))
    assert {int(first["id"]), int(second["id"])} <= {int(r["id"]) for r in rows}, "the list lacks the new jobs"

    for job_id in (first["id"], second["id"]):
        api.wait_status(job_id, FINAL_STATUSES, timeout=90)
    web = logged_in(prod_stack, alice)
    page = web.get(f"/jobs/{first['id']}/")
    resp = web.post_form(f"/jobs/{first['id']}/delete/", {"csrfmiddlewaretoken": page.csrf_token()})
    assert resp.status in (200, 302, 303), f"the owner could not delete her finished job: {resp!r}"
    if resp.status == 200:  # a confirmation page: confirm it
        resp = web.post_form(f"/jobs/{first['id']}/delete/", {"csrfmiddlewaretoken": resp.csrf_token(),
                                                              "confirm": "1"})
    gone = api.get(f"/api/v1/jobs/{first['id']}/")
    assert gone.status == 404, f"a deleted job is still served: {gone!r}"


def test_container_like_worker_restarted_with_the_same_host_and_pids(prod_stack: ProductionStack,
                                                                     alice: User) -> None:
    """A worker container that crashes and is restarted comes back with the same host name and the same
    (small) pids: the job it was running must still be recognised as orphaned and finish."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("this test needs root and util-linux's unshare (PID/UTS namespaces, as in a container)",
                    pytrace=False)
    api = ApiClient(prod_stack.base_url, alice.token)
    web = logged_in(prod_stack, alice)
    for w in prod_stack.workers:  # only the container-like worker may take the job
        w.stop()
    box = container_like_worker("prod-container-worker", prod_stack.env, "ptychopy-gpu0")
    try:
        box.start()
        job_id = int(api.submit(small_sim_cmdstr(400), label="e2e-container")["id"])
        frames = asyncio.run(collect_frames(prod_stack.base_url, job_id, web.cookie_header(), prod_stack.origin,
                                            min_frames=3, until_final=False, timeout=90))
        assert any(f.status == "running" for f in frames), f"job {job_id} never ran: {box.log_tail()}"
        first_worker = api.job(job_id).get("worker", "")
        box.kill()
        box.start()
        row = api.wait_status(job_id, FINAL_STATUSES, timeout=150)
        assert row["status"] == "done", f"after the container-like restart the job ended {row}\n{box.log_tail()}"
        print(f"worker before the crash {first_worker!r}, after {row.get('worker')!r}")
    finally:
        box.kill()  # (unshare does not pass SIGTERM on; a graceful stop is not what this test is about)
        prod_stack.start_worker(0)

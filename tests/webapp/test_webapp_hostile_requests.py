"""Hostile query strings on the pages added for issues 20 and 21 (a finished job's diffraction, the comparisons, the
half-set FRC, the snapshots): each gets a short 4xx naming what is wrong, never a server error, and a repeated
request does not repeat its cost."""

from __future__ import annotations

import pytest
from webapp_helpers import api_auth, small_parameters

from reconstruction import Parameters
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db

HOSTILE_NUMBERS = ["\u00b2", "\u0663", "1" * 5000, "-1", "1e3", "nan", "0x10", "1_000", "", "\u00a0"]


def test_numbers_in_other_scripts_or_of_thousands_of_digits_are_a_short_400_naming_the_value(client, user):
    """str.isdigit() says yes to a superscript two and to Arabic-Indic digits, and int() refuses numbers of over
    4,300 digits: both were 500s. Now each is a 400 whose message names the parameter and (cut) the value."""
    job = Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE")
    client.force_login(user)
    for text in HOSTILE_NUMBERS:
        for url, name in ((f"/jobs/{job.pk}/diffraction/?position={text}", "position"),
                          (f"/jobs/compare/?a={text}&b={job.pk}", "'a'"),
                          (f"/jobs/compare/?a={job.pk}&b={text}", "'b'"),
                          (f"/jobs/{job.pk}/compare-iterations/?a={text}&b=1", "'a'")):
            response = client.get(url)
            assert response.status_code == 400, (url[:80], response.status_code)
            message = response.json()["error"] if "diffraction" in url else response.context["error"]
            assert message.startswith(name) and " must be a " in message and len(message) < 200, message


def test_asking_again_for_a_half_set_frc_reuses_the_halves_instead_of_queueing_two_more(client, user, other_user):
    """Each request queued two reconstructions of the whole scan's size: a double click, a reload or a script
    could fill the queue. While a job's halves are queued, running or done, every request (anyone's) goes to their
    comparison; after they failed or were cancelled a request queues a new pair."""
    job = Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE", status="done")
    client.force_login(user)
    first = client.post(f"/jobs/{job.pk}/half-set/")
    halves = list(Job.objects.exclude(pk=job.pk).order_by("pk"))
    assert len(halves) == 2 and first.status_code == 302
    assert client.post(f"/jobs/{job.pk}/half-set/")["Location"] == first["Location"]
    client.force_login(other_user)
    assert client.post(f"/jobs/{job.pk}/half-set/")["Location"] == first["Location"]
    assert Job.objects.count() == 3
    Job.objects.filter(pk=halves[1].pk).update(status=Job.Status.CANCELLED)
    again = client.post(f"/jobs/{job.pk}/half-set/")
    new = list(Job.objects.exclude(pk__in=[job.pk, halves[0].pk, halves[1].pk]).order_by("pk"))
    assert [Parameters.from_dict(h.parameters).data.half_set for h in new] == [1, 2]
    assert {h.owner for h in new} == {other_user}
    assert again["Location"] == f"/jobs/compare/?a={new[0].pk}&b={new[1].pk}&threshold=half-bit"


def test_every_new_page_wants_a_login_and_a_refused_token_is_a_401(client, user, token):
    """Anonymous clients go to the login page; a refused token is 401 where tokens are taken (the result's
    diffraction, the file browser); the session-only pages do not take a token instead of a login."""
    job = Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE", status="done")
    pages = [f"/jobs/{job.pk}/diffraction/?position=1", f"/jobs/compare/?a={job.pk}&b={job.pk}",
             f"/jobs/{job.pk}/compare-iterations/?a=1&b=2", f"/jobs/{job.pk}/snapshots/",
             f"/jobs/{job.pk}/snapshots/1/", "/files/view/?file=x.h5", "/files/h5grove/meta?file=x.h5&path=/"]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert client.post(f"/jobs/{job.pk}/half-set/").status_code == 302 and Job.objects.count() == 1
    for url in (pages[0], pages[-1]):
        assert client.get(url, **api_auth("not-a-token")).status_code == 401, url
    for url in pages[1:6]:
        assert client.get(url, **api_auth(token)).status_code == 302, url
    assert client.post(f"/jobs/{job.pk}/half-set/", **api_auth(token)).status_code == 302
    assert Job.objects.count() == 1


def test_a_fifo_in_the_data_folders_is_refused_at_submit_for_batch_and_live_jobs(client, token, data_root):
    """A live source's file need not exist at submit, so a FIFO (or a device node) named as one was taken, and the
    worker then blocked in open() for good; a batch job's FIFO was refused as a file that 'does not exist'."""
    import os

    from webapp_helpers import api_post

    fifo = data_root / "pipe.h5"
    os.mkfifo(fifo)
    scan = "./ptycho -size=32 -scanDims=8,8 -step=150e-9,150e-9 -beamSize=500e-9 -device=cpu -algorithm=ePIE"
    for live in ("", "-liveSource=swmr", "-liveSource=replay"):
        answer = api_post(client, "/api/v1/jobs/", {"cmdstr": f"{scan} {live} -fp={fifo}"}, token)
        assert answer.status_code == 400, (live, answer.content)
        assert f"-fp={fifo}: this file is not a regular file" in answer.content.decode(), answer.content
    assert Job.objects.count() == 0


def test_a_stored_frame_that_is_not_a_frame_is_a_400_naming_the_iteration(client, user):
    """A truncated or foreign file among the scrubber's frames (a disk error, an older format) was a 500 from the
    frame decoder (JSONDecodeError, KeyError, struct.error, TypeError); it is a 400 naming the job and iteration."""
    import json
    import struct

    from webapp.jobs.snapshots import snapshot_path

    def frame(header: object) -> bytes:
        head = json.dumps(header).encode()
        return struct.pack(">I", len(head)) + head + b"\x00" * 4

    job = Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE", status="done")
    too_big = {"images": [{"name": "object_phase", "shape": [9999, 9999], "offset": 0, "length": 4}]}
    broken = {1: b"\x00\x00\x00\x05abc", 2: frame({}), 3: b"", 4: frame([1]), 5: frame(too_big),
              6: frame({"images": [{"name": n, "shape": [2, 2], "offset": 0, "length": 4, "vmin": 0, "vmax": 1,
                                    "pixel_m": "wide"} for n in ("object_amplitude", "object_phase")]})}
    for iteration, data in broken.items():
        path = snapshot_path(job.pk, iteration)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    client.force_login(user)
    for iteration in broken:
        response = client.get(f"/jobs/{job.pk}/compare-iterations/?a={iteration}&b=1")
        assert response.status_code == 400, iteration
        assert response.context["error"].startswith(f"job {job.pk}'s iteration {iteration} is not a readable "
                                                    "stored frame"), response.context["error"]


def test_a_websocket_position_choice_is_bounded_and_its_refusal_short():
    """The viewer's {"diffraction_position": k}: a 4,000-digit JSON number was taken, kept in the shared cache
    and echoed back whole; a 5,000-character string was echoed whole in the refusal; other scripts' digits were
    taken. Now positions are ASCII whole numbers up to MAX_POSITION and a refusal quotes at most 40 characters."""
    from webapp.live.viewer_choice import MAX_POSITION, parse_position

    assert parse_position(7) == 7 and parse_position(" 12 ") == 12 and parse_position(MAX_POSITION) == MAX_POSITION
    for value in (10**4000, "1" * 5000, "\u0663", "\u00b2", MAX_POSITION + 1, -1, 2.0, True, None, [1]):
        with pytest.raises(ValueError) as err:
            parse_position(value)
        message = str(err.value)
        assert message.startswith("diffraction_position must be a whole number >= 0") and len(message) < 200, \
            message[:300]


def test_a_comparison_is_computed_once_per_pair_of_result_files(client, user, tmp_path, monkeypatch):
    """Aligning two 2048^2 results took 6.4 s and 0.6 GB per request (load 7 on 2 cores), and every reload of the
    page did it again. The page's numbers and images are kept in Django's cache by the two files' identity and the
    threshold: a reload reads them; a rewritten result file is compared again."""
    import os

    import numpy as np

    from reconstruction import Result
    from reconstruction.io import write_result
    from webapp.jobs import comparison

    rng = np.random.default_rng(1)
    obj = np.exp(1j * rng.standard_normal((48, 48)) * 0.3).astype(np.complex64)
    corners = np.stack(np.meshgrid(np.arange(0, 33, 8.0), np.arange(0, 33, 8.0)), -1).reshape(-1, 2)
    jobs = []
    for name in ("a", "b"):
        result = Result(object=obj, probe=np.ones((1, 16, 16), np.complex64), positions_px=corners, errors=[0.1],
                        rms=[], iteration_s=[0.1], algorithm="ePIE", device="cpu", pixel_size_m=1e-8,
                        parameters=small_parameters())
        path = write_result(result, tmp_path / f"{name}.h5")
        jobs.append(Job.objects.create(owner=user, parameters=small_parameters().to_dict(), algorithm="ePIE",
                                       status="done", result_path=str(path)))
    calls = []
    real = comparison.compare_results
    monkeypatch.setattr(comparison, "compare_results", lambda *args: calls.append(args) or real(*args))
    client.force_login(user)
    url = f"/jobs/compare/?a={jobs[0].pk}&b={jobs[1].pk}"
    first, again = client.get(url), client.get(url)
    assert first.status_code == again.status_code == 200 and len(calls) == 1
    assert again.context["summary"] == first.context["summary"]
    assert again.context["page_data"] == first.context["page_data"]
    assert client.get(url + "&threshold=half-bit").status_code == 200 and len(calls) == 2
    stat = os.stat(jobs[1].result_path)
    os.utime(jobs[1].result_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was written again
    assert client.get(url).status_code == 200 and len(calls) == 3


def test_a_pvaccess_address_the_worker_would_refuse_is_refused_at_submit_naming_it(client, token):
    """-liveSource=pva://... took anything after the scheme: unknown query keys, a negative or NaN scale, no image
    PV, a 60,000-character or control-character PV name were queued, and failed only on a worker (after the queue
    and -liveStall). Each is now a 400 under -liveSource naming the part that is wrong."""
    from webapp_helpers import api_post

    scan = "./ptycho -size=32 -scanDims=8,8 -step=150e-9,150e-9 -beamSize=500e-9 -device=cpu -algorithm=ePIE"
    cases = {"pva://x?bogus=1": "unknown key(s) bogus", "pva://x?scale=-1": "expected a positive number",
             "pva://x?scale=nan": "expected a positive number", "pva://x?uid0=abc": "scale/uid0",
             "pva://x?attrs=a": "expected two NDAttribute names", "pva://?scan=x": "no image PV",
             "pva://" + "x" * 60000: "characters long", "pva://x\u202e": "not a PV name",
             "pva://x?scan=a%09b": "not a PV name"}
    for address, words in cases.items():
        answer = api_post(client, "/api/v1/jobs/", {"cmdstr": f"{scan} -liveSource={address}"}, token)
        assert answer.status_code == 400, (address[:40], answer.content[:200])
        problem = answer.json()["problems"][0]
        assert problem["flag"] == "liveSource" and words in problem["message"] and len(problem["message"]) < 400, \
            problem["message"][:300]
    assert Job.objects.count() == 0
    ok = api_post(client, "/api/v1/jobs/", {"cmdstr": f"{scan} -liveSource=pva://13SIM1:Pva1:Image?scan=t:Scan:"},
                  token)
    assert ok.status_code == 201, ok.content

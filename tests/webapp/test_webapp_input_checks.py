"""Bad input from a user is refused at submit, with a clear 4xx naming what and where: symlinks out of the
data roots, missing or absent data, hostile job IDs, oversized bodies and command strings, loose booleans;
a rejected form keeps no upload; the admin cannot edit what workers write."""

import json
import os
import time

import pytest
from webapp_helpers import small_parameters

from reconstruction import ParameterError, Parameters
from webapp.api.models import ApiToken
from webapp.jobs import services
from webapp.jobs.forms import field_name
from webapp.jobs.models import Job
from webapp.scans.paths import check_submission, confine_parameters

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(user) -> str:
    return ApiToken.objects.create(user=user, name="tests").key


def api_post(client, body, key, **extra):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/api/v1/jobs/", data, content_type="application/json", HTTP_AUTHORIZATION=f"Token {key}",
                       **extra)


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.h5").write_bytes(b"secret")
    return folder


@pytest.mark.parametrize("flag, path", [("fp", "data.file_pattern"), ("lf", "experiment.positions_file"),
                                        ("probeGuess", "reconstruction.probe_guess"),
                                        ("objectGuess", "reconstruction.object_guess"),
                                        ("mask", "preprocessing.bad_pixel_mask")])
def test_a_symlinked_file_inside_a_root_that_points_outside_is_refused(data_root, outside, flag, path):
    os.symlink(outside / "secret.h5", data_root / "link.h5")
    value = "link.h5::/entry/mask" if flag == "mask" else "link.h5"
    with pytest.raises(ParameterError) as err:
        confine_parameters(Parameters().replace({path: value}))
    problem = err.value.problems[0]
    assert problem.flag == flag and "outside the data folders" in problem.message and "symlink" in problem.message


def test_a_symlink_inside_the_root_to_a_file_inside_is_resolved(data_root):
    (data_root / "real.h5").write_bytes(b"x")
    os.symlink(data_root / "real.h5", data_root / "alias.h5")
    params = confine_parameters(Parameters().replace({"data.file_pattern": "alias.h5",
                                                       "preprocessing.bad_pixel_mask": "alias.h5::/m"}))
    assert params.data.file_pattern == str(data_root / "real.h5")  # what the worker opens is what was checked
    assert params.preprocessing.bad_pixel_mask == f"{data_root / 'real.h5'}::/m"


def test_a_guess_named_as_a_dataset_inside_a_file_is_checked_as_that_file(data_root):
    (data_root / "earlier.h5").write_bytes(b"x")
    params = check_submission(Parameters().replace({"data.simulate": True,
                                                     "reconstruction.probe_guess": "earlier.h5::/entry_1/probe",
                                                     "reconstruction.object_guess": "earlier.h5"}))
    assert params.reconstruction.probe_guess == f"{data_root / 'earlier.h5'}::/entry_1/probe"
    with pytest.raises(ParameterError, match=r"-objectGuess=.*gone\.h5::/o: no such file"):
        check_submission(Parameters().replace({"data.simulate": True, "reconstruction.object_guess": "gone.h5::/o"}))


def test_one_symlinked_frame_file_of_a_multi_file_pattern_is_refused(data_root, outside):
    scan = data_root / "scan7"
    scan.mkdir()
    for i in range(3):
        (scan / f"frame_{i:06d}.h5").write_bytes(b"x")
    os.symlink(outside / "secret.h5", scan / "frame_000003.h5")
    os.symlink(outside / "secret.h5", scan / "unrelated.h5")
    with pytest.raises(ParameterError, match=r"frame_000003\.h5 is a symlink"):
        confine_parameters(Parameters().replace({"data.file_pattern": "scan7/frame_#06d.h5"}))
    (scan / "frame_000003.h5").unlink()
    ok = confine_parameters(Parameters().replace({"data.file_pattern": "scan7/frame_#06d.h5"}))
    assert ok.data.file_pattern == str(scan / "frame_#06d.h5")


def test_the_beamstop_mask_beside_the_data_may_not_be_a_symlink_out(data_root, outside):
    (data_root / "scan.h5").write_bytes(b"x")
    os.symlink(outside / "secret.h5", data_root / "beamstopMask.h5")
    with pytest.raises(ParameterError, match="-beamstopMask"):
        confine_parameters(Parameters().replace({"data.file_pattern": "scan.h5", "preprocessing.beamstop_mask": 1}))


def test_submit_refuses_no_data_and_missing_files_naming_flag_and_path(data_root):
    with pytest.raises(ParameterError, match="-fp: no data named"):
        check_submission(Parameters())
    with pytest.raises(ParameterError) as err:
        check_submission(Parameters.from_cmdstr("./ptycho -fp=scan_#06d.h5 -fs=3 -lf=pos.csv -probeGuess=p.csv"))
    messages = {p.flag: p.message for p in err.value.problems}
    assert set(messages) == {"fp", "lf", "probeGuess"}
    assert str(data_root / "scan_000003.h5") in messages["fp"] and "-fs=3" in messages["fp"]
    assert str(data_root / "pos.csv") in messages["lf"]
    (data_root / "scan_000003.h5").write_bytes(b"x")
    (data_root / "pos.csv").write_text("0,0\n")
    (data_root / "p.csv").write_text("1\n")
    check_submission(Parameters.from_cmdstr("./ptycho -fp=scan_#06d.h5 -fs=3 -lf=pos.csv -probeGuess=p.csv"))
    check_submission(small_parameters())  # a simulated scan names no data


def test_api_answers_bad_input_with_json_4xx_naming_the_flag(client, token, data_root):
    cases = [
        ({"cmdstr": "./ptycho -jobID=../../../outside/pwn -simulate=1"}, 400, "-jobID"),
        ({"cmdstr": "./ptycho -jobID=/tmp/pwn -simulate=1"}, 400, "-jobID"),
        ({"cmdstr": "./ptycho -simulate=1 -i=5 -i=7"}, 400, "-i is given twice"),
        ({"cmdstr": "./ptycho -i=5"}, 400, "-fp: no data named"),
        ({"cmdstr": "./ptycho -fp=missing.h5"}, 400, str(data_root / "missing.h5")),
        ({"cmdstr": "./ptycho -simulate=1", "notify_email": "yes"}, 400, "'notify_email' must be true or false"),
        ({"cmdstr": "./ptycho -simulate=1", "notify_email": 1}, 400, "'notify_email' must be true or false"),
    ]
    for body, status, text in cases:
        r = api_post(client, body, token)
        assert r.status_code == status and r["Content-Type"] == "application/json", (body, r.content[:300])
        assert text in r.content.decode(), (body, r.content[:500])
    assert Job.objects.count() == 0
    r = api_post(client, {"cmdstr": "./ptycho -simulate=1", "notify_email": True}, token)
    assert r.status_code == 201 and Job.objects.get().notify_email is True


def test_api_refuses_oversized_command_strings_and_bodies_as_json_in_well_under_a_second(client, token, settings):
    start = time.process_time()
    r = api_post(client, {"cmdstr": "./ptycho -jobID=" + "a" * 2 * 2**20}, token)
    assert r.status_code == 400 and "65,536" in r.json()["problems"][0]["message"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    r = api_post(client, {"cmdstr": "./ptycho -jobID=" + "a" * 200_000}, token)
    assert r.status_code == 413 and r["Content-Type"] == "application/json"
    assert "100,000 bytes" in r.json()["error"]
    assert time.process_time() - start < 1.0
    r = client.get("/api/v1/jobs/999999/", HTTP_AUTHORIZATION=f"Token {token}")
    assert r.status_code == 404 and r["Content-Type"] == "application/json"


def test_a_max_size_command_string_from_the_form_is_answered_in_well_under_a_second(client, user):
    from reconstruction.parameters.cmdstr import MAX_CMDSTR_CHARS

    client.force_login(user)
    cmd = ("./ptycho " + " ".join(f"-zz{i}=1" for i in range(MAX_CMDSTR_CHARS)))[:MAX_CMDSTR_CHARS]
    start = time.process_time()
    response = client.post("/jobs/new/", {"cmdstr": cmd})
    assert time.process_time() - start < 1.0
    assert response.status_code == 200 and "and " in response.context["form"].errors["cmdstr"][-1]
    response = client.post("/jobs/new/", {"cmdstr": cmd + " -i=5"})
    assert "at most 65536 characters" in response.context["form"].errors["cmdstr"][0]
    assert Job.objects.count() == 0


def test_a_rejected_form_keeps_none_of_its_uploads(client, user, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    data = {"cmdstr": "./ptycho -simulate=1 -jobID=../x",
            field_name("experiment.positions_file") + "__upload": SimpleUploadedFile("pos.csv", b"0,0\n")}
    response = client.post("/jobs/new/", data)
    assert response.status_code == 200 and "-jobID" in str(response.context["form"].errors)
    uploads = settings.PTYCHOPY_UPLOADS_DIR
    assert not uploads.exists() or [p for p in uploads.rglob("*") if p.is_file()] == []


def test_the_form_accepts_only_yes_or_no_for_notify_email(client, user):
    client.force_login(user)
    response = client.post("/jobs/new/", {"cmdstr": "./ptycho -simulate=1", "notify_email": "maybe"})
    assert response.status_code == 200 and "not a yes/no value" in response.context["form"].errors["notify_email"][0]
    response = client.post("/jobs/new/", {"cmdstr": "./ptycho -simulate=1", "notify_email": "on"})
    assert response.status_code == 302 and Job.objects.get().notify_email is True


def test_a_cancelled_requeued_job_does_not_claim_it_never_ran(user):
    from django.utils import timezone

    fresh = services.submit_job(small_parameters(), owner=user)
    assert services.cancel_job(fresh, user).message == "cancelled before it started"
    ran = services.submit_job(small_parameters(), owner=user)
    Job.objects.filter(pk=ran.pk).update(started=timezone.now(), iteration=7, iterations=12)  # re-queued
    message = services.cancel_job(Job.objects.get(pk=ran.pk), user).message
    assert "before it started" not in message and "iteration 7 of 12" in message


def test_admin_shows_worker_written_fields_read_only(client, staff_user, django_user_model):
    staff_user.is_superuser = True
    staff_user.save()
    job = services.submit_job(small_parameters(), owner=staff_user)
    client.force_login(staff_user)
    page = client.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert 'name="label"' in page
    for field in ("status", "result_path", "worker", "parameters"):
        assert f'name="{field}"' not in page, field
    client.post(f"/admin/jobs/job/{job.pk}/change/", {"label": "x", "status": "done", "result_path": "/etc/passwd"})
    job.refresh_from_db()
    assert job.status == "queued" and job.result_path == ""
    assert client.get("/admin/jobs/job/add/").status_code == 403

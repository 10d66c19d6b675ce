"""A full uploads disk (a real 256 KiB tmpfs, filled): the form answers 507 with the reason, and no truncated file
stays behind; once space is back the same upload works."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from test_webapp_form import form_data
from webapp_helpers import small_parameters

from tests.support.tmpfs import TmpfsUnavailable, fill, small_tmpfs
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_a_full_uploads_disk_answers_507_and_keeps_no_partial_file(client, user, settings):
    client.force_login(user)
    try:
        with small_tmpfs(256 * 1024) as disk:
            settings.PTYCHOPY_UPLOADS_DIR = disk
            filler = fill(disk, leave_bytes=16 * 1024)
            probe = b"1.0+0.5j, 0.0\n" * 8000  # 112 KB
            data = form_data(small_parameters(),
                             **{"reconstruction__probe_guess__upload": SimpleUploadedFile("probe.csv", probe)})
            response = client.post("/jobs/new/", data)
            assert response.status_code == 507
            message = response.context["form"].errors["reconstruction__probe_guess__upload"][0]
            assert "disk full writing the uploads folder: 112000 bytes needed" in message
            assert "nothing was kept" in message
            assert Job.objects.count() == 0
            leftovers = [p for p in disk.rglob("*") if p.is_file() and p != filler]
            assert leftovers == [], leftovers
            filler.unlink()
            data["reconstruction__probe_guess__upload"] = SimpleUploadedFile("probe.csv", probe)
            response = client.post("/jobs/new/", data)
            assert response.status_code in (200, 302)
            stored = [p for p in disk.rglob("probe.csv")]
            assert len(stored) == 1 and stored[0].stat().st_size == len(probe)
    except TmpfsUnavailable as exc:
        pytest.skip(f"no tmpfs here ({exc})")


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # h5py frees ids of the failed file
def test_a_full_results_disk_fails_the_job_clearly_and_leaves_no_debris_then_a_retry_succeeds(settings,
                                                                                            monkeypatch):
    from webapp.jobs import runner, services
    from webapp.live import status

    monkeypatch.setattr(runner, "publish_frame", lambda job_id, data: None)
    monkeypatch.setattr(status, "publish_frame", lambda job_id, data: None)
    try:
        with small_tmpfs(256 * 1024) as disk:
            settings.PTYCHOPY_RESULTS_DIR = disk
            filler = fill(disk, leave_bytes=8 * 1024)
            job = services.submit_job(small_parameters(iterations=3))
            assert runner.run_job(job.pk) == "failed"
            job.refresh_from_db()
            assert "disk full writing result file" in job.message and "bytes needed" in job.message, job.message
            assert [p.name for p in disk.rglob("*") if p.is_file()] == ["filler.bin"]  # no .result.h5.*.tmp
            filler.unlink()
            retry = services.submit_job(services.clone_parameters(job))
            assert runner.run_job(retry.pk) == "done"
            retry.refresh_from_db()
            assert retry.result_path.endswith("result.h5")
    except TmpfsUnavailable as exc:
        pytest.skip(f"no tmpfs here ({exc})")

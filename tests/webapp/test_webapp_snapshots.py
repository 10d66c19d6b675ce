"""The run's history for the iteration scrubber: a few stored frames, served to logged-in viewers."""

import pytest
from webapp_helpers import small_parameters

from webapp.jobs import services
from webapp.jobs.models import Job
from webapp.jobs.snapshots import SNAPSHOTS, SnapshotWriter, list_snapshots, snapshots_dir
from webapp.live.frames import decode_frame, encode_frame


def test_the_writer_keeps_one_frame_per_mark_and_the_last(webapp_settings):
    writer = SnapshotWriter(7, iterations=1000, count=10)
    frame = encode_frame({"iteration": 0}, [])
    kept = [it for it in range(1, 1000, 7) if writer.offer(it, frame)]  # frames every 7 iterations
    assert writer.offer(1000, frame, final=True)  # the last frame is always kept
    # the first frame past each 100-iteration mark (1, 101, ..., 901), and the last
    assert kept == [1, 106, 204, 302, 407, 505, 603, 701, 806, 904]
    assert list_snapshots(7) == [*kept, 1000]
    SnapshotWriter(7, iterations=10)  # a new attempt starts a new history
    assert list_snapshots(7) == []


@pytest.mark.django_db(transaction=True)
def test_a_run_keeps_its_history_and_the_pages_serve_it(worker, broker, client, user):
    job = services.submit_job(small_parameters(iterations=60), owner=user)
    broker.join("reconstruct", fail_fast=True)
    worker.join()
    assert Job.objects.get(pk=job.pk).status == "done"
    stored = list_snapshots(job.pk)
    assert 1 <= len(stored) <= SNAPSHOTS + 1 and stored[-1] == 60
    assert client.get(f"/jobs/{job.pk}/snapshots/").status_code == 302  # login first
    client.force_login(user)
    assert client.get(f"/jobs/{job.pk}/snapshots/").json() == {"iterations": stored}
    header, images = decode_frame(client.get(f"/jobs/{job.pk}/snapshots/{stored[0]}/").content)
    assert header["iteration"] == stored[0] and "object_amplitude" in images
    assert client.get(f"/jobs/{job.pk}/snapshots/99999/").status_code == 404
    services.delete_job(Job.objects.get(pk=job.pk), user)
    assert not snapshots_dir(job.pk).exists()


def test_a_frame_that_does_not_fit_leaves_no_partial_file(webapp_settings, monkeypatch):
    from pathlib import Path

    writer = SnapshotWriter(8, iterations=10)
    real_write = Path.write_bytes

    def full_disk(self, data):
        real_write(self, data[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError):
        writer.offer(1, encode_frame({"iteration": 1}, []))
    assert [p for p in snapshots_dir(8).rglob("*") if p.is_file()] == []

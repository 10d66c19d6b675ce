"""/metrics in the embedded mode: who may scrape it, and what it says about jobs, queues, workers and bridges
(parsed with prometheus_client's own parser). The production stack's scrape is tests/e2e/test_ops.py."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from webapp_helpers import small_parameters

from webapp.jobs.models import BridgeStatus, Job, WorkerHeartbeat


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client, **extra) -> dict:
    r = client.get("/metrics", **extra)
    assert r.status_code == 200, r.content[:500]
    assert r["Content-Type"].startswith("text/plain; version=")
    return samples(r.content.decode())


def test_other_addresses_need_the_token(client, settings) -> None:
    settings.PTYCHOPY_METRICS_TOKEN = "scrape-me-0123456789"
    far = {"REMOTE_ADDR": "192.0.2.7"}
    refused = client.get("/metrics", **far)
    assert refused.status_code == 403 and b"PTYCHOPY_METRICS_ALLOW" in refused.content
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **far).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me-0123456789", **far).status_code == 200
    settings.PTYCHOPY_METRICS_ALLOW = ["192.0.2.0/24"]
    assert client.get("/metrics", **far).status_code == 200
    assert client.get("/metrics").status_code == 403, "loopback is allowed only by the default"


@pytest.mark.django_db
def test_jobs_workers_and_bridges_at_scrape_time(client) -> None:
    params = small_parameters().to_dict()
    for status in ("queued", "queued", "running", "done"):
        Job.objects.create(parameters=params, algorithm="ePIE", status=status)
    WorkerHeartbeat.objects.create(worker_id="gpu-host:41", host="gpu-host", pid=41, gpu="GPU 0",
                                   stats={"iterations_per_s": 12.5, "frames_published": 30,
                                          "gpu_memory_used_bytes": 2_000_000_000,
                                          "gpu_memory_total_bytes": 80_000_000_000})
    WorkerHeartbeat.objects.create(worker_id="gone:7", host="gone", pid=7,
                                   last_seen=timezone.now() - timedelta(seconds=60))
    BridgeStatus.objects.create(beamline="2-ID", state={
        "running": True, "heartbeat_s": 1, "heartbeat_at": time.time(), "pvs": {"T": {"connected": True}},
        "scan_counts": {"queued": 4, "not_queued": 1}, "counts": {"queued": 4, "missed_edges": 2}})
    got = scrape(client)
    assert got[("ptychopy_jobs", (("state", "queued"),))] == 2
    assert got[("ptychopy_jobs", (("state", "running"),))] == 1
    assert got[("ptychopy_jobs", (("state", "failed"),))] == 0
    worker = (("gpu", "GPU 0"), ("host", "gpu-host"), ("worker", "gpu-host:41"))
    assert got[("ptychopy_workers_alive", ())] == 1, "a stale heartbeat is not a worker"
    assert got[("ptychopy_worker_iterations_per_second", worker)] == 12.5
    assert got[("ptychopy_worker_frames_published_total", worker)] == 30
    assert got[("ptychopy_worker_gpu_memory_used_bytes", worker)] == 2e9
    assert not any(labels and dict(labels).get("worker") == "gone:7" for _, labels in got)
    assert got[("ptychopy_bridge_scans", (("beamline", "2-ID"), ("status", "not_queued")))] == 1
    assert got[("ptychopy_bridge_events_total", (("beamline", "2-ID"), ("event", "missed_edges")))] == 2
    assert got[("ptychopy_bridge_up", (("beamline", "2-ID"), ("health", "ok")))] == 1
    assert all(v == 0 for (name, _), v in got.items() if name == "ptychopy_scrape_errors")
    assert ("ptychopy_queue_messages", (("queue", "reconstruct"),)) in got


@pytest.mark.django_db
def test_requests_are_counted_by_url_name_not_path(client) -> None:
    client.get("/livez")
    client.get("/jobs/999999/")  # a login redirect: counted under its URL name, never the id
    got = scrape(client)
    assert got[("ptychopy_http_requests_total", (("method", "GET"), ("status", "200"), ("view", "livez")))] >= 1
    assert got[("ptychopy_http_requests_total", (("method", "GET"), ("status", "302"), ("view", "jobs:detail")))] >= 1
    assert got[("ptychopy_http_request_duration_seconds_count", (("method", "GET"), ("view", "livez")))] >= 1
    assert not any("999999" in str(labels) for _, labels in got)

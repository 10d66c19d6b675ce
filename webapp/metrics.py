"""``/metrics`` in the Prometheus text format: the web process's requests and ptychopy's state at scrape time.

Daphne is one process per instance, so the request counters live in this process's registry. What several
processes share (jobs, queues, workers, bridges) is read at scrape time from where it is true: the database
(jobs by state, worker heartbeats with each worker's ``stats``, bridge states) and the broker (queue depth).
The workers' own Dramatiq metrics are served by Dramatiq's ``Prometheus`` middleware on each worker host
(``PTYCHOPY_WORKER_METRICS_PORT``; docs/deploy.md).

Access: a client address (``webapp.accounts.client_ip``: the peer, or behind ``PTYCHOPY_TRUSTED_PROXIES`` the
forwarded client) inside ``PTYCHOPY_METRICS_ALLOW`` (default loopback), or ``Authorization: Bearer
<PTYCHOPY_METRICS_TOKEN>``. Anything else gets 403.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from webapp.accounts.client_ip import client_ip
from webapp.site_security import parse_networks

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter("ptychopy_http_requests", "HTTP requests answered by this web process.",
                        ["method", "view", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("ptychopy_http_request_duration_seconds", "Time to answer an HTTP request (this process).",
                         ["method", "view"], registry=REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
BRIDGE_EVENTS = ("queued", "ignored", "duplicates", "replays", "missed_edges", "submit_failures",
                 "file_failures", "held", "gaps")


class RequestMetrics:
    """Middleware: counts each request and its latency by method, URL name (never the raw path: bounded
    labels) and status."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or "<unnamed>") if match is not None else "<unresolved>"
        method = request.method if request.method in METHODS else "other"
        HTTP_LATENCY.labels(method, view).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(method, view, str(response.status_code)).inc()
        return response


def queue_depths() -> dict[str, int]:
    """Messages waiting in each declared Dramatiq queue (``name.DQ``: delayed), read from the broker."""
    import dramatiq
    from dramatiq.common import dq_name

    from webapp.jobs.queue import QUEUE

    broker = dramatiq.get_broker()
    queues = sorted(broker.get_declared_queues() | set(broker.get_declared_delay_queues()) | {QUEUE, dq_name(QUEUE)})
    if not settings.REDIS_URL:
        stub_queues = getattr(broker, "queues", {})
        return {q: int(stub_queues[q].qsize()) if q in stub_queues else 0 for q in queues}
    import redis

    timeout_s = float(settings.PTYCHOPY_READYZ_TIMEOUT_S)
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    namespace = getattr(broker, "namespace", "dramatiq")
    try:
        pipe = client.pipeline(transaction=False)
        for q in queues:
            pipe.llen(f"{namespace}:{q}")
        return {q: int(n) for q, n in zip(queues, pipe.execute(), strict=True)}
    finally:
        client.close()


class PtychopyCollector(Collector):
    """Jobs, queues, workers and bridges, read at each scrape (a failed source is reported in
    ``ptychopy_scrape_errors{source}`` and skipped, so the rest still comes out)."""

    def collect(self) -> Iterator[Any]:
        errors = GaugeMetricFamily("ptychopy_scrape_errors", "1 when a source could not be read at this scrape.",
                                   labels=["source"])
        for source, read in (("jobs", self._jobs), ("queues", self._queues), ("workers", self._workers),
                             ("bridges", self._bridges)):
            try:
                yield from read()
                errors.add_metric([source], 0)
            except Exception as exc:
                log.warning("/metrics: could not read %s (%s: %s)", source, type(exc).__name__, str(exc)[:200])
                errors.add_metric([source], 1)
        yield errors

    @staticmethod
    def _jobs() -> Iterator[Any]:
        from django.db.models import Count

        from webapp.jobs.models import Job

        counts = dict.fromkeys(Job.Status.values, 0)
        for row in Job.objects.values("status").annotate(n=Count("id")):
            counts[row["status"]] = row["n"]
        family = GaugeMetricFamily("ptychopy_jobs", "Jobs by state (the database).", labels=["state"])
        for state, n in sorted(counts.items()):
            family.add_metric([state], n)
        yield family

    @staticmethod
    def _queues() -> Iterator[Any]:
        family = GaugeMetricFamily("ptychopy_queue_messages", "Messages waiting in each broker queue.",
                                   labels=["queue"])
        for queue, n in queue_depths().items():
            family.add_metric([queue], n)
        yield family

    @staticmethod
    def _workers() -> Iterator[Any]:
        from webapp.jobs.models import WorkerHeartbeat

        labels = ["worker", "host", "gpu"]
        alive = GaugeMetricFamily("ptychopy_workers_alive", "Workers whose heartbeat is fresh.")
        age = GaugeMetricFamily("ptychopy_worker_heartbeat_age_seconds", "Age of each worker's heartbeat.",
                                labels=labels)
        busy = GaugeMetricFamily("ptychopy_worker_busy", "1 while the worker runs a job.", labels=labels)
        rate = GaugeMetricFamily("ptychopy_worker_iterations_per_second",
                                 "Iteration rate of the worker's running job (0 when idle).", labels=labels)
        frames = CounterMetricFamily("ptychopy_worker_frames_published",
                                     "Live frames the worker process sent (since it started).", labels=labels)
        gpu_used = GaugeMetricFamily("ptychopy_worker_gpu_memory_used_bytes", "GPU memory in use on the worker's "
                                     "device (workers with CuPy loaded).", labels=labels)
        gpu_total = GaugeMetricFamily("ptychopy_worker_gpu_memory_total_bytes", "GPU memory of the worker's device.",
                                      labels=labels)
        stale_s = float(settings.PTYCHOPY_HEARTBEAT_STALE_S)
        n_alive = 0
        for beat in WorkerHeartbeat.objects.all():
            beat_age = beat.age_s()
            if beat_age >= stale_s:
                continue
            n_alive += 1
            values = [beat.worker_id, beat.host, beat.gpu]
            stats = beat.stats or {}
            age.add_metric(values, beat_age)
            busy.add_metric(values, 1 if beat.current_job_id else 0)
            rate.add_metric(values, float(stats.get("iterations_per_s") or 0))
            frames.add_metric(values, float(stats.get("frames_published") or 0))
            if "gpu_memory_total_bytes" in stats:
                gpu_used.add_metric(values, float(stats["gpu_memory_used_bytes"]))
                gpu_total.add_metric(values, float(stats["gpu_memory_total_bytes"]))
        alive.add_metric([], n_alive)
        yield from (alive, age, busy, rate, frames, gpu_used, gpu_total)

    @staticmethod
    def _bridges() -> Iterator[Any]:
        from webapp.workers.bridges import bridge_views

        up = GaugeMetricFamily("ptychopy_bridge_up", "1 while the bridge beats and sees its trigger PV "
                               "(health ok, degraded or connecting).", labels=["beamline", "health"])
        age = GaugeMetricFamily("ptychopy_bridge_heartbeat_age_seconds", "Age of the bridge's heartbeat.",
                                labels=["beamline"])
        scans = GaugeMetricFamily("ptychopy_bridge_scans", "Scans the bridge saw, by their current status "
                                  "(queued, not_queued, failed, waiting, held; since the bridge started).",
                                  labels=["beamline", "status"])
        events = CounterMetricFamily("ptychopy_bridge_events", "Bridge counters since it started (queued, "
                                     "missed_edges and gaps: scans it may have lost, ...).",
                                     labels=["beamline", "event"])
        for view in bridge_views():
            beamline = view.beamline
            up.add_metric([beamline, view.level], 1 if view.level in ("ok", "degraded", "connecting") else 0)
            age.add_metric([beamline], view.age_s)
            for status, n in sorted(view.scan_counts.items()):
                scans.add_metric([beamline, status], float(n))
            for event in BRIDGE_EVENTS:
                events.add_metric([beamline, event], float(view.counts.get(event, 0)))
        yield from (up, age, scans, events)


REGISTRY.register(PtychopyCollector())


@functools.lru_cache(maxsize=8)
def _allowed(entries: tuple[str, ...]) -> tuple[Any, ...]:
    return parse_networks(entries, where="PTYCHOPY_METRICS_ALLOW")


def may_scrape(request: HttpRequest) -> bool:
    """A token that matches ``PTYCHOPY_METRICS_TOKEN``, or a client address inside ``PTYCHOPY_METRICS_ALLOW``."""
    token = str(settings.PTYCHOPY_METRICS_TOKEN)
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if token and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
        return True
    address = client_ip(request)
    if not address:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in _allowed(tuple(settings.PTYCHOPY_METRICS_ALLOW)))


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of :data:`REGISTRY` (module docstring); 403 for other clients."""
    if not may_scrape(request):
        return HttpResponse("metrics: this address is not allowed (PTYCHOPY_METRICS_ALLOW) and no valid "
                            "PTYCHOPY_METRICS_TOKEN was sent\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)

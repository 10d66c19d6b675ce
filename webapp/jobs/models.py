"""The job row (the truth about a reconstruction) and the workers' heartbeats."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Job(models.Model):
    """One reconstruction, from submission to result. Workers read and write only through this row."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Source(models.TextChoices):
        WEB = "web"
        API = "api"
        EPICS = "epics"
        DEMO = "demo"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)
    UNFINISHED = (Status.QUEUED, Status.RUNNING)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    label = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.WEB)
    parameters = models.JSONField()
    algorithm = models.CharField(max_length=20, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    notify_email = models.BooleanField(default=False, help_text="E-mail the owner when the job finishes.")
    dedup_key = models.CharField(max_length=500, unique=True, null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    iteration = models.IntegerField(default=0)
    iterations = models.IntegerField(default=0)
    final_error = models.FloatField(null=True, blank=True)
    error_history = models.JSONField(default=list, blank=True)
    device = models.CharField(max_length=100, blank=True)
    # how the worker runs it and why (reconstruction.run_plan.RunPlan.to_dict()); {} until a worker planned it
    run_plan = models.JSONField(default=dict, blank=True)
    # where each parameter came from ({"group.name": {"source": "pv"|"template"|"bridge"|..., "pv", "value", "note",
    # "ioc_timestamp"}}), as the submitter (the EPICS bridge) said; {} for jobs from the form or the API
    provenance = models.JSONField(default=dict, blank=True)
    # a streaming job's stream (reconstruction.live.run.LiveSummary.to_dict(), docs/streaming.md): source, outcome,
    # frames planned/received/dropped, partial; updated while it runs; {} for a batch job
    live = models.JSONField(default=dict, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    result_path = models.CharField(max_length=1000, blank=True)
    last_preview = models.BinaryField(null=True, blank=True)
    last_seq = models.IntegerField(default=0)
    # Delivery bookkeeping (webapp.jobs.reconciler): claims so far (each run attempt is numbered; a worker writes
    # only while the row still carries its attempt), how often the job's worker died under it, and when its
    # latest message was sent to the broker.
    attempts = models.IntegerField(default=0)
    worker_losses = models.IntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (or to now while running); None before it starts."""
        if self.started is None:
            return None
        end = self.finished or timezone.now()
        return max(0.0, (end - self.started).total_seconds())

    @property
    def scan_name(self) -> str:
        """What the history shows as the scan: the label, else the data file or "simulated"."""
        if self.label:
            return self.label
        data = (self.parameters or {}).get("data", {})
        if data.get("simulate"):
            return "simulated"
        return str(data.get("file_pattern") or "")

    @property
    def is_streaming(self) -> bool:
        """Whether the job reconstructs while its scan acquires (``-liveSource`` set)."""
        return str((self.parameters or {}).get("data", {}).get("live_source") or "none") != "none"

    @property
    def partial(self) -> bool:
        """A streaming job whose scan was aborted, stalled, cancelled or ended short of its plan."""
        return bool((self.live or {}).get("partial"))

    def can_manage(self, user) -> bool:
        """Whether ``user`` may cancel or delete this job: its owner or staff."""
        if not getattr(user, "is_authenticated", False):
            return False
        return bool(user.is_staff or (self.owner_id is not None and self.owner_id == user.pk))


class WorkerHeartbeat(models.Model):
    """A worker process (one per GPU) that says it is alive every few seconds."""

    worker_id = models.CharField(max_length=200, unique=True)  # hostname:pid
    host = models.CharField(max_length=200)
    pid = models.IntegerField(default=0)
    gpu = models.CharField(max_length=200, blank=True)  # CUDA_VISIBLE_DEVICES or "cpu"
    current_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    # what /metrics exports per worker (webapp.workers.heartbeat.stats): iterations_per_s, frames_published,
    # gpu_memory_used_bytes, gpu_memory_total_bytes (the GPU ones only where CuPy is loaded)
    stats = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["host", "gpu", "worker_id"]

    def __str__(self) -> str:
        return self.worker_id

    def age_s(self) -> float:
        return (timezone.now() - self.last_seen).total_seconds()

    @property
    def alive(self) -> bool:
        return self.age_s() < settings.PTYCHOPY_HEARTBEAT_STALE_S


class BridgeStatus(models.Model):
    """The latest state an EPICS bridge published (one row per beamline): PV connections, recent scans, errors,
    heartbeat. ``webapp.workers.bridges`` turns it into what the dashboard shows (health, missing PVs, scans)."""

    beamline = models.CharField(max_length=200, unique=True)
    state = models.JSONField(default=dict)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["beamline"]

    def __str__(self) -> str:
        return self.beamline

    def age_s(self) -> float:
        return (timezone.now() - self.last_seen).total_seconds()

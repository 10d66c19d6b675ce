from django.contrib import admin
from django.http import HttpRequest

from .models import Job, WorkerHeartbeat


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "label", "owner", "source", "algorithm", "status", "iteration", "iterations", "created",
                    "worker")
    list_filter = ("status", "algorithm", "source")
    search_fields = ("label", "owner__username", "dedup_key", "message")
    exclude = ("last_preview",)
    # What a worker writes (status, result_path, progress) and what was submitted is never edited by hand:
    # staff cancel or delete a job on its page. Only the label and the e-mail switch stay editable.
    readonly_fields = ("owner", "source", "parameters", "algorithm", "status", "cancel_requested", "dedup_key",
                       "created", "started", "finished", "iteration", "iterations", "final_error",
                       "error_history", "device", "worker", "message", "result_path", "last_seq")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the site or the API, where their parameters are checked


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("worker_id", "host", "gpu", "current_job", "last_seen")

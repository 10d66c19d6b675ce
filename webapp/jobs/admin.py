from django.contrib import admin

from .models import Job, WorkerHeartbeat


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "label", "owner", "source", "algorithm", "status", "iteration", "iterations", "created",
                    "worker")
    list_filter = ("status", "algorithm", "source")
    search_fields = ("label", "owner__username", "dedup_key", "message")
    exclude = ("last_preview",)
    readonly_fields = ("created", "started", "finished", "last_seq")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("worker_id", "host", "gpu", "current_job", "last_seen")

"""API tokens: each acts as exactly one user."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

#: The permission an EPICS bridge's user needs (``manage.py create_token USER --bridge`` grants it).
BRIDGE_PERMISSION = "api.act_as_bridge"


def new_key() -> str:
    return secrets.token_hex(20)


class ApiToken(models.Model):
    """A secret sent as ``Authorization: Token <key>``; created in the admin or with ``manage.py create_token``."""

    key = models.CharField(max_length=40, unique=True, default=new_key, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for, e.g. a beamline script.")
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        permissions = [(BRIDGE_PERMISSION.split(".")[1], "Can act as an EPICS bridge: submit jobs with source "
                                                         "'epics' and report the bridge's status")]

    def __str__(self) -> str:
        return f"token {self.key[:6]}… for {self.user}"


class IdempotencyKey(models.Model):
    """An ``Idempotency-Key`` a user sent with a job submission, unique per user: a repeat of the same request
    answers with :attr:`job` instead of creating a second job; the same key with another body is refused."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the normalised request body")
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created"]
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="api_idempotency_key_per_owner")]

    def __str__(self) -> str:
        return f"{self.key} -> job {self.job_id}"

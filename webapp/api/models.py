"""API tokens: each acts as exactly one user. Only a SHA-256 digest of a key is stored; the key itself is shown
once, when the token is made."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

#: The permission an EPICS bridge's user needs (``manage.py create_token USER --bridge`` grants it).
BRIDGE_PERMISSION = "api.act_as_bridge"
#: How many leading characters of a key are kept in clear, to tell tokens apart in lists (not a secret)
PREFIX_CHARS = 8
#: ``last_used`` is written at most this often per token (not on every request)
LAST_USED_RESOLUTION = datetime.timedelta(seconds=60)


def new_key() -> str:
    """A fresh key: 32 random bytes as 64 hex characters (no character a shell, a URL or a word-boundary match in
    a script treats specially, unlike base64's leading '-')."""
    return secrets.token_hex(32)


def key_digest(key: str) -> str:
    """The hex SHA-256 of ``key``, as stored in :attr:`ApiToken.digest`. The key has 256 random bits (older keys
    160), so a plain hash needs no salt or stretching: nothing about it can be guessed."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiToken(models.Model):
    """A secret sent as ``Authorization: Token <key>``; made on the API tokens page, in the admin or with
    ``manage.py create_token``. After ``ApiToken.objects.create(...)`` (or ``save()`` of a new one) the key is in
    :attr:`key` of that instance only: the database holds its digest and first characters."""

    prefix = models.CharField(max_length=PREFIX_CHARS, editable=False, db_index=True,
                              help_text="The key's first characters, to recognise it (not enough to use it).")
    digest = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the key (hex).")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for, e.g. a beamline script.")
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(null=True, blank=True, help_text="Refused from this time on; empty: never.")
    last_used = models.DateTimeField(null=True, blank=True, help_text="To the minute.")

    #: the key in clear, set on the instance that made it and never stored
    key: str = ""

    class Meta:
        ordering = ["-created"]
        permissions = [(BRIDGE_PERMISSION.split(".")[1], "Can act as an EPICS bridge: submit jobs with source "
                                                         "'epics' and report the bridge's status")]

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if not self.digest:
            self.key = new_key()
            self.digest = key_digest(self.key)
            self.prefix = self.key[:PREFIX_CHARS]
        super().save(*args, **kwargs)

    def matches(self, key: str) -> bool:
        """Whether ``key`` is this token's key (a constant-time comparison of digests)."""
        return hmac.compare_digest(self.digest, key_digest(key))

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or timezone.now())

    def __str__(self) -> str:
        return f"token {self.prefix}… for {self.user}"


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

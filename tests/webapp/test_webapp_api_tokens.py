"""API tokens: stored as digests and shown once, optional expiry, last use noted at most once a minute, the
migration that hashes existing keys, and the page where users make and revoke their own."""

from __future__ import annotations

import datetime
import hashlib
import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from webapp_helpers import api_auth as auth

from webapp.api.models import ApiToken, key_digest


@pytest.mark.django_db
def test_a_token_is_stored_as_a_digest_and_its_key_is_in_no_column(user):
    token = ApiToken.objects.create(user=user, name="script")
    assert len(token.key) >= 40 and token.digest == hashlib.sha256(token.key.encode()).hexdigest()
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert token.key not in {str(v) for v in row.values()}
    assert row["prefix"] == token.key[:8]
    assert ApiToken.objects.get(pk=token.pk).key == ""  # read back, the key is gone
    assert ApiToken.objects.create(user=user).key != token.key


@pytest.mark.django_db
def test_a_wrong_or_unknown_key_gets_401(client, token):
    assert client.get("/api/v1/jobs/", **auth(token)).status_code == 200
    for key in (token[:-1] + ("A" if token[-1] != "A" else "B"), token[:8], key_digest(token)):
        r = client.get("/api/v1/jobs/", **auth(key))
        assert r.status_code == 401 and r["WWW-Authenticate"] == "Token", key


@pytest.mark.django_db
def test_an_expired_token_gets_401_saying_it_expired(client, user):
    token = ApiToken.objects.create(user=user, expires=timezone.now() + datetime.timedelta(minutes=5))
    assert client.get("/api/v1/jobs/", **auth(token.key)).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - datetime.timedelta(seconds=1))
    r = client.get("/api/v1/jobs/", **auth(token.key))
    assert r.status_code == 401
    assert "expired" in r.json()["error"] and token.prefix in r.json()["error"]


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_a_minute(client, token):
    row = ApiToken.objects.get(digest=key_digest(token))
    assert row.last_used is None

    def token_writes() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/v1/jobs/", **auth(token)).status_code == 200
        return sum(1 for q in queries.captured_queries if q["sql"].startswith('UPDATE "api_apitoken"'))

    assert [token_writes() for _ in range(3)] == [1, 0, 0]
    first = ApiToken.objects.get(pk=row.pk).last_used
    assert first is not None and abs((timezone.now() - first).total_seconds()) < 10
    ApiToken.objects.filter(pk=row.pk).update(last_used=first - datetime.timedelta(seconds=61))
    assert token_writes() == 1
    assert ApiToken.objects.get(pk=row.pk).last_used > first


@pytest.mark.django_db
def test_create_token_with_expiry_and_a_bad_expiry(user, capsys):
    call_command("create_token", "alice", "--expires-days", "2")
    key = capsys.readouterr().out.strip()
    expires = ApiToken.objects.get(digest=key_digest(key)).expires
    assert abs((expires - timezone.now()).total_seconds() - 2 * 86400) < 60
    with pytest.raises(Exception, match="--expires-days must be a positive"):
        call_command("create_token", "alice", "--expires-days", "0")


@pytest.mark.django_db
def test_the_admin_shows_a_prefix_never_the_key(client, staff_user, user):
    staff_user.is_superuser = True
    staff_user.save()
    token = ApiToken.objects.create(user=user, name="beamline")
    client.force_login(staff_user)
    for url in ("/admin/api/apitoken/", f"/admin/api/apitoken/{token.pk}/change/"):
        html = client.get(url).content.decode()
        assert token.prefix in html and token.key not in html and token.digest not in html, url
    r = client.post("/admin/api/apitoken/add/", {"user": user.pk, "name": "made in the admin", "expires_0": "",
                                                 "expires_1": ""}, follow=True)
    made = ApiToken.objects.get(name="made in the admin")
    shown = re.search(r"The key of token [^:]+: ([\w-]+) \(shown this once", r.content.decode())
    assert shown and made.matches(shown.group(1))
    r = client.post("/admin/api/apitoken/", {"action": "delete_selected", "_selected_action": [token.pk],
                                             "post": "yes"})
    assert r.status_code == 302 and not ApiToken.objects.filter(pk=token.pk).exists()  # staff revoke any


@pytest.mark.django_db
def test_users_make_see_and_revoke_only_their_own_tokens(client, user, other_user):
    assert client.get("/accounts/tokens/")["Location"].startswith("/accounts/login/")
    bobs = ApiToken.objects.create(user=other_user, name="bob's")
    client.force_login(user)
    r = client.post("/accounts/tokens/", {"name": "my script", "expires_days": "30"})
    assert r.status_code == 200 and r["Cache-Control"] == "no-store"
    key = re.search(r'id="new-token-key">([^<]+)<', r.content.decode()).group(1)
    mine = ApiToken.objects.get(user=user)
    assert mine.matches(key) and mine.name == "my script"
    assert 29 * 86400 < (mine.expires - timezone.now()).total_seconds() <= 30 * 86400
    assert client.get("/api/v1/jobs/", **auth(key)).status_code == 200
    page = client.get("/accounts/tokens/").content.decode()
    assert mine.prefix in page and key not in page and "bob's" not in page and bobs.prefix not in page
    bad = client.post("/accounts/tokens/", {"name": "x", "expires_days": "-3"})
    assert bad.status_code == 400 and "whole number of days" in bad.content.decode()
    assert client.post(f"/accounts/tokens/{bobs.pk}/revoke/").status_code == 404
    assert ApiToken.objects.filter(pk=bobs.pk).exists()
    assert client.post(f"/accounts/tokens/{mine.pk}/revoke/").status_code == 302
    assert not ApiToken.objects.filter(pk=mine.pk).exists()
    assert client.get("/api/v1/jobs/", **auth(key)).status_code == 401


@pytest.mark.django_db
def test_the_token_page_needs_the_csrf_token(user):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.post("/accounts/tokens/", {"name": "forged"}).status_code == 403
    page = browser.get("/accounts/tokens/").content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert browser.post("/accounts/tokens/", {"name": "real", "csrfmiddlewaretoken": csrf}).status_code == 200
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["real"]


@pytest.mark.django_db(transaction=True)
def test_the_migration_hashes_a_plain_key_made_before_it_and_the_key_keeps_working(client, django_user_model):
    executor = MigrationExecutor(connection)
    executor.migrate([("api", "0002_idempotency_key_bridge_permission")])
    old_apps = executor.loader.project_state([("api", "0002_idempotency_key_bridge_permission")]).apps
    owner = old_apps.get_model("auth", "User").objects.create(username="legacy", is_active=True)
    old_key = "0123456789abcdef0123456789abcdef01234567"  # the form of a key before the migration
    old_apps.get_model("api", "ApiToken").objects.create(user_id=owner.pk, key=old_key, name="old script")
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    token = ApiToken.objects.get(name="old script")
    assert token.digest == key_digest(old_key) and token.prefix == old_key[:8]
    assert old_key not in {str(v) for v in ApiToken.objects.filter(pk=token.pk).values().get().values()}
    r = client.get("/api/v1/jobs/", **auth(old_key))
    assert r.status_code == 200
    with pytest.raises(RuntimeError, match="cannot be recovered"):  # back below 0003 only without tokens
        MigrationExecutor(connection).migrate([("api", "0002_idempotency_key_bridge_permission")])
    assert client.get("/api/v1/jobs/", **auth(old_key)).status_code == 200  # the refusal changed nothing

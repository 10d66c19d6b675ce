"""Single sign-on by the reverse proxy's header (webapp/accounts/remote_user.py) through Django's test client:
off by default; on, the header logs in only from a trusted proxy's address; account creation can be turned off;
a header without a trusted proxy, or a malformed header name, stops the settings. Through a real nginx:
tests/e2e/test_sso_proxy.py."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.test import Client
from test_settings_env import embedded_env, load_settings

PROXY = "127.0.0.3"


@pytest.fixture
def sso(settings):
    settings.PTYCHOPY_REMOTE_USER_HEADER = "X-Remote-User"
    settings.PTYCHOPY_TRUSTED_PROXIES = [PROXY]
    settings.PTYCHOPY_REMOTE_USER_CREATE = True
    return settings


def who(client: Client, **headers: str) -> str | None:
    """The user the history page greets, or None when it redirects to the login page."""
    resp = client.get("/", headers=headers)
    if resp.status_code == 302:
        assert resp["Location"].startswith("/accounts/login/"), resp["Location"]
        return None
    assert resp.status_code == 200
    return resp.context["user"].username


@pytest.mark.django_db
def test_the_header_does_nothing_while_the_setting_is_off(settings) -> None:
    settings.PTYCHOPY_TRUSTED_PROXIES = [PROXY]
    assert settings.PTYCHOPY_REMOTE_USER_HEADER == ""
    assert who(Client(REMOTE_ADDR=PROXY), **{"X-Remote-User": "olga"}) is None
    assert not User.objects.filter(username="olga").exists()


@pytest.mark.django_db
def test_a_trusted_proxy_signs_a_new_user_in_without_privileges(sso) -> None:
    client = Client(REMOTE_ADDR=PROXY)
    assert who(client, **{"X-Remote-User": "olga"}) == "olga"
    olga = User.objects.get(username="olga")
    assert not olga.is_staff and not olga.is_superuser and not olga.has_usable_password()
    assert who(client, **{"X-Remote-User": "olga"}) == "olga"  # the session, same user
    assert who(client) is None, "a request the proxy sent without the header ends the proxy's login"


@pytest.mark.django_db
def test_a_direct_client_cannot_sign_in_with_the_header(sso, caplog) -> None:
    User.objects.create_user("carol", is_staff=True)
    with caplog.at_level(logging.WARNING, logger="webapp.accounts.remote_user"):
        assert who(Client(REMOTE_ADDR="127.0.0.1"), **{"X-Remote-User": "carol"}) is None
        assert who(Client(REMOTE_ADDR="10.1.2.3"), **{"X-Remote-User": "carol"}) is None
    assert "X-Remote-User header from 127.0.0.1 ignored: not a trusted proxy" in caplog.text
    assert "from 10.1.2.3 ignored" in caplog.text
    assert who(Client(REMOTE_ADDR=PROXY), **{"X-Remote-User": ""}) is None, "an empty name is no name"


@pytest.mark.django_db
def test_without_account_creation_only_existing_users_sign_in(sso) -> None:
    sso.PTYCHOPY_REMOTE_USER_CREATE = False
    User.objects.create_user("petra")
    assert who(Client(REMOTE_ADDR=PROXY), **{"X-Remote-User": "stranger"}) is None
    assert not User.objects.filter(username="stranger").exists()
    assert who(Client(REMOTE_ADDR=PROXY), **{"X-Remote-User": "petra"}) == "petra"


@pytest.mark.parametrize(("env", "message"), [
    ({"PTYCHOPY_REMOTE_USER_HEADER": "X-Remote-User"},
     "PTYCHOPY_REMOTE_USER_HEADER is set but PTYCHOPY_TRUSTED_PROXIES is empty"),
    ({"PTYCHOPY_REMOTE_USER_HEADER": "X_Remote_User", "PTYCHOPY_TRUSTED_PROXIES": PROXY},
     "PTYCHOPY_REMOTE_USER_HEADER='X_Remote_User': a header name of letters, digits and dashes"),
])
def test_an_unsafe_configuration_stops_the_settings(tmp_path, env, message) -> None:
    out = load_settings(embedded_env(tmp_path, **env))
    assert out.returncode == 1 and message in out.stderr, out.stderr[-1500:]

"""Sign-in against a real LDAP directory (Debian's slapd on loopback, tests/support/slapd.py) through the login
form: a directory user gets an account (mail and names from the directory, no password, no staff); a wrong or
empty password, a name with DN syntax, and a directory that is down get nobody in; off without its URL; the
settings refuse a configuration that cannot work."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from test_settings_env import embedded_env, load_settings

from tests.support.slapd import PEOPLE, Slapd
from webapp.accounts.ldap_login import LdapBackend


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(Path(tmp_path_factory.mktemp("slapd"))).start()
    server.add_person("petra", "petra-pw-1", given="Petra", surname="Holm", mail="petra@lab.example.org")
    yield server
    server.stop()


@pytest.fixture
def ldap_on(settings, directory: Slapd):
    settings.PTYCHOPY_LDAP_URL = directory.url
    settings.PTYCHOPY_LDAP_USER_DN = f"uid={{username}},{PEOPLE}"
    settings.PTYCHOPY_LDAP_START_TLS = False
    settings.PTYCHOPY_LDAP_CREATE = True
    settings.PTYCHOPY_LDAP_TIMEOUT_S = 3.0
    return settings


def log_in(username: str, password: str) -> tuple[int, str | None]:
    client = Client()
    resp = client.post("/accounts/login/", {"username": username, "password": password})
    user = client.get("/").wsgi_request.user
    return resp.status_code, user.username if user.is_authenticated else None


@pytest.mark.django_db
def test_a_directory_user_signs_in_through_the_login_form(ldap_on) -> None:
    assert log_in("petra", "petra-pw-1") == (302, "petra")
    petra = User.objects.get(username="petra")
    assert (petra.email, petra.first_name, petra.last_name) == ("petra@lab.example.org", "Petra", "Holm")
    assert not petra.is_staff and not petra.has_usable_password()
    assert log_in("petra", "petra-pw-1") == (302, "petra"), "the second time: the same account"
    assert User.objects.filter(username="petra").count() == 1


@pytest.mark.django_db
def test_wrong_or_empty_passwords_and_dn_syntax_get_nobody_in(ldap_on, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="webapp.accounts.ldap_login"):
        assert log_in("petra", "not-her-password") == (200, None)
    assert "LDAP sign-in of 'petra' refused by ldap://127.0.0.1" in caplog.text and "invalidCredentials" in caplog.text
    request = RequestFactory().post("/accounts/login/")
    backend = LdapBackend()
    assert backend.authenticate(request, username="petra", password="") is None  # an unauthenticated bind
    assert backend.authenticate(request, username="petra,ou=people", password="petra-pw-1") is None
    assert backend.authenticate(request, username="*", password="petra-pw-1") is None
    assert backend.authenticate(request, username="petra", password="petra-pw-1").username == "petra"


@pytest.mark.django_db
def test_without_account_creation_only_existing_accounts_sign_in(ldap_on) -> None:
    ldap_on.PTYCHOPY_LDAP_CREATE = False
    assert log_in("petra", "petra-pw-1") == (200, None)
    User.objects.create_user("petra")
    assert log_in("petra", "petra-pw-1") == (302, "petra")


@pytest.mark.django_db
def test_a_directory_that_is_down_is_logged_and_local_accounts_still_work(ldap_on, caplog) -> None:
    from tests.support.net import free_port

    ldap_on.PTYCHOPY_LDAP_URL = f"ldap://127.0.0.1:{free_port()}"  # nothing listens
    User.objects.create_user("local", password="local-pw-12345")
    with caplog.at_level(logging.ERROR, logger="webapp.accounts.ldap_login"):
        assert log_in("petra", "petra-pw-1") == (200, None)
    assert "cannot be used: LDAPSocketOpenError" in caplog.text
    assert log_in("local", "local-pw-12345") == (302, "local")


@pytest.mark.django_db
def test_off_without_its_url(settings, directory: Slapd) -> None:
    settings.PTYCHOPY_LDAP_USER_DN = f"uid={{username}},{PEOPLE}"
    assert settings.PTYCHOPY_LDAP_URL == ""
    assert log_in("petra", "petra-pw-1") == (200, None)


@pytest.mark.parametrize(("env", "message"), [
    ({"PTYCHOPY_LDAP_URL": "ldap://ldap.example.org", "PTYCHOPY_LDAP_USER_DN": "ou=people,dc=example,dc=org"},
     "PTYCHOPY_LDAP_USER_DN='ou=people,dc=example,dc=org' has no {username}"),
    ({"PTYCHOPY_LDAP_URL": "https://ldap.example.org", "PTYCHOPY_LDAP_USER_DN": "uid={username},dc=x"},
     "PTYCHOPY_LDAP_URL='https://ldap.example.org': expected ldaps://host[:port] or ldap://host[:port]"),
])
def test_a_configuration_that_cannot_work_stops_the_settings(tmp_path, env, message) -> None:
    out = load_settings(embedded_env(tmp_path, **env))
    assert out.returncode == 1 and message in out.stderr, out.stderr[-1500:]

"""Logins and the site's exposure in process: the client address behind proxies, DEBUG and the embedded key,
the lockout page, mail without a mail server and the gated password reset (end to end: tests/e2e/test_accounts.py).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from pathlib import Path

import pytest
from django.core import mail
from django.test import Client

from webapp.accounts.client_ip import client_address
from webapp.site_security import (
    SiteConfigError,
    check_debug,
    embedded_secret_key,
    is_loopback,
    parse_networks,
    serve_allowed_hosts,
)

PROXIES = parse_networks(["127.0.0.1", "10.0.5.0/24"])


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("203.0.113.7", "", "203.0.113.7"),
    ("203.0.113.7", "1.2.3.4", "203.0.113.7"),  # not a trusted proxy: its header is the client's word only
    ("127.0.0.1", "", "127.0.0.1"),  # the proxy asking by itself
    ("127.0.0.1", "198.51.100.4", "198.51.100.4"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.4", "198.51.100.4"),  # the left entry was written by the client
    ("127.0.0.1", "6.6.6.6, 198.51.100.4, 10.0.5.9", "198.51.100.4"),  # two proxies deep
    ("127.0.0.1", "10.0.5.8, 10.0.5.9", "10.0.5.8"),  # only proxies: the farthest one
    ("127.0.0.1", "198.51.100.4:5123", "198.51.100.4"),
    ("127.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
    ("::ffff:127.0.0.1", "198.51.100.4", "198.51.100.4"),
    ("127.0.0.1", "6.6.6.6, unknown", "127.0.0.1"),  # malformed next to the proxy: the proxy's own address
    ("", "198.51.100.4", None),
])
def test_the_client_address_believes_forwarded_for_only_from_trusted_proxies(peer: str, forwarded: str,
                                                                               client: str | None) -> None:
    assert client_address(peer, forwarded, PROXIES) == client


def test_a_bad_trusted_proxy_entry_is_named() -> None:
    with pytest.raises(SiteConfigError, match=r"PTYCHOPY_TRUSTED_PROXIES: 'proxy\.example' is not an IP address"):
        parse_networks(["10.0.0.1", "proxy.example"])
    assert parse_networks(["10.0.0.0/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


def test_debug_is_refused_in_production_and_on_a_network_address() -> None:
    with pytest.raises(SiteConfigError, match="DEBUG=1 is refused outside the embedded mode"):
        check_debug(True, embedded=False, serve_host="")
    with pytest.raises(SiteConfigError, match="DEBUG=1 is refused with --host 0.0.0.0"):
        check_debug(True, embedded=True, serve_host="0.0.0.0")
    check_debug(True, embedded=True, serve_host="127.0.0.1")
    check_debug(True, embedded=True, serve_host="")
    check_debug(False, embedded=False, serve_host="0.0.0.0")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("beamline-pc", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_allowed_hosts_of_an_embedded_server() -> None:
    assert serve_allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    wide = serve_allowed_hosts("0.0.0.0")
    assert "0.0.0.0" not in wide and wide[:3] == ["127.0.0.1", "localhost", "[::1]"]
    assert socket.gethostname() in wide
    assert "192.0.2.10" in serve_allowed_hosts("192.0.2.10")


def test_the_embedded_key_is_random_private_and_kept(tmp_path: Path) -> None:
    first = embedded_secret_key(tmp_path / "a")
    assert len(first) >= 50 and embedded_secret_key(tmp_path / "a") == first
    assert (tmp_path / "a" / "secret_key").stat().st_mode & 0o777 == 0o600
    assert embedded_secret_key(tmp_path / "b") != first
    assert not [p for p in (tmp_path / "a").iterdir() if p.name != "secret_key"], "temporary files left"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "secret_key").write_text("short\n")
    with pytest.raises(SiteConfigError, match=r"secret_key: the secret key there is 5 characters"):
        embedded_secret_key(tmp_path / "c")


@pytest.mark.django_db
def test_the_fifth_wrong_password_locks_the_pair_with_a_page_saying_when(settings, user) -> None:
    client = Client(REMOTE_ADDR="198.51.100.4")
    for _ in range(4):
        assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    resp = client.post("/admin/login/", {"username": "alice", "password": "wrong"})
    assert resp.status_code == 429
    retry_after = int(resp["Retry-After"])
    assert 895 <= retry_after <= 900, retry_after
    text = resp.content.decode()
    assert re.search(r"Try again after \d\d:\d\d:\d\d UTC\s+\(in 15 minutes\)", text), text
    assert client.post("/accounts/login/", {"username": "alice", "password": "alice-password"}).status_code == 429
    elsewhere = Client(REMOTE_ADDR="198.51.100.5")
    assert elsewhere.post("/accounts/login/", {"username": "alice", "password": "alice-password"}).status_code == 302


def test_no_mail_server_logs_that_a_mail_was_dropped_and_not_its_body(settings, caplog) -> None:
    settings.EMAIL_BACKEND = "webapp.accounts.mail.SuppressedEmailBackend"
    with caplog.at_level(logging.WARNING, logger="webapp.accounts.mail"):
        sent = mail.send_mail("[ptychopy] job 3 done", "secret body text", None, ["a@example.org"])
    assert sent == 0
    assert "mail not sent (no mail server: set EMAIL_HOST" in caplog.text and "job 3 done" in caplog.text
    assert "secret body text" not in caplog.text


@pytest.mark.django_db
@pytest.mark.parametrize("backend", ["webapp.accounts.mail.SuppressedEmailBackend",
                                     "django.core.mail.backends.console.EmailBackend"])
def test_password_reset_is_off_without_a_delivering_mail_backend(settings, user, backend: str, capsys) -> None:
    settings.EMAIL_BACKEND = backend
    client = Client()
    page = client.get("/accounts/password_reset/")
    assert page.status_code == 200 and b'id="reset-off"' in page.content
    resp = client.post("/accounts/password_reset/", {"email": "alice@example.org"})
    assert resp.status_code == 403
    assert "reset" not in capsys.readouterr().out, "a reset mail was printed"


@pytest.mark.django_db
def test_a_reset_mail_keeps_its_token_after_the_hash(settings, user) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client = Client()
    resp = client.post("/accounts/password_reset/", {"email": "alice@example.org"})
    assert resp.status_code == 302
    [message] = mail.outbox
    m = re.search(r"http://testserver(/accounts/reset/(\w+)/)#(\S+)", message.body)
    assert m, message.body
    path, uid, token = m.groups()
    assert f"enter: {token}" in message.body
    resp = client.post(path, {"token": token})
    assert resp.status_code == 302 and resp["Location"] == f"/accounts/reset/{uid}/set-password/"
    assert b"new_password1" in client.get(resp["Location"]).content
    assert client.post(path, {"token": ""}).status_code == 400


@pytest.mark.django_db
def test_an_unreachable_mail_server_is_logged_without_the_mail(settings, user, caplog) -> None:
    """Django answers as if the mail went (no hint whether the address is known) and logs the failure."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    with caplog.at_level(logging.ERROR, logger="django.contrib.auth"):
        resp = Client().post("/accounts/password_reset/", {"email": "alice@example.org"})
    assert resp.status_code == 302 and resp["Location"] == "/accounts/password_reset/done/"
    assert "Failed to send password reset email" in caplog.text and "ConnectionRefusedError" in caplog.text
    assert "/accounts/reset/" not in caplog.text

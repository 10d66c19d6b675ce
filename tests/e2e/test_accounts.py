"""Logins, password reset and the production settings, attacked through real Daphne processes (issue 15,
findings 7, 8 and 11, and ``check --deploy``).

The shared production stack's Daphne trusts no proxy and cools off for the default 15 minutes; a second Daphne on
the same database plays the app behind a reverse proxy on 127.0.0.1 (``PTYCHOPY_TRUSTED_PROXIES``;
tests/support/proxy.py, its clients on other loopback addresses), with a cool-off of a few seconds so the test
can wait it out. Every user attacked here is the test's own.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.processes import ManagedProcess, cpu_seconds, daphne, run_manage
from tests.support.proxy import ReverseProxy
from tests.support.smtp import SmtpSink
from tests.support.stack import ProductionStack
from tests.support.web import Response, WebClient

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]

COOLOFF_S = 6
CHROMIUM = os.environ.get("PTYCHOPY_TEST_CHROMIUM", "/usr/bin/chromium")
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"

class LoginClient:
    """One browser (cookies, CSRF token) posting to both login forms from ``source_ip`` (a loopback address:
    another client), optionally with an ``X-Forwarded-For`` it wrote itself (``spoof``)."""

    def __init__(self, base_url: str, source_ip: str | None = None) -> None:
        self.web = WebClient(base_url, source_ip=source_ip)
        self.tokens: dict[str, str] = {}

    def attempt(self, path: str, username: str, password: str, spoof: str = "") -> Response:
        if path not in self.tokens:
            page = self.web.get(path)
            assert page.status == 200, f"{path}: {page!r}"
            self.tokens[path] = page.csrf_token()
        headers = {"X-Forwarded-For": spoof} if spoof else {}
        return self.web.post_form(path, {"username": username, "password": password, "next": "/",
                                         "csrfmiddlewaretoken": self.tokens[path]}, csrf=False, headers=headers)


def assert_refused_normally(resp: Response, what: str) -> None:
    again = "match" in resp.text or "correct username and password" in resp.text
    assert resp.status == 200 and again, f"{what}: a wrong password should get the login form again, got {resp!r}"


def assert_locked(resp: Response, what: str) -> int:
    """The lockout answer: 429, a page saying until when, Retry-After. Returns Retry-After (s)."""
    assert resp.status == 429, f"{what}: expected 429 (locked out), got {resp!r}"
    assert 'id="locked-out"' in resp.text and "Try again after" in resp.text, f"{what}: {resp.text[:600]}"
    wait_s = int(resp.headers.get("retry-after", "0"))
    assert 1 <= wait_s <= COOLOFF_S + 1, f"{what}: Retry-After {wait_s!r}"
    return wait_s


@pytest.fixture(scope="module")
def proxied_web(prod_stack: ProductionStack) -> Iterator[ManagedProcess]:
    """A Daphne behind a 'proxy' on 127.0.0.1, with a short login cool-off."""
    env = dict(prod_stack.env, PTYCHOPY_TRUSTED_PROXIES="127.0.0.1", PTYCHOPY_LOGIN_COOLOFF_S=str(COOLOFF_S))
    proc = daphne("prod-login-proxy-daphne", free_port(), env).start()
    yield proc
    proc.stop()


def test_wrong_passwords_lock_one_user_at_one_address_on_both_login_pages(
        prod_stack: ProductionStack, proxied_web: ManagedProcess) -> None:
    """Finding 7: 200 wrong passwords were all answered. Now, through a reverse proxy (clients on 127.0.0.2 and
    127.0.0.3, Daphne seeing only the proxy), the fifth locks that (user, client address) pair for the cool-off on
    /accounts/login/ and /admin/login/ alike; other users and addresses log in; the right password works once the
    cool-off is over."""
    tess_pw = secrets.token_urlsafe(12)
    prod_stack.create_users(("tess", tess_pw, "", True), ("ursula", "ursula-pw-12345", "", False))
    with ReverseProxy(proxied_web.port) as proxy:
        attacker = LoginClient(proxy.base_url, source_ip="127.0.0.2")
        # the attacker writes a new address of its own into X-Forwarded-For each time: the proxy's entry counts
        paths = [LOGIN, LOGIN, ADMIN_LOGIN, ADMIN_LOGIN]
        attacker.attempt(LOGIN, "nobody", "x")  # (fetches the CSRF tokens; an unknown user is a pair of its own)
        attacker.attempt(ADMIN_LOGIN, "nobody", "x")
        cpu0 = cpu_seconds(proxied_web.pid)
        for i, path in enumerate(paths):
            resp = attacker.attempt(path, "tess", f"guess-{i}", spoof=f"10.9.{i}.1")
            assert_refused_normally(resp, f"try {i + 1}")
        hashed_ms = (cpu_seconds(proxied_web.pid) - cpu0) / len(paths) * 1e3
        fifth = attacker.attempt(LOGIN, "tess", "guess-4", spoof="10.9.4.1")
        assert_locked(fifth, "the fifth wrong password")
        assert "127.0.0.2" in fifth.text, "the lockout page names another address than the client's"
        locked_at = time.monotonic()

        cpu0 = cpu_seconds(proxied_web.pid)
        t0 = time.perf_counter()
        n = 20
        for i in range(n):
            path = (LOGIN, ADMIN_LOGIN)[i % 2]
            resp = attacker.attempt(path, "tess", f"guess-{i + 5}", spoof=f"10.8.{i}.1")
            assert_locked(resp, f"locked try on {path}")
        cpu_ms = (cpu_seconds(proxied_web.pid) - cpu0) / n * 1e3
        wall_ms = (time.perf_counter() - t0) / n * 1e3
        print(f"wrong password: server CPU {hashed_ms:.0f} ms per answer; locked-out login: {wall_ms:.1f} ms per "
              f"answer, server CPU {cpu_ms:.1f} ms per answer")
        assert cpu_ms < 60, f"a refused login cost the server {cpu_ms:.0f} ms of CPU (no password should be hashed)"
        assert_locked(attacker.attempt(LOGIN, "tess", tess_pw), "the right password while locked out")
        # going round the proxy, straight to Daphne, with a header naming another client does not help either
        around = LoginClient(f"http://127.0.0.1:{proxied_web.port}", source_ip="127.0.0.2")
        assert_locked(around.attempt(LOGIN, "tess", tess_pw, spoof="127.0.0.3"), "straight to Daphne, forged")

        # tess from her own address, and another user from the attacker's address, are not locked out
        resp = LoginClient(proxy.base_url, source_ip="127.0.0.3").attempt(ADMIN_LOGIN, "tess", tess_pw)
        assert resp.status == 302, f"tess from another address was locked out by the attacker: {resp!r}"
        resp = LoginClient(proxy.base_url, source_ip="127.0.0.2").attempt(LOGIN, "ursula", "ursula-pw-12345")
        assert resp.status == 302, f"another user at the attacker's address was locked out: {resp!r}"

        # the lockout runs from the fifth failure (refused tries move no deadline): after the cool-off, tess logs in
        time.sleep(max(0.0, COOLOFF_S + 0.5 - (time.monotonic() - locked_at)))
        resp = attacker.attempt(LOGIN, "tess", tess_pw)
        assert resp.status == 302, f"the right password after the cool-off: {resp!r}"


def test_forwarded_for_from_an_untrusted_peer_is_ignored_and_the_count_is_shared_by_every_daphne(
        prod_stack: ProductionStack, proxied_web: ManagedProcess) -> None:
    """The shared stack's Daphne trusts no proxy: an attacker who writes X-Forwarded-For is counted by its own
    address. Failures seen by one Daphne process count on another (the database holds them)."""
    prod_stack.create_users(("vic", "vic-pw-12345", "", False))
    direct = LoginClient(prod_stack.base_url)
    for i in range(3):
        assert_refused_normally(direct.attempt(LOGIN, "vic", f"guess-{i}", spoof=f"192.0.2.{i + 1}"), "direct try")
    # the proxied Daphne, asked by its 'proxy' itself (no X-Forwarded-For): the same client, 127.0.0.1
    other = LoginClient(f"http://127.0.0.1:{proxied_web.port}")
    assert_refused_normally(other.attempt(LOGIN, "vic", "guess-3"), "fourth try, other Daphne")
    assert other.attempt(ADMIN_LOGIN, "vic", "guess-4").status == 429, "fifth try, other Daphne"
    resp = direct.attempt(LOGIN, "vic", "vic-pw-12345", spoof="192.0.2.99")
    assert resp.status == 429, f"a spoofed X-Forwarded-For got past the lockout: {resp!r}"


def test_password_reset_without_a_mail_server_is_off_and_logs_nothing(prod_stack: ProductionStack) -> None:
    """Finding 11: the console mail backend printed a working reset link into the server log."""
    prod_stack.create_users(("wanda", "wanda-pw-12345", "wanda@example.org", False))
    web = WebClient(prod_stack.base_url)
    login = web.get(LOGIN)
    assert "/accounts/password_reset/" in login.text, "the login page offers no way to a password reset"
    page = web.get("/accounts/password_reset/")
    assert page.status == 200 and 'id="reset-off"' in page.text and "EMAIL_HOST" in page.text, page
    resp = web.post_form("/accounts/password_reset/", {"email": "wanda@example.org",
                                                       "csrfmiddlewaretoken": login.csrf_token()}, csrf=False)
    assert resp.status == 403 and 'id="reset-off"' in resp.text, resp
    assert prod_stack.web is not None
    log = prod_stack.web.log_text()
    assert "/accounts/reset/" not in log and "wanda@example.org" not in log, "the reset mail reached the log"


def test_password_reset_through_a_mail_server_never_logs_the_link(prod_stack: ProductionStack) -> None:
    prod_stack.create_users(("xena", "xena-pw-12345", "xena@example.org", False))
    with SmtpSink() as smtp:
        env = dict(prod_stack.env, EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp.port),
                   DEFAULT_FROM_EMAIL="ptychopy@example.org")
        web_proc = daphne("prod-mail-daphne", free_port(), env).start()
        try:
            web = WebClient(f"http://127.0.0.1:{web_proc.port}")
            page = web.get("/accounts/password_reset/")
            assert page.status == 200 and 'name="email"' in page.text, page
            resp = web.post_form("/accounts/password_reset/", {"email": "xena@example.org",
                                                               "csrfmiddlewaretoken": page.csrf_token()}, csrf=False)
            assert resp.status == 302 and resp.location.endswith("/accounts/password_reset/done/"), resp
            [mail] = smtp.wait_for(1)
            assert mail["To"] == "xena@example.org", mail["To"]
            body = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            link = re.search(r"(https?://\S+/accounts/reset/(\S+?)/)#(\S+)", body)
            assert link, f"no reset link (token after '#') in the mail:\n{body}"
            page_url, uid, token = link.group(1), link.group(2), link.group(3)

            def redeem() -> Response:
                # what the link's page does in a browser: it posts the token that followed '#'
                page = web.get(page_url)
                assert page.status == 200 and 'id="reset-link-form"' in page.text, page
                return web.post_form(page_url, {"token": token, "csrfmiddlewaretoken": page.csrf_token()},
                                     csrf=False)

            follow = redeem()
            assert follow.status == 302 and follow.location.endswith(f"/accounts/reset/{uid}/set-password/"), follow
            form = web.get(follow.location)
            assert form.status == 200 and "new_password1" in form.text, form
            done = web.post_form(follow.location, {"new_password1": "xena-new-pw-67890",
                                                   "new_password2": "xena-new-pw-67890",
                                                   "csrfmiddlewaretoken": form.csrf_token()}, csrf=False)
            assert done.status == 302 and done.location.endswith("/accounts/reset/done/"), done
            WebClient(f"http://127.0.0.1:{web_proc.port}").login("xena", "xena-new-pw-67890")
            used = web.get(redeem().location)
            assert used.status == 200 and "new_password1" not in used.text, "a used reset link works again"

            # in a browser the link's page posts the token itself, and the address bar keeps no token
            page = web.get("/accounts/password_reset/")
            web.post_form("/accounts/password_reset/", {"email": "xena@example.org",
                                                        "csrfmiddlewaretoken": page.csrf_token()}, csrf=False)
            second = smtp.wait_for(2)[1].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            browser_link = re.search(r"https?://\S+/accounts/reset/\S+?/#\S+", second)
            assert browser_link, second
            token2 = browser_link.group(0).rsplit("#", 1)[1]
            assert reset_in_chromium(browser_link.group(0), "xena-third-pw-24680").endswith("/accounts/reset/done/")
            WebClient(f"http://127.0.0.1:{web_proc.port}").login("xena", "xena-third-pw-24680")
        finally:
            web_proc.stop()
        log = web_proc.log_text()
        assert "/set-password/" in log, "the log holds no request lines: this test would see no link in them"
        for secret in (token, token2):
            assert secret not in log, f"a reset token is in the server log:\n{log[-2000:]}"


def reset_in_chromium(link: str, new_password: str) -> str:
    """Open a reset mail's link in Chromium, set ``new_password``; returns the page's final URL."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            pg = browser.new_page()
            pg.goto(link)
            pg.wait_for_url("**/set-password/", timeout=15_000)
            pg.fill("input[name=new_password1]", new_password)
            pg.fill("input[name=new_password2]", new_password)
            with pg.expect_navigation():
                pg.click("form [type=submit]")
            return str(pg.url)
        finally:
            browser.close()


def _production_env(stack: ProductionStack) -> dict[str, str]:
    """The stack's environment as a facility sets it (no test-only plain-http switch)."""
    return {k: v for k, v in stack.env.items() if k != "PTYCHOPY_INSECURE_COOKIES"}


def test_check_deploy_has_no_warning_under_production_settings(prod_stack: ProductionStack) -> None:
    env = _production_env(prod_stack)
    out = run_manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert "no issues" in out, out
    # the check is live: the switches the defaults turn on, turned off, are each reported
    weak = dict(env, SECURE_HSTS_SECONDS="0", SECURE_SSL_REDIRECT="0", SESSION_COOKIE_SECURE="0")
    with pytest.raises(RuntimeError) as err:
        run_manage(weak, "check", "--deploy", "--fail-level", "WARNING")
    for warning in ("security.W004", "security.W008", "security.W012"):
        assert warning in str(err.value), f"{warning} missing:\n{err.value}"


def test_debug_is_refused_outside_the_embedded_mode(prod_stack: ProductionStack) -> None:
    """Finding 8: DATABASE_URL with DEBUG=1 (and no SECRET_KEY) served Django's debug pages."""
    env = dict(_production_env(prod_stack), DEBUG="1")
    proc = daphne("prod-debug-daphne", free_port(), env)
    with pytest.raises(RuntimeError) as err:
        proc.start(wait=60)
    assert "DEBUG=1 is refused outside the embedded mode" in str(err.value), err.value
    bare = {k: v for k, v in env.items() if k != "SECRET_KEY"}
    with pytest.raises(RuntimeError) as err:
        run_manage(bare, "check")
    assert "DEBUG=1 is refused" in str(err.value), err.value

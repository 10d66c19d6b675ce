"""Single sign-on by the reverse proxy's header, through a real nginx in front of Daphne (production settings,
PostgreSQL, Redis): nginx authenticates with basic auth and sends X-Remote-User from its own address 127.0.0.3,
the only trusted proxy. A user signed in by nginx gets the pages as themselves (a new, unprivileged account); a
client that sends the header itself, through nginx or straight to Daphne, gets nothing from it."""

from __future__ import annotations

import base64

import pytest

from tests.support.net import free_port
from tests.support.nginx import basic_auth_proxy
from tests.support.processes import daphne
from tests.support.stack import ProductionStack, User
from tests.support.web import Response, WebClient

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(180)]

PROXY_ADDRESS = "127.0.0.3"


def greeted(resp: Response) -> str | None:
    """The user name the page's top bar shows, or None for the login redirect."""
    if resp.status == 302:
        assert "/accounts/login/" in resp.location, resp
        return None
    assert resp.status == 200, resp
    start = resp.text.find('<span class="who">')
    assert start >= 0, "no user in the top bar"
    return resp.text[start + len('<span class="who">'):].split("<", 1)[0].strip()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_only_the_proxy_names_the_user(prod_stack: ProductionStack, carol: User, tmp_path) -> None:
    env = dict(prod_stack.env, PTYCHOPY_REMOTE_USER_HEADER="X-Remote-User", PTYCHOPY_TRUSTED_PROXIES=PROXY_ADDRESS)
    web = daphne("sso-daphne", free_port(), env).start()
    proxy = basic_auth_proxy("sso-nginx", tmp_path / "nginx", web.port or 0, {"olga": "olga-pw"},
                             user_header="X-Remote-User", bind=PROXY_ADDRESS)
    try:
        proxy.start(wait=30)
        through = WebClient(f"http://127.0.0.1:{proxy.port}")
        assert through.get("/").status == 401, "nginx lets nobody through without a password"
        assert greeted(through.get("/", headers=basic("olga", "olga-pw"))) == "olga"
        assert greeted(through.get("/", headers={**basic("olga", "olga-pw"), "X-Remote-User": carol.username})) \
            == "olga", "a header the client sent through the proxy is overwritten by it"
        admin = through.get("/admin/", headers=basic("olga", "olga-pw"))
        assert admin.status == 302 and "/admin/login/" in admin.location, "a new account is not staff"

        direct = WebClient(f"http://127.0.0.1:{web.port}")
        assert greeted(direct.get("/", headers={"X-Remote-User": carol.username})) is None
        assert greeted(direct.get("/", headers={"X_Remote_User": carol.username})) is None
        assert direct.get("/admin/", headers={"X-Remote-User": carol.username}).status == 302
        web.stop()  # flush its log
        log = web.log_text()
        assert "X-Remote-User header from 127.0.0.1 ignored: not a trusted proxy" in log, log[-2000:]
        assert "new account 'olga'" in log
    finally:
        proxy.stop()
        web.stop()

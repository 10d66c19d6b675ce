"""Single sign-on with OpenID Connect, end to end with real processes: ptychopy's production web (Daphne on
PostgreSQL and Redis) as the client of a real provider (django-oidc-provider in its own Django process and
database, tests/support/oidc.py), through the whole authorization-code flow with a real HTTP client: the login
page's button, the provider's login form, the code back to /oidc/callback/, the web process redeeming it at the
provider's token endpoint and checking the RS256 ID token against its JWKS. A forged callback gets nobody in.
Then the same in Chromium, as a person signs in."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.net import free_port
from tests.support.oidc import OidcProvider
from tests.support.processes import TEST_OUTPUT, daphne
from tests.support.stack import ProductionStack
from tests.support.web import WebClient

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(240)]


def greeted(resp) -> str | None:  # type: ignore[no-untyped-def]
    if resp.status == 302:
        return None
    m = re.search(r'<span class="who">([^<]*)</span>', resp.text)
    assert resp.status == 200 and m, resp
    return m.group(1).strip()


@dataclass
class OidcSite:
    provider: OidcProvider
    url: str
    label: str = "Lab ID"


@pytest.fixture(scope="module")
def oidc_site(prod_stack: ProductionStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcSite]:
    """ptychopy's production web as the client of a real provider process, both on loopback."""
    port = free_port()
    site = OidcSite(OidcProvider(tmp_path_factory.mktemp("provider"),
                                 redirect_uri=f"http://127.0.0.1:{port}/oidc/callback/"), f"http://127.0.0.1:{port}")
    site.provider.start()
    web = daphne("oidc-daphne", port, {**prod_stack.env, **site.provider.client_env(),
                                       "PTYCHOPY_OIDC_LABEL": site.label})
    try:
        web.start()
        yield site
    finally:
        web.stop()
        site.provider.stop()


def test_a_provider_user_signs_in_through_the_authorization_code_flow(oidc_site: OidcSite,
                                                                      prod_stack: ProductionStack) -> None:
    provider, site = oidc_site.provider, oidc_site.url
    browser = WebClient(site)
    login_page = browser.get("/accounts/login/?next=/jobs/new/")
    assert login_page.status == 200 and "Sign in with Lab ID" in login_page.text
    button = re.search(r'id="oidc-login" class="button" href="([^"]+)"', login_page.text)
    assert button, login_page.text[-1500:]

    to_provider = browser.get(button.group(1).replace("&amp;", "&"))
    assert to_provider.status == 302 and to_provider.location.startswith(provider.endpoint("authorize"))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(to_provider.location).query)
    assert query["client_id"] == [provider.client_id] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == [f"{site}/oidc/callback/"] and query["code_challenge_method"] == ["S256"]

    at_provider = WebClient(provider.issuer)  # the same browser, talking to the provider's site
    asked = at_provider.get(to_provider.location)
    assert asked.status == 302 and "/accounts/login/" in asked.location, asked
    form = at_provider.get(asked.location)
    signed_in = at_provider.post_form(asked.location, {
        "csrfmiddlewaretoken": form.csrf_token(), "username": provider.username, "password": provider.password,
        "next": urllib.parse.parse_qs(urllib.parse.urlsplit(asked.location).query)["next"][0]})
    assert signed_in.status == 302, signed_in
    back = at_provider.get(signed_in.location)
    assert back.status == 302 and back.location.startswith(f"{site}/oidc/callback/?code="), back

    forged = WebClient(site)
    forged.get(button.group(1).replace("&amp;", "&"))  # a session with its own state
    stolen = forged.get(back.location)  # another session cannot redeem this code: the state is not its own
    assert greeted(forged.get("/")) is None and stolen.status in (302, 400), stolen

    done = browser.get(back.location)
    assert done.status == 302 and done.location == "/jobs/new/", done
    assert greeted(browser.get("/")) == provider.username
    account = prod_stack.manage("shell", "-c", (
        "from django.contrib.auth.models import User; u = User.objects.get(username='ingrid'); "
        "print(u.email, u.first_name, u.is_staff, u.has_usable_password())"))
    assert account.strip().splitlines()[-1] == "ingrid@lab.example.org Ingrid False False"


@pytest.mark.browser
def test_chromium_signs_in_with_the_button_and_the_providers_form(oidc_site: OidcSite, browser) -> None:  # type: ignore[no-untyped-def]
    """The same flow as a person does it, in Chromium: cookies across the two sites (the session cookie must
    come back on the provider's redirect to /oidc/callback/), the provider's page, back where they started."""
    provider = oidc_site.provider
    context = browser.new_context(base_url=oidc_site.url)
    try:
        page = context.new_page()
        page.goto("/jobs/new/")
        page.wait_for_url("**/accounts/login/**")
        page.get_by_role("link", name=f"Sign in with {oidc_site.label}").click()
        page.wait_for_url(f"{provider.issuer}/accounts/login/**")
        page.fill("input[name=username]", provider.username)
        page.fill("input[name=password]", provider.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{oidc_site.url}/jobs/new/", timeout=20000)
        assert page.locator(".who").first.text_content(timeout=5000).strip() == provider.username
        page.screenshot(path=str(TEST_OUTPUT / "oidc-signed-in.png"))
    finally:
        context.close()

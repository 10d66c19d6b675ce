"""Single sign-on with OpenID Connect, end to end with real processes: ptychopy's production web (Daphne on
PostgreSQL and Redis) as the client of a real provider (django-oidc-provider in its own Django process and
database, tests/support/oidc.py), through the whole authorization-code flow with a real HTTP client: the login
page's button, the provider's login form, the code back to /oidc/callback/, the web process redeeming it at the
provider's token endpoint and checking the RS256 ID token against its JWKS. ptychopy is given only the issuer:
every endpoint comes from the provider's .well-known/openid-configuration. A forged callback gets nobody in.
Then the same in Chromium, as a person signs in. A discovery document that names another issuer is refused,
naming both; a provider that is down gets the user a 503 page naming it, the rest of the site works, and the next
sign-in tries discovery again."""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.net import free_port
from tests.support.oidc import OidcProvider
from tests.support.processes import TEST_OUTPUT, ManagedProcess, daphne
from tests.support.stack import ProductionStack, User
from tests.support.web import WebClient

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(240)]


def greeted(resp) -> str | None:  # type: ignore[no-untyped-def]
    if resp.status == 302:
        return None
    m = re.search(r'<span class="who">([^<]*)</span>', resp.text)
    assert resp.status == 200 and m, resp
    return m.group(1).strip()


def page_text(resp) -> str:  # type: ignore[no-untyped-def]
    """The page's words as a reader sees them: no tags, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", resp.text)).split())


@dataclass
class OidcSite:
    provider: OidcProvider
    url: str
    label: str = "Lab ID"


def oidc_web(name: str, port: int, prod_stack: ProductionStack, client_env: dict[str, str],
             label: str) -> ManagedProcess:
    """A production web process (not started) on ``port`` signing in with the provider ``client_env`` names."""
    return daphne(name, port, {**prod_stack.env, **client_env, "PTYCHOPY_OIDC_LABEL": label})


@pytest.fixture(scope="module")
def oidc_site(prod_stack: ProductionStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcSite]:
    """ptychopy's production web as the client of a real provider process, both on loopback."""
    port = free_port()
    site = OidcSite(OidcProvider(tmp_path_factory.mktemp("provider"),
                                 redirect_uri=f"http://127.0.0.1:{port}/oidc/callback/"), f"http://127.0.0.1:{port}")
    site.provider.start()
    web = oidc_web("oidc-daphne", port, prod_stack, site.provider.client_env(), site.label)
    try:
        web.start()
        yield site
    finally:
        web.stop()
        site.provider.stop()


def code_from_provider(provider: OidcProvider, authorize_url: str, site: str) -> str:
    """The provider's redirect back to ``site``'s /oidc/callback/ with a code, after its user signs in there (the
    browser talking to the provider's site)."""
    at_provider = WebClient(provider.site)
    asked = at_provider.get(authorize_url)
    assert asked.status == 302 and "/accounts/login/" in asked.location, asked
    form = at_provider.get(asked.location)
    signed_in = at_provider.post_form(asked.location, {
        "csrfmiddlewaretoken": form.csrf_token(), "username": provider.username, "password": provider.password,
        "next": urllib.parse.parse_qs(urllib.parse.urlsplit(asked.location).query)["next"][0]})
    assert signed_in.status == 302, signed_in
    back = at_provider.get(signed_in.location)
    assert back.status == 302 and back.location.startswith(f"{site}/oidc/callback/?code="), back
    return back.location


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

    back = code_from_provider(provider, to_provider.location, site)

    forged = WebClient(site)
    forged.get(button.group(1).replace("&amp;", "&"))  # a session with its own state
    stolen = forged.get(back)  # another session cannot redeem this code: the state is not its own
    assert greeted(forged.get("/")) is None and stolen.status in (302, 400), stolen

    done = browser.get(back)
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
        page.wait_for_url(f"{provider.site}/accounts/login/**")
        page.fill("input[name=username]", provider.username)
        page.fill("input[name=password]", provider.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{oidc_site.url}/jobs/new/", timeout=20000)
        assert page.locator(".who").first.text_content(timeout=5000).strip() == provider.username
        page.screenshot(path=str(TEST_OUTPUT / "oidc-signed-in.png"))
    finally:
        context.close()


def test_a_discovery_document_naming_another_issuer_is_refused_naming_both(oidc_site: OidcSite,
                                                                          prod_stack: ProductionStack) -> None:
    """Configured with the issuer plus a '/', the same document is fetched (the '/' is dropped before the
    .well-known path) but names the issuer without it: not equal, so nothing is taken from it."""
    provider, port = oidc_site.provider, free_port()
    wrong = provider.issuer + "/"
    web = oidc_web("oidc-wrong-issuer-daphne", port, prod_stack, provider.client_env(wrong), oidc_site.label)
    try:
        web.start()
        refused = WebClient(f"http://127.0.0.1:{port}").get("/oidc/authenticate/")
        text = page_text(refused)
        assert refused.status == 503 and f"Sign-in with {oidc_site.label} is unavailable" in text, refused
        assert f"names the issuer {provider.issuer!r}, not the configured OIDC_OP_ISSUER {wrong!r}" in text, text
    finally:
        web.stop()


def test_a_provider_that_is_down_gets_a_503_page_the_site_works_and_the_next_sign_in_tries_again(
        oidc_site: OidcSite, prod_stack: ProductionStack, alice: User) -> None:
    """The provider stops between its redirect back and the code's redemption (discovery done), then a web
    process that has not discovered it yet starts while it is down."""
    provider, port = oidc_site.provider, free_port()
    web = oidc_web("oidc-down-daphne", port, prod_stack, provider.client_env(), oidc_site.label)
    site = WebClient(f"http://127.0.0.1:{port}")
    assert provider.proc is not None
    try:
        browser = WebClient(oidc_site.url)
        back = code_from_provider(provider, browser.get("/oidc/authenticate/").location, oidc_site.url)
        provider.proc.stop()
        at_callback = browser.get(back)
        assert at_callback.status == 503, at_callback
        assert (f"({provider.issuer}) cannot be used right now: it cannot be reached at "
                f"{provider.endpoint('token')}.") in page_text(at_callback), page_text(at_callback)
        assert greeted(browser.get("/")) is None

        web.start()
        down = site.get("/oidc/authenticate/")
        text = page_text(down)
        assert down.status == 503 and f"The sign-in provider {oidc_site.label} ({provider.issuer})" in text, down
        assert "could not be read: it cannot be reached" in text and "log in with a password" in text, text
        login_page = site.get("/accounts/login/")
        assert login_page.status == 200 and f"Sign in with {oidc_site.label}" in login_page.text
        site.login(alice.username, alice.password)
        assert greeted(site.get("/")) == alice.username
        assert site.get("/livez").status == 200

        provider.proc.start(wait=60)
        back = WebClient(f"http://127.0.0.1:{port}").get("/oidc/authenticate/")
        assert back.status == 302 and back.location.startswith(provider.endpoint("authorize")), back
    finally:
        web.stop()
        provider.proc.start(wait=60)

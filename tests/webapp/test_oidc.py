"""OpenID Connect sign-in without a whole provider (the flow against a real one: tests/e2e/test_sso_oidc.py):
off by default (no /oidc/ URLs, no button), an incomplete configuration stops the settings naming what is
missing, accounts are matched and made by the username claim, never by e-mail; discovery (against a real HTTP
server on loopback serving a discovery document) takes the endpoints from the issuer's document once, lets a
configured endpoint win, refuses another issuer naming both, keeps no failure and gives up after OIDC_TIMEOUT; a
provider that is down gets the sign-in button a 503 page and leaves password logins alone."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from test_settings_env import embedded_env, load_settings

from tests.support.jsonhttp import JsonHandler
from tests.support.net import LOOPBACK, free_port
from webapp.accounts import oidc_discovery
from webapp.accounts.oidc_discovery import IssuerMismatch, ProviderUnavailable

ENDPOINTS = {"OIDC_OP_AUTHORIZATION_ENDPOINT": "https://id.example.org/auth",
             "OIDC_OP_TOKEN_ENDPOINT": "https://id.example.org/token",
             "OIDC_OP_USER_ENDPOINT": "https://id.example.org/userinfo",
             "OIDC_OP_JWKS_ENDPOINT": "https://id.example.org/certs"}


@pytest.fixture
def backend(settings):
    settings.PTYCHOPY_OIDC_USERNAME_CLAIM = "preferred_username"
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = "ptychopy", "s3cret"
    settings.OIDC_RP_SIGN_ALGO = "RS256"
    for name, url in ENDPOINTS.items():
        setattr(settings, name, url)
    from webapp.accounts.oidc import OidcBackend

    return OidcBackend()


@pytest.mark.django_db
def test_off_by_default_no_urls_and_no_button(tmp_path) -> None:
    code = ("import django; django.setup()\nfrom django.urls import NoReverseMatch, reverse\n"
            "from django.conf import settings\ntry:\n    reverse('oidc_authentication_init')\n"
            "    print('on')\nexcept NoReverseMatch:\n    print('off', settings.PTYCHOPY_OIDC, "
            "'mozilla_django_oidc' in settings.INSTALLED_APPS)")
    out = load_settings(embedded_env(tmp_path), code)
    assert out.stdout.strip().splitlines()[-1] == "off False False", out.stderr[-1500:]
    page = Client().get("/accounts/login/")
    assert page.status_code == 200 and b"oidc-login" not in page.content


def test_an_incomplete_configuration_names_what_is_missing(tmp_path) -> None:
    out = load_settings(embedded_env(tmp_path, OIDC_RP_CLIENT_ID="ptychopy", **{
        k: v for k, v in ENDPOINTS.items() if k != "OIDC_OP_JWKS_ENDPOINT"}))
    assert out.returncode == 1
    assert ("OIDC_RP_CLIENT_ID is set but OIDC_RP_CLIENT_SECRET, OIDC_OP_JWKS_ENDPOINT are not: set OIDC_OP_ISSUER "
            "(the endpoints then come from the provider's .well-known/openid-configuration) or each endpoint"
            ) in out.stderr, out.stderr[-1500:]
    out = load_settings(embedded_env(tmp_path, OIDC_RP_CLIENT_ID="ptychopy", OIDC_OP_ISSUER="id.example.org"))
    assert out.returncode == 1 and "OIDC_OP_ISSUER='id.example.org': expected the provider's issuer URL" in out.stderr
    urls = ("import django; django.setup(); from django.urls import reverse; "
            "print(reverse('oidc_authentication_init'), reverse('oidc_authentication_callback'))")
    for configured in (ENDPOINTS, {"OIDC_OP_ISSUER": "https://id.example.org/realms/lab"}):
        out = load_settings(embedded_env(tmp_path, OIDC_RP_CLIENT_ID="ptychopy", OIDC_RP_CLIENT_SECRET="s",
                                         **configured), urls)
        assert out.returncode == 0, out.stderr[-1500:]
        assert out.stdout.split()[-2:] == ["/oidc/authenticate/", "/oidc/callback/"], out.stderr


@pytest.mark.django_db
def test_accounts_are_matched_and_made_by_the_username_claim_not_the_email(backend) -> None:
    User.objects.create_user("mallory", "ingrid@lab.example.org")  # someone else with the same address
    claims = {"sub": "42", "preferred_username": "ingrid", "email": "ingrid@lab.example.org",
              "given_name": "Ingrid", "family_name": "Lund"}
    assert backend.verify_claims(claims)
    assert list(backend.filter_users_by_claims(claims)) == []
    ingrid = backend.create_user(claims)
    assert (ingrid.username, ingrid.email, ingrid.last_name) == ("ingrid", "ingrid@lab.example.org", "Lund")
    assert not ingrid.is_staff and not ingrid.has_usable_password()
    assert list(backend.filter_users_by_claims(claims)) == [ingrid]
    backend.update_user(ingrid, {**claims, "email": "ingrid.lund@lab.example.org"})
    assert User.objects.get(username="ingrid").email == "ingrid.lund@lab.example.org"


def test_claims_without_the_username_claim_are_refused(backend, caplog) -> None:
    assert not backend.verify_claims({"sub": "42", "email": "x@example.org"})
    assert "OIDC sign-in refused: the provider's claims have no 'preferred_username' (email, sub)" in caplog.text


@dataclass
class Answer:
    """What the test provider answers next: an HTTP status, a JSON body, after ``delay_s``."""

    status: int = 200
    body: object = None
    delay_s: float = 0.0


@dataclass
class DiscoveryServer:
    """A real HTTP server on loopback whose ``/realms/<realm>/.well-known/openid-configuration`` gives the queued
    answers (the last one again when the queue runs dry) and counts the requests. The realm is new for every
    test: the web process keeps what it discovered per issuer."""

    server: ThreadingHTTPServer
    answers: list[Answer] = field(default_factory=list)
    requests: int = 0
    realm: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def issuer(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}/realms/{self.realm}"

    def document(self, issuer: str | None = None) -> dict[str, str]:
        base = f"{self.issuer}/protocol/openid-connect"
        return {"issuer": self.issuer if issuer is None else issuer, "authorization_endpoint": f"{base}/auth",
                "token_endpoint": f"{base}/token", "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/certs"}


@pytest.fixture
def provider(settings) -> Iterator[DiscoveryServer]:
    """The discovery server, and the settings of a site configured with its issuer only."""

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.requests += 1
            answer = served.answers.pop(0) if len(served.answers) > 1 else served.answers[0]
            time.sleep(answer.delay_s)
            if self.path == f"/realms/{served.realm}/.well-known/openid-configuration":
                self.send_json(answer.status, answer.body)
            else:
                self.send_json(404, {"error": "not found"})

    served = DiscoveryServer(ThreadingHTTPServer((LOOPBACK, free_port()), Handler))
    served.answers.append(Answer(body=served.document()))
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    settings.OIDC_OP_ISSUER, settings.OIDC_TIMEOUT, settings.OIDC_VERIFY_SSL = served.issuer, 1.0, True
    settings.PTYCHOPY_OIDC_LABEL = "Lab ID"
    for name in ENDPOINTS:
        setattr(settings, name, "")
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


def test_discovery_takes_the_endpoints_from_the_issuers_document_once(provider) -> None:
    assert {name: oidc_discovery.endpoint(name) for name in ENDPOINTS} == {
        "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{provider.issuer}/protocol/openid-connect/auth",
        "OIDC_OP_TOKEN_ENDPOINT": f"{provider.issuer}/protocol/openid-connect/token",
        "OIDC_OP_USER_ENDPOINT": f"{provider.issuer}/protocol/openid-connect/userinfo",
        "OIDC_OP_JWKS_ENDPOINT": f"{provider.issuer}/protocol/openid-connect/certs"}
    assert provider.requests == 1  # four endpoints, two calls: one fetch


def test_a_configured_endpoint_wins_over_the_document(provider, settings) -> None:
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://id.example.org/token"
    assert oidc_discovery.endpoint("OIDC_OP_TOKEN_ENDPOINT") == "https://id.example.org/token"
    assert provider.requests == 0
    assert oidc_discovery.endpoint("OIDC_OP_USER_ENDPOINT").endswith("/protocol/openid-connect/userinfo")


def test_a_document_naming_another_issuer_is_refused_naming_both(provider, settings) -> None:
    provider.answers[:] = [Answer(body=provider.document(issuer="https://id.example.org/realms/lab"))]
    with pytest.raises(IssuerMismatch) as refused:
        oidc_discovery.endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT")
    assert (f"names the issuer 'https://id.example.org/realms/lab', not the configured OIDC_OP_ISSUER "
            f"{provider.issuer!r}") in str(refused.value)
    settings.OIDC_OP_ISSUER = provider.issuer + "/"  # the same document, fetched, but not the same issuer
    provider.answers[:] = [Answer(body=provider.document())]
    with pytest.raises(IssuerMismatch, match="not the configured OIDC_OP_ISSUER"):
        oidc_discovery.endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT")
    assert provider.requests == 2


def test_a_failed_discovery_is_not_kept_the_next_sign_in_fetches_again(provider) -> None:
    provider.answers.insert(0, Answer(status=500, body={"error": "starting"}))
    with pytest.raises(ProviderUnavailable, match="could not be read: it answered HTTP 500"):
        oidc_discovery.endpoint("OIDC_OP_TOKEN_ENDPOINT")
    assert oidc_discovery.endpoint("OIDC_OP_TOKEN_ENDPOINT").endswith("/token") and provider.requests == 2


def test_a_provider_that_does_not_answer_is_given_up_after_oidc_timeout(provider) -> None:
    provider.answers[:] = [Answer(body=provider.document(), delay_s=3.0)]
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="did not answer within 1 s"):
        oidc_discovery.endpoint("OIDC_OP_TOKEN_ENDPOINT")
    assert time.monotonic() - started < 2.5


@pytest.mark.django_db
def test_a_provider_that_is_down_gets_the_button_a_503_page_and_leaves_password_logins_alone(provider,
                                                                                           settings) -> None:
    from webapp.accounts.oidc_views import OidcLoginView

    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET, settings.OIDC_RP_SIGN_ALGO = "ptychopy", "s", "RS256"
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, "webapp.accounts.oidc.OidcBackend"]
    issuer = provider.issuer
    provider.server.shutdown()
    provider.server.server_close()  # nothing listens there now
    page = OidcLoginView.as_view()(RequestFactory().get("/oidc/authenticate/"))
    assert page.status_code == 503
    text = page.content.decode()
    assert "Sign-in with Lab ID is unavailable" in text and f"<code>{issuer}</code>" in text
    assert "it cannot be reached" in text
    User.objects.create_user("olga", password="olga-pw-12345")
    client = Client()
    assert client.post("/accounts/login/", {"username": "olga", "password": "olga-pw-12345"}).status_code == 302
    assert client.get("/jobs/new/").status_code == 200


@pytest.fixture(scope="module")
def signing_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public.decode()


def _id_token(key, **claims) -> str:
    import jwt

    now = int(time.time())
    body = {"iss": "https://id.example.org/realms/lab", "aud": "ptychopy", "sub": "42", "nonce": "n-1",
            "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256")


@pytest.mark.parametrize(("claims", "why"), [
    ({"aud": "another-app"}, "it was issued to 'another-app', not to this client ('ptychopy')"),
    ({"aud": ["ptychopy", "another-app"], "azp": "another-app"}, "azp 'another-app' is not 'ptychopy'"),
    ({"iss": "https://evil.example.org/realms/lab"}, "its issuer 'https://evil.example.org/realms/lab' is not"),
    ({"exp": int(time.time()) - 3600}, "Signature has expired"),
    ({"exp": None}, "it carries no expiry time (exp)"),
])
def test_an_id_token_for_another_client_issuer_or_time_is_refused_naming_why(backend, settings, signing_key, caplog,
                                                                             claims, why) -> None:
    from django.core.exceptions import SuspiciousOperation

    settings.OIDC_OP_ISSUER = "https://id.example.org/realms/lab"
    key, public_pem = signing_key
    backend.OIDC_RP_IDP_SIGN_KEY = public_pem
    with pytest.raises(SuspiciousOperation, match="OIDC ID token refused"):
        backend.verify_token(_id_token(key, **claims), nonce="n-1")
    assert why in caplog.text


def test_an_id_token_for_this_client_from_the_issuer_is_taken(backend, settings, signing_key) -> None:
    settings.OIDC_OP_ISSUER = "https://id.example.org/realms/lab"
    key, public_pem = signing_key
    backend.OIDC_RP_IDP_SIGN_KEY = public_pem
    assert backend.verify_token(_id_token(key), nonce="n-1")["sub"] == "42"
    both = _id_token(key, aud=["ptychopy", "account"], azp="ptychopy")
    assert backend.verify_token(both, nonce="n-1")["azp"] == "ptychopy"

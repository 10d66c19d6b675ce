"""OpenID Connect sign-in, the parts that need no provider (the whole flow against a real provider:
tests/e2e/test_sso_oidc.py): off by default (no /oidc/ URLs, no button), an incomplete configuration stops the
settings naming what is missing, and accounts are matched and made by the username claim, never by e-mail."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from test_settings_env import embedded_env, load_settings

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
    assert ("OIDC_RP_CLIENT_ID is set but OIDC_RP_CLIENT_SECRET, OIDC_OP_JWKS_ENDPOINT are not: copy them from "
            "the provider's .well-known/openid-configuration") in out.stderr, out.stderr[-1500:]
    out = load_settings(embedded_env(tmp_path, OIDC_RP_CLIENT_ID="ptychopy", OIDC_RP_CLIENT_SECRET="s", **ENDPOINTS),
                        "import django; django.setup(); from django.urls import reverse; "
                        "print(reverse('oidc_authentication_init'), reverse('oidc_authentication_callback'))")
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["/oidc/authenticate/", "/oidc/callback/"], out.stderr


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

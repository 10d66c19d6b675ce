"""Single sign-on with an OpenID Connect provider (Keycloak, Azure AD/Entra, Authentik, ...), through
mozilla-django-oidc's authorization-code flow: the login page's "Sign in with ..." button leads to the provider,
which sends the browser back to ``/oidc/callback/``; the web process exchanges the code for tokens at the
provider, checks the ID token's RS256 signature against the provider's keys (JWKS) and reads the user's claims.

Off unless ``OIDC_RP_CLIENT_ID`` is set (docs/deploy.md "Single sign-on"). The provider's endpoints come from
its discovery document when ``OIDC_OP_ISSUER`` is set (:mod:`webapp.accounts.oidc_discovery`), looked up at the
callback, not when the backend is made (every password login and every request makes one). Accounts are matched
by a username claim (``PTYCHOPY_OIDC_USERNAME_CLAIM``, default ``preferred_username`` as Keycloak sends it), not by
e-mail: an address that changes hands must not carry someone's jobs. A new name becomes an account without a password or
staff rights unless ``PTYCHOPY_OIDC_CREATE=0``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from .oidc_discovery import endpoint

log = logging.getLogger(__name__)


def username_of(claims: dict[str, Any]) -> str:
    """The account name the claims name ('' when the claim is missing or blank)."""
    return str(claims.get(settings.PTYCHOPY_OIDC_USERNAME_CLAIM) or "").strip()[:150]


#: clock difference allowed between the provider and this server when reading an ID token's exp and iat (s)
ID_TOKEN_LEEWAY_S = 60.0


def id_token_problem(payload: dict[str, Any], issuer: str, client_id: str, now_s: float,
                     leeway_s: float = ID_TOKEN_LEEWAY_S) -> str:
    """Why an ID token's claims must be refused ('' when they may be used), by OpenID Connect Core 3.1.3.7: its
    ``iss`` is the configured issuer (when one is configured: with hand-set endpoints there is none to compare),
    its ``aud`` holds this client's id (with several audiences, ``azp`` names this client), and it carries an
    ``exp`` not past (``now_s``: Unix seconds, ``leeway_s`` of clock difference allowed)."""
    iss = payload.get("iss")
    if issuer and iss != issuer:
        return f"its issuer {iss!r} is not the configured OIDC_OP_ISSUER {issuer!r}"
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    if client_id not in audiences:
        return f"it was issued to {aud!r}, not to this client ({client_id!r})"
    if len(audiences) > 1 and payload.get("azp") != client_id:
        return f"it names several audiences {audiences!r} and its azp {payload.get('azp')!r} is not {client_id!r}"
    exp = payload.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return "it carries no expiry time (exp)"
    if exp < now_s - leeway_s:
        return f"it expired {now_s - exp:.0f} s ago"
    return ""


class OidcBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, matching and creating accounts by the username claim."""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        """The user of the provider's code on the callback (the only caller that passes ``nonce``); None for
        every other sign-in (passwords), which never contacts the provider."""
        if request is None or "nonce" not in kwargs:
            return None
        self.OIDC_OP_TOKEN_ENDPOINT = endpoint("OIDC_OP_TOKEN_ENDPOINT")
        self.OIDC_OP_USER_ENDPOINT = endpoint("OIDC_OP_USER_ENDPOINT")
        self.OIDC_OP_JWKS_ENDPOINT = endpoint("OIDC_OP_JWKS_ENDPOINT")
        return super().authenticate(request, **kwargs)

    def verify_token(self, token: Any, **kwargs: Any) -> Any:
        """The ID token's claims, once its signature and nonce (mozilla-django-oidc) and its issuer, audience and
        expiry (:func:`id_token_problem`: the library checks none of these) are right; SuspiciousOperation (a 400
        and a ``django.security`` log line) otherwise, an expired or malformed token included."""
        try:
            payload = super().verify_token(token, **kwargs)
        except jwt.InvalidTokenError as exc:  # e.g. expired: PyJWT's own check, which the library lets through
            log.warning("OIDC sign-in refused: the ID token is not valid (%s: %s)", type(exc).__name__, exc)
            raise SuspiciousOperation(f"OIDC ID token refused: {exc}") from exc
        problem = id_token_problem(payload, getattr(settings, "OIDC_OP_ISSUER", ""), settings.OIDC_RP_CLIENT_ID,
                                   time.time())
        if problem:
            log.warning("OIDC sign-in refused: the ID token %s", problem)
            raise SuspiciousOperation(f"OIDC ID token refused: {problem}")
        return payload

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        if not username_of(claims):
            log.warning("OIDC sign-in refused: the provider's claims have no %r (%s)",
                        settings.PTYCHOPY_OIDC_USERNAME_CLAIM, ", ".join(sorted(claims)))
            return False
        return True

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return get_user_model().objects.filter(username=username_of(claims))

    def create_user(self, claims: dict[str, Any]) -> Any:
        user = get_user_model().objects.create_user(username_of(claims), email=claims.get("email") or "",
                                                    first_name=(claims.get("given_name") or "")[:150],
                                                    last_name=(claims.get("family_name") or "")[:150])
        user.set_unusable_password()
        user.save(update_fields=["password"])
        log.info("new account %r from the OIDC provider", user.get_username())
        return user

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        email = claims.get("email") or ""
        if email and email != user.email:
            user.email = email
            user.save(update_fields=["email"])
        return user


def login_options(request: HttpRequest) -> dict[str, Any]:
    """Template context: ``oidc_label`` (the provider's name on the login button) while OIDC is on."""
    return {"oidc_label": settings.PTYCHOPY_OIDC_LABEL if settings.PTYCHOPY_OIDC else ""}

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
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from .oidc_discovery import endpoint

log = logging.getLogger(__name__)


def username_of(claims: dict[str, Any]) -> str:
    """The account name the claims name ('' when the claim is missing or blank)."""
    return str(claims.get(settings.PTYCHOPY_OIDC_USERNAME_CLAIM) or "").strip()[:150]


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

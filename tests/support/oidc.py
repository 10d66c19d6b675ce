"""The test OpenID Connect provider (tests/support/oidc_provider/) as a real process on a loopback port."""

from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .net import LOOPBACK, free_port
from .processes import REPO, ManagedProcess, app_env

SETTINGS = "tests.support.oidc_provider.settings"

_SETUP = """
import sys
import django
django.setup()
from django.contrib.auth.models import User
from oidc_provider.models import Client, ResponseType
from django.core.management import call_command
call_command("creatersakey")
username, password, email, first, last, client_id, client_secret, redirect_uri = sys.argv[1:9]
User.objects.create_user(username, email, password, first_name=first, last_name=last)
code, _ = ResponseType.objects.get_or_create(value="code", defaults={"description": "code (Authorization Code Flow)"})
client = Client.objects.create(name="ptychopy", client_type="confidential", client_id=client_id,
                               client_secret=client_secret, jwt_alg="RS256", require_consent=False,
                               _redirect_uris=redirect_uri, _scope="openid email profile")
client.response_types.add(code)
print("provider ready")
"""


@dataclass
class OidcProvider:
    """One provider with one user and one confidential client whose only redirect URI is ``redirect_uri``."""

    folder: Path
    redirect_uri: str
    username: str = "ingrid"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    email: str = "ingrid@lab.example.org"
    client_id: str = "ptychopy-web"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    proc: ManagedProcess | None = None

    @property
    def site(self) -> str:
        """The provider's web site (its login form is ``/accounts/login/``)."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def issuer(self) -> str:
        """Its issuer: the ``iss`` of its ID tokens and the ``issuer`` of its discovery document, which it serves
        at ``<issuer>/.well-known/openid-configuration`` (django-oidc-provider's ``provider-info``)."""
        return f"{self.site}/openid"

    def endpoint(self, name: str) -> str:
        """``authorize``, ``token``, ``userinfo`` or ``jwks``."""
        return f"{self.issuer}/{name}"

    def client_env(self, issuer: str | None = None) -> dict[str, str]:
        """What ptychopy's web process needs to sign in with this provider: the client and the issuer alone
        (``issuer`` instead of its own one, to test a wrong one); the endpoints come from discovery."""
        return {"OIDC_RP_CLIENT_ID": self.client_id, "OIDC_RP_CLIENT_SECRET": self.client_secret,
                "OIDC_OP_ISSUER": self.issuer if issuer is None else issuer}

    def _env(self) -> dict[str, str]:
        return app_env({"DJANGO_SETTINGS_MODULE": SETTINGS, "OIDC_TEST_DB": str(self.folder / "provider.sqlite3"),
                        "OIDC_TEST_SECRET_KEY": secrets.token_urlsafe(40), "OIDC_TEST_SITE_URL": self.site})

    def start(self) -> OidcProvider:
        """Migrate its database, add the user, the signing key and the client, and serve on ``port``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = self._env()
        for argv in ([sys.executable, "-m", "django", "migrate", "-v", "0"],
                     [sys.executable, "-c", _SETUP, self.username, self.password, self.email, "Ingrid", "Lund",
                      self.client_id, self.client_secret, self.redirect_uri]):
            out = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"the test OIDC provider's set-up failed: {out.stderr[-2000:]}")
        self.proc = ManagedProcess("oidc-provider", [sys.executable, "-m", "django", "runserver", "--noreload",
                                                     f"{LOOPBACK}:{self.port}"], env, port=self.port,
                                   marker=f"runserver --noreload {LOOPBACK}:{self.port}")
        self.proc.start(wait=60)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

"""URL map: health probes, pages (webapp.jobs), the JSON API, login/logout and password reset, the admin."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from webapp import health, metrics
from webapp.accounts import tokens
from webapp.accounts.views import GatedPasswordResetView, ResetLinkView
from webapp.api.docs import api_docs

urlpatterns = [
    # probes (webapp.health, docs/deploy.md): no login; /healthz is the older name of /readyz
    path("livez", health.livez, name="livez"),
    path("readyz", health.readyz, name="readyz"),
    path("healthz", health.readyz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),  # Prometheus; loopback / PTYCHOPY_METRICS_* only
    # before django.contrib.auth.urls: the reset request is refused while the site cannot deliver mail
    path("accounts/password_reset/", GatedPasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("accounts/tokens/", tokens.tokens, name="tokens"),
    path("accounts/tokens/<int:token_id>/revoke/", tokens.revoke, name="token_revoke"),
    # after them (reset/done/ is theirs): a reset mail's link, its token after '#', never in a logged URL
    path("accounts/reset/<uidb64>/", ResetLinkView.as_view(), name="password_reset_link"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("webapp.api.urls")),
    path("api/docs/", api_docs, name="api_docs"),  # Swagger UI of /api/v1/openapi.json, from our static files
    path("files/", include("webapp.scans.urls")),  # HDF5 files in h5web (webapp.scans.h5grove_views)
    path("", include("webapp.jobs.urls")),
]
if settings.PTYCHOPY_OIDC:  # /oidc/authenticate/ (the login page's button) and /oidc/callback/ (webapp.accounts.oidc)
    urlpatterns.insert(-1, path("oidc/", include("mozilla_django_oidc.urls")))

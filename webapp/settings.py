"""Django settings, read from the environment only.

No environment at all gives the *embedded* mode: a SQLite file under ``$PTYCHOPY_HOME`` (default ``./var``),
the in-memory channel layer and a Dramatiq ``StubBroker`` whose worker thread runs inside the ASGI process.
``DATABASE_URL`` and ``REDIS_URL`` switch to production: PostgreSQL, Redis for Dramatiq and channels_redis.
``docs/deploy.md`` lists every variable; ``webapp.envconfig.Env`` reads each with its type.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url

from webapp import logs, site_security
from webapp.envconfig import Env

# Every environment value is read here, through env (webapp.envconfig: typed, and a bad value stops the start with
# "NAME='value' is not an integer"); docs/deploy.md lists them all (tests/docker/test_compose.py checks it).
env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent
# Templates and static files; set PTYCHOPY_FRONTEND_DIR when webapp runs from an installed wheel.
FRONTEND_DIR = env.path("PTYCHOPY_FRONTEND_DIR", BASE_DIR / "frontend")

PTYCHOPY_HOME = env.path("PTYCHOPY_HOME", BASE_DIR / "var")
DATABASE_URL = env.str("DATABASE_URL")
REDIS_URL = env.str("REDIS_URL")
EMBEDDED = not DATABASE_URL and not REDIS_URL
# The address `ptychopy serve --host` listens on (set by webapp.cli before Django starts; "" otherwise).
PTYCHOPY_SERVE_HOST = env.str("PTYCHOPY_SERVE_HOST")

# DEBUG is off unless asked for, and honoured only in the embedded mode on a loopback address: anywhere else
# the settings refuse to load (webapp.site_security.check_debug).
DEBUG = env.bool("DEBUG", False)
site_security.check_debug(DEBUG, embedded=EMBEDDED, serve_host=PTYCHOPY_SERVE_HOST)
SECRET_KEY = env.str("SECRET_KEY")
if not SECRET_KEY:
    if not EMBEDDED:
        raise site_security.SiteConfigError(
            "SECRET_KEY must be set outside the embedded mode (DATABASE_URL or REDIS_URL is set): the same long "
            "random value on every host, e.g. python -c \"import secrets; print(secrets.token_urlsafe(50))\"")
    # random per install, kept in the data folder: sessions survive restarts, and no key ships with the code
    SECRET_KEY = site_security.embedded_secret_key(PTYCHOPY_HOME)
# Older keys still accepted for signed values (sessions, reset links) while rotating SECRET_KEY.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS") or (
    site_security.serve_allowed_hosts(PTYCHOPY_SERVE_HOST) if EMBEDDED else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "axes",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_dramatiq",
    "webapp.jobs",
    "webapp.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.api.middleware.ApiJsonErrors",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # last: turns a login refused for a locked (user, address) pair into the 429 page
    "axes.middleware.AxesMiddleware",
]
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                  "webapp.logs.RequestLogContext")  # log lines carry the user and the job (webapp.logs)

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [FRONTEND_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.accounts.oidc.login_options",
            ],
        },
    },
]

# -- database ------------------------------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("PTYCHOPY_DB_POOL", False):
        # psycopg's pool (Django >= 5.1), opt-in for the web (Daphne) process: under ASGI every request runs on a
        # worker thread; reusing pooled connections instead of opening one per request cuts websocket connects
        # with 20 viewers from ~500 to ~120 ms p95 (benchmarks/latency). Not for workers or the bridge: their
        # long-lived threads hold a connection each, which exhausts a small pool.
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1, "max_size": env.int("PTYCHOPY_DB_POOL_SIZE", 8, minimum=1), "timeout": 30}
        # the pool tests a connection before handing it out, so after a database restart no request gets one of
        # its dead connections (an HTTP 500)
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    PTYCHOPY_HOME.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(PTYCHOPY_HOME / "ptychopy.sqlite3"),
            "CONN_MAX_AGE": 0,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": str(PTYCHOPY_HOME / f"test-ptychopy-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- channels and dramatiq -------------------------------------------------------------------------------------
if REDIS_URL:
    # channels_redis waits for a viewer's next frame with a 5 s blocking read (BZPOPMIN); redis-py's default
    # socket_timeout is 5 s too, so an idle viewer's read timed out and Daphne closed the socket with 1011 every
    # ~5 s. The read timeout here outlasts the blocking read; keepalive and the health check still notice a
    # Redis that went away (tests/e2e/test_faults.py: an idle viewer stays connected, nothing logged).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5,
                           "socket_keepalive": True, "health_check_interval": 15}],
                "capacity": 200, "expiry": 30,
            },
        }
    }
    _BROKER = {
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        "OPTIONS": {"url": REDIS_URL, "heartbeat_timeout": 5000, "maintenance_chance": 1_000_000},
    }
    # one cache for every web process: a websocket ticket opens one socket on any of them (webapp.accounts.tickets)
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": "ptychopy"}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 200}}}
    _BROKER = {"BROKER": "dramatiq.brokers.stub.StubBroker", "OPTIONS": {}}

DRAMATIQ_BROKER = {
    **_BROKER,
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "webapp.jobs.shutdown_middleware.StreamingShutdownMiddleware",  # before the heartbeat row goes
        "webapp.workers.heartbeat.HeartbeatMiddleware",
        "webapp.jobs.reconciler_middleware.ReconcilerMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
# The embedded worker thread starts with the ASGI application (see webapp.jobs.embedded); tests switch it off.
PTYCHOPY_EMBEDDED_WORKER = env.bool("PTYCHOPY_EMBEDDED_WORKER", EMBEDDED)

# -- ptychopy ----------------------------------------------------------------------------------------------------
PTYCHOPY_RESULTS_DIR = env.path("PTYCHOPY_RESULTS_DIR", PTYCHOPY_HOME / "results")
PTYCHOPY_DATA_ROOTS = [Path(p).expanduser()
                       for p in env.list("PTYCHOPY_DATA_ROOTS", str(PTYCHOPY_HOME / "data"), sep=":")]
# Files uploaded with the job form land here; it counts as one more data root.
PTYCHOPY_UPLOADS_DIR = env.path("PTYCHOPY_UPLOADS_DIR", PTYCHOPY_HOME / "uploads")
PTYCHOPY_MAX_UPLOAD_BYTES = env.int("PTYCHOPY_MAX_UPLOAD_BYTES", 512 * 2**20, minimum=0)
PTYCHOPY_FRAME_RATE_HZ = env.float("PTYCHOPY_FRAME_RATE_HZ", 5.0, minimum=0.0)
# The EPICS bridges' frame buffers (HOST:PORT, their [stream] buffer_address) a submitted pva:// source may name
# in buffer_at=: a worker connects there, so any other address is refused at submit (docs/streaming.md)
PTYCHOPY_PVA_BUFFERS = env.list("PTYCHOPY_PVA_BUFFERS")
PTYCHOPY_HEARTBEAT_S = env.float("PTYCHOPY_HEARTBEAT_S", 2.0, minimum=0.0)
PTYCHOPY_HEARTBEAT_STALE_S = env.float("PTYCHOPY_HEARTBEAT_STALE_S", 15.0, minimum=0.0)
# A GPU worker compiles its kernels and plans its FFTs for these pattern sizes when it starts (empty: it does not)
PTYCHOPY_GPU_WARMUP_SIZES = env.int_list("PTYCHOPY_GPU_WARMUP_SIZES", "256")
# Failures and recovery (docs/deploy.md): how long a worker waits for an unreachable database before it gives a
# message back to the broker's retries; how often the reconciler looks; how long a queued job may lack a message
# before it gets a new one; after how many workers died under one job it is failed instead of re-queued.
PTYCHOPY_DB_OUTAGE_S = env.float("PTYCHOPY_DB_OUTAGE_S", 600.0, minimum=0.0)
PTYCHOPY_RECONCILE_S = env.float("PTYCHOPY_RECONCILE_S", 1.0, minimum=0.0)
PTYCHOPY_REQUEUE_AFTER_S = env.float("PTYCHOPY_REQUEUE_AFTER_S", 3.0, minimum=0.0)
PTYCHOPY_MAX_WORKER_LOSSES = env.int("PTYCHOPY_MAX_WORKER_LOSSES", 2, minimum=1)
# production: the web (Daphne) process runs a reconciler too, so a job whose workers all died shows the truth
PTYCHOPY_WEB_RECONCILER = env.bool("PTYCHOPY_WEB_RECONCILER", True)
# The most host memory one job may plan to use (GiB; 0 = only what the worker has free): checked at submit and on
# the worker before any data are loaded (webapp.jobs.memory).
PTYCHOPY_JOB_MEMORY_GIB = env.float("PTYCHOPY_JOB_MEMORY_GIB", 0.0, minimum=0.0)

# -- auth, sessions, security ------------------------------------------------------------------------------------
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Production is served over https through a TLS proxy that sets X-Forwarded-Proto: cookies are Secure, plain http
# is redirected, HSTS is sent. Each is an environment switch (docs/deploy.md lists the secure defaults);
# PTYCHOPY_INSECURE_COOKIES=1 (tests on plain http) turns the https-only defaults off. The embedded mode serves
# plain http, so its cookies cannot be Secure.
_SECURE_COOKIES = not EMBEDDED and not env.bool("PTYCHOPY_INSECURE_COOKIES", False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", _SECURE_COOKIES)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", _SECURE_COOKIES)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = env.str("SECURE_REFERRER_POLICY", "same-origin")
if not EMBEDDED:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", _SECURE_COOKIES)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31_536_000 if _SECURE_COOKIES else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", True)

# -- login throttling (django-axes; webapp.accounts.throttle, docs/deploy.md) ------------------------------------
AUTHENTICATION_BACKENDS = [
    "webapp.accounts.throttle.LoginThrottleBackend",  # first: a locked pair is refused before any hashing
    "django.contrib.auth.backends.ModelBackend",
    # single sign-on by the reverse proxy's header (webapp.accounts.remote_user): acts only on a name that
    # ProxyRemoteUserMiddleware took from a trusted proxy, so it does nothing while the header is off
    "webapp.accounts.remote_user.ProxyRemoteUserBackend",
    # the login form's password checked by the LDAP directory (webapp.accounts.ldap_login); nothing without its URL
    "webapp.accounts.ldap_login.LdapBackend",
]
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env.int("PTYCHOPY_LOGIN_FAILURES", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env.float("PTYCHOPY_LOGIN_COOLOFF_S", 900.0, minimum=0.0))
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a refused try writes nothing and moves no deadline
AXES_CLIENT_IP_CALLABLE = "webapp.accounts.client_ip.client_ip"
AXES_LOCKOUT_CALLABLE = "webapp.accounts.throttle.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
AXES_ENABLE_ADMIN = True
# Reverse proxies whose X-Forwarded-For is believed (addresses or networks); see webapp.accounts.client_ip.
PTYCHOPY_TRUSTED_PROXIES = env.list("PTYCHOPY_TRUSTED_PROXIES")
site_security.parse_networks(PTYCHOPY_TRUSTED_PROXIES)  # a typo stops the start, naming the entry

# -- single sign-on by the reverse proxy (webapp.accounts.remote_user, docs/deploy.md "Single sign-on") -----------
# The header the proxy names the authenticated user in (e.g. X-Remote-User); empty: off. Believed only from
# PTYCHOPY_TRUSTED_PROXIES. Unknown names become new accounts unless PTYCHOPY_REMOTE_USER_CREATE=0.
PTYCHOPY_REMOTE_USER_HEADER = env.str("PTYCHOPY_REMOTE_USER_HEADER")
PTYCHOPY_REMOTE_USER_CREATE = env.bool("PTYCHOPY_REMOTE_USER_CREATE", True)
if PTYCHOPY_REMOTE_USER_HEADER:
    if not re.fullmatch(r"[A-Za-z0-9-]+", PTYCHOPY_REMOTE_USER_HEADER):
        raise site_security.SiteConfigError(
            f"PTYCHOPY_REMOTE_USER_HEADER={PTYCHOPY_REMOTE_USER_HEADER!r}: a header name of letters, digits and "
            "dashes, e.g. X-Remote-User (underscores are dropped by most proxies)")
    if not PTYCHOPY_TRUSTED_PROXIES:
        raise site_security.SiteConfigError(
            "PTYCHOPY_REMOTE_USER_HEADER is set but PTYCHOPY_TRUSTED_PROXIES is empty: name the proxy that sets "
            f"{PTYCHOPY_REMOTE_USER_HEADER}, or anyone reaching the web port could send it")
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                  "webapp.accounts.remote_user.ProxyRemoteUserMiddleware")  # inert while the header is off

# -- the login form against an LDAP directory (webapp.accounts.ldap_login, docs/deploy.md "Single sign-on") ------
PTYCHOPY_LDAP_URL = env.str("PTYCHOPY_LDAP_URL")  # ldaps://ldap.example.org or ldap://...; empty: off
PTYCHOPY_LDAP_USER_DN = env.str("PTYCHOPY_LDAP_USER_DN")  # uid={username},ou=people,dc=example,dc=org
PTYCHOPY_LDAP_START_TLS = env.bool("PTYCHOPY_LDAP_START_TLS", False)
PTYCHOPY_LDAP_CREATE = env.bool("PTYCHOPY_LDAP_CREATE", True)
PTYCHOPY_LDAP_TIMEOUT_S = env.float("PTYCHOPY_LDAP_TIMEOUT_S", 5.0, minimum=0.1)
if PTYCHOPY_LDAP_URL:
    if not re.match(r"ldaps?://[^/\s]+/?$", PTYCHOPY_LDAP_URL):
        raise site_security.SiteConfigError(
            f"PTYCHOPY_LDAP_URL={PTYCHOPY_LDAP_URL!r}: expected ldaps://host[:port] or ldap://host[:port]")
    if "{username}" not in PTYCHOPY_LDAP_USER_DN:
        raise site_security.SiteConfigError(
            f"PTYCHOPY_LDAP_USER_DN={PTYCHOPY_LDAP_USER_DN!r} has no {{username}}: e.g. "
            "uid={username},ou=people,dc=example,dc=org (or {username}@example.org for Active Directory)")

# -- single sign-on with an OpenID Connect provider (webapp.accounts.oidc, docs/deploy.md "Single sign-on") -------
# On when OIDC_RP_CLIENT_ID is set: mozilla-django-oidc's authorization-code flow, RS256 ID tokens checked against
# the provider's JWKS. The OIDC_* names are mozilla-django-oidc's own settings, except OIDC_OP_ISSUER: the endpoints
# then come from the issuer's .well-known/openid-configuration (webapp.accounts.oidc_discovery) unless set here.
OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID")
PTYCHOPY_OIDC = bool(OIDC_RP_CLIENT_ID)
PTYCHOPY_OIDC_LABEL = env.str("PTYCHOPY_OIDC_LABEL", "single sign-on")
PTYCHOPY_OIDC_USERNAME_CLAIM = env.str("PTYCHOPY_OIDC_USERNAME_CLAIM", "preferred_username")
if PTYCHOPY_OIDC:
    OIDC_RP_CLIENT_SECRET = env.str("OIDC_RP_CLIENT_SECRET")
    OIDC_OP_ISSUER = env.str("OIDC_OP_ISSUER")
    OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT")
    OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT")
    OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT")
    if OIDC_OP_ISSUER and not re.match(r"https?://[^/\s]+(/\S*)?$", OIDC_OP_ISSUER):
        raise site_security.SiteConfigError(
            f"OIDC_OP_ISSUER={OIDC_OP_ISSUER!r}: expected the provider's issuer URL, e.g. "
            "https://id.example.org/realms/lab (the 'issuer' of its .well-known/openid-configuration)")
    _needed = ["OIDC_RP_CLIENT_SECRET"] + ([] if OIDC_OP_ISSUER else [
        "OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_USER_ENDPOINT", "OIDC_OP_JWKS_ENDPOINT"])
    _missing = [name for name in _needed if not globals()[name]]
    if _missing:
        raise site_security.SiteConfigError(
            f"OIDC_RP_CLIENT_ID is set but {', '.join(_missing)} {'is' if len(_missing) == 1 else 'are'} not"
            + ("" if OIDC_OP_ISSUER else ": set OIDC_OP_ISSUER (the endpoints then come from the provider's "
               ".well-known/openid-configuration) or each endpoint") + " (docs/deploy.md \"Single sign-on\")")
    OIDC_RP_SIGN_ALGO = env.str("OIDC_RP_SIGN_ALGO", "RS256")
    OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", "openid email profile")
    OIDC_VERIFY_SSL = env.bool("OIDC_VERIFY_SSL", True)
    OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", 10.0, minimum=1.0)
    OIDC_CREATE_USER = env.bool("PTYCHOPY_OIDC_CREATE", True)
    OIDC_USE_PKCE = True
    OIDC_AUTHENTICATE_CLASS = "webapp.accounts.oidc_views.OidcLoginView"
    OIDC_CALLBACK_CLASS = "webapp.accounts.oidc_views.OidcCallbackView"
    INSTALLED_APPS.append("mozilla_django_oidc")
    AUTHENTICATION_BACKENDS.append("webapp.accounts.oidc.OidcBackend")

# -- mail and password reset (webapp.accounts.mail) ----------------------------------------------------------------
# EMAIL_URL (e.g. smtp+tls://user:password@mail.example.org:587) gives the server in one value; each separate
# EMAIL_* variable that is set overrides its part (e.g. the password from a secret store).
_MAIL = env.email_url("EMAIL_URL")
EMAIL_HOST = env.str("EMAIL_HOST", _MAIL.get("EMAIL_HOST") or "")
EMAIL_PORT = env.int("EMAIL_PORT", _MAIL.get("EMAIL_PORT") or 25, minimum=1)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", _MAIL.get("EMAIL_HOST_USER") or "")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", _MAIL.get("EMAIL_HOST_PASSWORD") or "")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", bool(_MAIL.get("EMAIL_USE_TLS")))
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", bool(_MAIL.get("EMAIL_USE_SSL")))
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise site_security.SiteConfigError(
        "EMAIL_USE_TLS and EMAIL_USE_SSL are both on: choose one (TLS: STARTTLS, usually port 587; SSL: port 465)")
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", 10.0, minimum=0.0)
# No mail server: mails are dropped with a log line (never printed: a reset mail carries a working link).
# EMAIL_URL may also name a backend without a server (consolemail://, filemail:///folder, memorymail://).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else (
    _MAIL.get("EMAIL_BACKEND") or "webapp.accounts.mail.SuppressedEmailBackend"))
if "EMAIL_FILE_PATH" in _MAIL:  # filemail:///path (a folder of .log files, for a test site)
    EMAIL_FILE_PATH = _MAIL["EMAIL_FILE_PATH"]
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "ptychopy@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
PTYCHOPY_PASSWORD_RESET = env.bool("PTYCHOPY_PASSWORD_RESET", True)
PASSWORD_RESET_TIMEOUT = env.int("PTYCHOPY_PASSWORD_RESET_TIMEOUT_S", 3600, minimum=1)
PTYCHOPY_SITE_URL = env.str("PTYCHOPY_SITE_URL", "http://127.0.0.1:8000")

# -- static files --------------------------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = env.path("STATIC_ROOT", PTYCHOPY_HOME / "static")
if EMBEDDED:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # collectstatic is optional here: WhiteNoise uses the finders
STATICFILES_DIRS = [FRONTEND_DIR / "static"]
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # hashed names and gzip copies once collectstatic ran; plain names before (webapp.static_storage)
    "staticfiles": {"BACKEND": "webapp.static_storage.HashedWhenCollected"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# -- operations: logs (webapp.logs, docs/deploy.md "Logs") ---------------------------------------------------------
# One handler, on the root logger: every line once, in every process. PTYCHOPY_LOG_FORMAT=json: one JSON object
# per line with job_id, scan and user where known.
try:
    LOGGING = logs.logging_config(env.str("PTYCHOPY_LOG_FORMAT", "plain").lower(),
                                  env.str("PTYCHOPY_LOG_LEVEL", "INFO"))
except ValueError as exc:
    raise site_security.SiteConfigError(str(exc)) from None

# -- operations: health probes (webapp.health, docs/deploy.md "Health, metrics and logs") ------------------------
# /readyz: which checks decide readiness (503 when one fails); the others are reported as "degraded".
PTYCHOPY_READYZ_REQUIRE = env.list("PTYCHOPY_READYZ_REQUIRE", "database,broker")
_unknown_checks = sorted(set(PTYCHOPY_READYZ_REQUIRE) - {"database", "broker", "workers", "bridges"})
if _unknown_checks:
    raise site_security.SiteConfigError(
        f"PTYCHOPY_READYZ_REQUIRE: unknown check(s) {', '.join(_unknown_checks)}; "
        "choose from database, broker, workers, bridges")
# the most one /readyz check may take (seconds); each runs on its own thread, all in parallel
PTYCHOPY_READYZ_TIMEOUT_S = env.float("PTYCHOPY_READYZ_TIMEOUT_S", 0.8, minimum=0.0)

# -- operations: metrics (webapp.metrics, docs/deploy.md "Metrics") -------------------------------------------------
# /metrics is answered to client addresses in PTYCHOPY_METRICS_ALLOW (addresses or networks; default loopback)
# and to "Authorization: Bearer <PTYCHOPY_METRICS_TOKEN>" (unset: no token works).
PTYCHOPY_METRICS_ALLOW = env.list("PTYCHOPY_METRICS_ALLOW", "127.0.0.1,::1")
site_security.parse_networks(PTYCHOPY_METRICS_ALLOW, where="PTYCHOPY_METRICS_ALLOW")
PTYCHOPY_METRICS_TOKEN = env.str("PTYCHOPY_METRICS_TOKEN")
MIDDLEWARE.insert(0, "webapp.metrics.RequestMetrics")  # first: it times everything below it
# Dramatiq's Prometheus middleware in the worker processes: each worker host serves dramatiq_* (and nothing
# else) on this port from its own small HTTP server (empty: off). dramatiq_prom_host / dramatiq_prom_db are
# Dramatiq's own variables (default 0.0.0.0 and $TMPDIR/dramatiq-prometheus).
PTYCHOPY_WORKER_METRICS_PORT = env.int("PTYCHOPY_WORKER_METRICS_PORT", 0, minimum=0)  # 0: off
if PTYCHOPY_WORKER_METRICS_PORT and REDIS_URL:
    os.environ["dramatiq_prom_port"] = str(PTYCHOPY_WORKER_METRICS_PORT)  # noqa: SIM112 (Dramatiq reads it on import)
    DRAMATIQ_BROKER["MIDDLEWARE"] = [*DRAMATIQ_BROKER["MIDDLEWARE"], "dramatiq.middleware.prometheus.Prometheus"]

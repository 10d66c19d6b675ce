# ptychopy web image: Daphne serving webapp.asgi:application (HTTP + websockets).
# The same image runs the one-shot `migrate` service and the EPICS bridge (`python -m epics_bridge`).
# Build from the repository root:  docker build -f docker/web.Dockerfile -t ptychopy-web .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=webapp.settings \
    PTYCHOPY_HOME=/var/lib/ptychopy \
    PTYCHOPY_RESULTS_DIR=/var/lib/ptychopy/results \
    STATIC_ROOT=/app/static \
    PTYCHOPY_FRONTEND_DIR=/app/frontend

WORKDIR /app

# Dependencies first, from the lock (every package pinned, hashes checked; requirements/lock.sh writes it from
# pyproject.toml): the layer is cached while only the source changes. Then the source, without resolving again.
COPY requirements/web.lock ./requirements/web.lock
RUN pip install --require-hashes --no-deps -r requirements/web.lock
COPY pyproject.toml README.md ./
COPY reconstruction ./reconstruction
COPY ptychopy ./ptychopy
COPY webapp ./webapp
COPY epics_bridge ./epics_bridge
COPY frontend ./frontend
COPY manage.py ./
COPY docker/healthcheck.py ./docker/healthcheck.py
RUN pip install --no-deps . && pip check
# pyepics starts a Channel Access repeater named caRepeater when none runs; its wheel ships none, so point
# the name at caproto's (without a repeater, reconnects after an IOC restart take ~35 s).
RUN printf '#!/bin/sh\nexec caproto-repeater "$@"\n' > /usr/local/bin/caRepeater \
    && chmod 755 /usr/local/bin/caRepeater

# Static files are collected at build time (whitenoise serves them). The step signs nothing; a throw-away key keeps
# the settings from writing an embedded install's secret_key file into the image.
RUN SECRET_KEY=collectstatic-only-signs-nothing python manage.py collectstatic --noinput -v 0

RUN useradd --system --uid 10001 --home-dir /var/lib/ptychopy --create-home ptychopy \
    && mkdir -p /var/lib/ptychopy/results /var/lib/ptychopy/uploads /data /var/lib/ptychopy-bridge \
    && chown -R ptychopy:ptychopy /var/lib/ptychopy /var/lib/ptychopy-bridge
USER ptychopy

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "docker/healthcheck.py", "web"]

# No --proxy-headers: Daphne would take the client from the client-written left end of X-Forwarded-For. The app
# reads that header itself, from the proxies named in PTYCHOPY_TRUSTED_PROXIES only (docs/deploy.md).
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "webapp.asgi:application"]

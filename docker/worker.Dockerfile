# ptychopy GPU worker image: one `python -m webapp.worker` (Dramatiq, 1 process, 1 thread, prefetch 1) per GPU.
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t ptychopy-worker .
# CUDA 13 runtime base; CuPy's cupy-cuda13x wheel uses its libraries. Pick the tag your driver supports.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=webapp.settings \
    PTYCHOPY_HOME=/var/lib/ptychopy \
    PTYCHOPY_RESULTS_DIR=/var/lib/ptychopy/results \
    PTYCHOPY_FRONTEND_DIR=/app/frontend \
    dramatiq_queue_prefetch=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
# Dependencies from the lock (pinned, hashes checked; requirements/lock.sh, for this image's Python 3.12), then the
# source without resolving again.
COPY requirements/worker.lock ./requirements/worker.lock
RUN pip install --require-hashes --no-deps -r requirements/worker.lock
COPY pyproject.toml README.md ./
COPY reconstruction ./reconstruction
COPY ptychopy ./ptychopy
COPY webapp ./webapp
COPY epics_bridge ./epics_bridge
COPY frontend ./frontend
COPY manage.py ./
COPY docker/healthcheck.py ./docker/healthcheck.py
RUN pip install --no-deps . && pip check

RUN useradd --system --uid 10001 --home-dir /var/lib/ptychopy --create-home ptychopy \
    && mkdir -p /var/lib/ptychopy/results /var/lib/ptychopy/uploads /data \
    && chown -R ptychopy:ptychopy /var/lib/ptychopy
USER ptychopy

# Healthy while the worker process runs (the dashboard shows its database heartbeat as well).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "docker/healthcheck.py", "worker"]

# SIGTERM stops gracefully: the running job finishes (or is re-queued after the grace period).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "webapp.worker"]

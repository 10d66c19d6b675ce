#!/usr/bin/env bash
# Writes the lock files the Docker images install from (docker/web.Dockerfile, docker/worker.Dockerfile):
# every package pinned to one version with its hashes, resolved from pyproject.toml for the image's Python and
# platform. Run after changing a dependency in pyproject.toml; tests/docker/test_lock.py fails until you do.
#   requirements/lock.sh            # both locks
#   requirements/lock.sh --upgrade  # newest versions the bounds allow (otherwise the pins already here are kept)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv: run ./dev lint first" >&2; exit 1; }
[ -x .venv/bin/uv ] || "$PY" -m pip install -q -e ".[lock]"
compile() {  # output, python version, extras...
    local out=$1 py=$2
    shift 2
    local extras=()
    for e in "$@"; do extras+=(--extra "$e"); done
    .venv/bin/uv pip compile pyproject.toml "${extras[@]}" --python-version "$py" \
        --python-platform x86_64-manylinux_2_28 --generate-hashes --no-emit-index-url \
        --custom-compile-command "requirements/lock.sh" -o "$out" -q "${UPGRADE[@]}"
}
UPGRADE=()
[ "${1:-}" = "--upgrade" ] && UPGRADE=(--upgrade)
compile requirements/web.lock 3.11 web epics      # python:3.11-slim
compile requirements/worker.lock 3.12 web gpu     # nvidia/cuda ubuntu24.04: python3 is 3.12
echo "wrote requirements/web.lock ($(grep -c '==' requirements/web.lock) pins)," \
     "requirements/worker.lock ($(grep -c '==' requirements/worker.lock) pins)"

"""Container health checks for the ptychopy images (standard library only).

    python docker/healthcheck.py web      GET /readyz from inside the web container (database and broker)
    python docker/healthcheck.py worker   a worker process of this container wrote its heartbeat lately

The bridge's container checks its own heartbeat: ``python -m epics_bridge health --config FILE``.

The web check sends the first ALLOWED_HOSTS name as Host (a facility's ALLOWED_HOSTS rarely lists 127.0.0.1)
and ``X-Forwarded-Proto: https`` (so an opt-in SECURE_SSL_REDIRECT does not answer with a redirect).
PTYCHOPY_HEALTHCHECK_URL overrides the address (default http://127.0.0.1:8000/readyz).

The worker check reads no database: each worker process touches ``$TMPDIR/ptychopy-heartbeats/<pid>`` after every
heartbeat row it writes (``webapp.workers.heartbeat.beat_file``); the container is healthy while one such file of a
live process is younger than PTYCHOPY_HEARTBEAT_STALE_S (default 15 s). A worker that cannot reach the database
writes no heartbeat, so it turns unhealthy too.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import urllib.error
import urllib.request


def host_header() -> str:
    for name in os.environ.get("ALLOWED_HOSTS", "").split(","):
        name = name.strip().lstrip(".")
        if name and name != "*":
            return name
    return "localhost"


def check_web() -> int:
    url = os.environ.get("PTYCHOPY_HEALTHCHECK_URL", "http://127.0.0.1:8000/readyz")
    req = urllib.request.Request(url, headers={"Host": host_header(), "X-Forwarded-Proto": "https"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=4) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def check_worker() -> int:
    folder = os.path.join(tempfile.gettempdir(), "ptychopy-heartbeats")
    stale_s = float(os.environ.get("PTYCHOPY_HEARTBEAT_STALE_S") or 15)
    ages = []
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    for name in names:
        if not name.isdigit() or not os.path.exists(f"/proc/{name}"):
            continue
        try:
            ages.append(time.time() - os.stat(os.path.join(folder, name)).st_mtime)
        except OSError:
            continue
    if any(age < stale_s for age in ages):
        return 0
    newest = f"; newest {min(ages):.0f} s old" if ages else ""
    print(f"unhealthy: no worker heartbeat in {folder} younger than {stale_s:.0f} s{newest}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    kind = argv[1] if len(argv) > 1 else "web"
    if kind == "web":
        return check_web()
    if kind == "worker":
        return check_worker()
    print(f"usage: {argv[0]} web|worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Container health checks for the ptychopy images (standard library only).

    python docker/healthcheck.py web      GET /healthz from inside the web container
    python docker/healthcheck.py worker   a `webapp.worker` process is running in this container

The web check sends the first ALLOWED_HOSTS name as Host (a facility's ALLOWED_HOSTS rarely lists 127.0.0.1)
and ``X-Forwarded-Proto: https`` (so an opt-in SECURE_SSL_REDIRECT does not answer with a redirect).
PTYCHOPY_HEALTHCHECK_URL overrides the address (default http://127.0.0.1:8000/healthz).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def host_header() -> str:
    for name in os.environ.get("ALLOWED_HOSTS", "").split(","):
        name = name.strip().lstrip(".")
        if name and name != "*":
            return name
    return "localhost"


def check_web() -> int:
    url = os.environ.get("PTYCHOPY_HEALTHCHECK_URL", "http://127.0.0.1:8000/healthz")
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
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"webapp.worker" in argv:
            return 0
    print("unhealthy: no `python -m webapp.worker` process", file=sys.stderr)
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

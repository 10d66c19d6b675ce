"""A real nginx (Debian's nginx-light) on loopback as a facility's reverse proxy in front of Daphne: with basic
authentication, the authenticated name in a header, connecting from its own loopback address (``proxy_bind``) so
the app can tell the proxy from a client that reaches Daphne directly; or a plain one that forwards websockets.
Each logs every request in nginx's default (combined) format, the request line with its query string, to
``<folder>/access.log``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .net import LOOPBACK, free_port
from .processes import ManagedProcess
from .services import PrerequisiteMissing

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _proxy(name: str, folder: Path, upstream_port: int, location: str) -> ManagedProcess:
    """nginx on a free loopback port forwarding ``/`` to ``LOOPBACK:upstream_port`` with the ``location``
    directives besides ``proxy_pass``. Not started: call ``.start()``."""
    if not Path(NGINX).exists():
        raise PrerequisiteMissing("nginx is not installed (./dev test installs nginx-light)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    temp = {k: folder / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    run_as = "user root;\n" if os.geteuid() == 0 else ""  # workers read the test's private folder
    (folder / "nginx.conf").write_text(f"""{run_as}worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {temp['client_body']}; proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']}; uwsgi_temp_path {temp['uwsgi']}; scgi_temp_path {temp['scgi']};
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://{LOOPBACK}:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{location}
        }}
    }}
}}
""")
    return ManagedProcess(name, [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf")], {}, port=port,
                          marker=str(folder / "nginx.conf"))


def basic_auth_proxy(name: str, folder: Path, upstream_port: int, users: dict[str, str], *, user_header: str,
                     bind: str) -> ManagedProcess:
    """nginx on a free loopback port: asks for ``users`` (name -> password) with basic authentication, sets
    ``user_header`` to the authenticated name on every request it forwards to ``LOOPBACK:upstream_port``
    (overwriting what the client sent), from the address ``bind``. Not started: call ``.start()``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "htpasswd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    return _proxy(name, folder, upstream_port, f"""            auth_basic "ptychopy";
            auth_basic_user_file {folder}/htpasswd;
            proxy_bind {bind};
            proxy_set_header {user_header} $remote_user;""")


def websocket_proxy(name: str, folder: Path, upstream_port: int) -> ManagedProcess:
    """nginx on a free loopback port forwarding requests and websockets (``Upgrade``/``Connection``) to
    ``LOOPBACK:upstream_port``, as docs/deploy.md's reverse proxy does. Not started: call ``.start()``."""
    return _proxy(name, folder, upstream_port, """            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;""")

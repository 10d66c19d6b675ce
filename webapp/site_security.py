"""What the settings decide about a site's exposure, from the environment alone (standard library only).

- :func:`check_debug`: ``DEBUG`` is honoured only in the embedded mode served on a loopback address; anywhere
  else it is refused with a message naming why (Django's debug pages list the URL patterns, settings and code).
- :func:`embedded_secret_key`: the embedded mode's signing key, random per install and kept in the data folder
  (mode 0600), never a key that ships with the code.
- :func:`is_loopback` and :func:`serve_allowed_hosts`: the host names an embedded server answers to.
- :func:`parse_networks`: the trusted reverse proxies (``PTYCHOPY_TRUSTED_PROXIES``), checked at start-up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SECRET_KEY_FILE = "secret_key"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


class SiteConfigError(RuntimeError):
    """The environment asks for something unsafe or inconsistent; the message says what and how to fix it."""


def is_loopback(host: str) -> bool:
    """True for an address or name that only this machine reaches (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_debug(debug: bool, *, embedded: bool, serve_host: str) -> None:
    """Refuse ``DEBUG`` outside the embedded mode and on an embedded server reachable from the network.

    ``serve_host``: the address ``ptychopy serve --host`` listens on ("" when not started by it).
    Raises :class:`SiteConfigError`.
    """
    if not debug:
        return
    if not embedded:
        raise SiteConfigError(
            "DEBUG=1 is refused outside the embedded mode (DATABASE_URL or REDIS_URL is set): Django's debug pages "
            "show the URL patterns, settings and source code to anyone who reaches the site. Unset DEBUG; to debug, "
            "run the embedded mode on 127.0.0.1 (docs/deploy.md).")
    if serve_host and not is_loopback(serve_host):
        raise SiteConfigError(
            f"DEBUG=1 is refused with --host {serve_host}: the debug pages would be served to the network. "
            "Unset DEBUG, or serve on 127.0.0.1 to debug.")


def embedded_secret_key(home: Path) -> str:
    """The key in ``home/secret_key``, created (random, 0600) on first use; safe when processes race.

    A key file that exists but is too short to be a real key raises :class:`SiteConfigError` naming it.
    """
    path = home / SECRET_KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(50) + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # never replaces a key another process wrote first
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text().strip()
    if len(key) < 50:
        raise SiteConfigError(f"{path}: the secret key there is {len(key)} characters; delete the file to get a "
                              "new random one (sessions and password-reset links made with the old key end)")
    return key


def serve_allowed_hosts(serve_host: str) -> list[str]:
    """Host names an embedded server listening on ``serve_host`` answers to.

    Loopback: the loopback names only. Any other address: those, this machine's host names, the addresses
    they resolve to, and ``serve_host`` itself unless it is a wildcard (``0.0.0.0``, ``::``).
    """
    hosts = list(LOOPBACK_HOSTS)
    if not serve_host or is_loopback(serve_host):
        return hosts
    names = {socket.gethostname(), socket.getfqdn()}
    bare = serve_host.strip("[]")
    if bare not in ("0.0.0.0", "::", ""):
        names.add(bare)
    for name in list(names):
        try:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        names.update(str(info[4][0]) for info in infos)
    for name in sorted(n for n in names if n):
        entry = f"[{name}]" if ":" in name else name
        if entry not in hosts:
            hosts.append(entry)
    return hosts


def parse_networks(entries: Sequence[str], where: str = "PTYCHOPY_TRUSTED_PROXIES") -> tuple[Network, ...]:
    """``["10.0.0.1", "10.1.0.0/16", "::1"]`` -> networks; a bad entry raises :class:`SiteConfigError` naming it."""
    networks = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise SiteConfigError(f"{where}: {entry!r} is not an IP address or network (e.g. 10.0.0.5 or "
                                  "10.0.0.0/24)") from None
    return tuple(networks)

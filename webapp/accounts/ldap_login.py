"""Sign-in against the facility's LDAP directory (OpenLDAP, 389-DS, Active Directory): the login form's username
and password are checked by binding to the directory as that user, with ldap3 (pure Python, no C library).

Off unless ``PTYCHOPY_LDAP_URL`` is set (docs/deploy.md "Single sign-on"). The user's DN comes from
``PTYCHOPY_LDAP_USER_DN`` (``uid={username},ou=people,dc=example,dc=org``; for Active Directory
``{username}@example.org`` works as a bind name); the name is escaped for the DN and must look like a user name.
An empty password is refused before the directory is asked: LDAP treats a bind with a DN and no password as an
*unauthenticated* bind, which many servers accept. The e-mail and names are copied from ``mail``, ``givenName``
and ``sn`` at each sign-in; a new name becomes an account without a password or staff rights unless
``PTYCHOPY_LDAP_CREATE=0``. Login throttling (django-axes) applies as to local passwords.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
from typing import Any

import ldap3
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn

log = logging.getLogger(__name__)

#: what a directory user name may look like (no DN or filter syntax)
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,149}")


def user_dn(username: str) -> str:
    """The DN (or bind name) of ``username`` from ``PTYCHOPY_LDAP_USER_DN``, the name escaped for a DN."""
    return str(settings.PTYCHOPY_LDAP_USER_DN).replace("{username}", escape_rdn(username))


def directory_entry(username: str, password: str) -> dict[str, str] | None:
    """Bind as ``username``; its ``mail``, ``givenName`` and ``sn`` on success, None when the directory says no
    (or cannot be reached: logged)."""
    url = settings.PTYCHOPY_LDAP_URL
    timeout = max(1, math.ceil(settings.PTYCHOPY_LDAP_TIMEOUT_S))  # whole seconds: ldap3 packs them as integers
    server = ldap3.Server(url, connect_timeout=timeout, get_info=ldap3.NONE,
                          tls=ldap3.Tls(validate=ssl.CERT_REQUIRED))  # ldap3's default would not check the cert
    dn = user_dn(username)
    conn = ldap3.Connection(server, user=dn, password=password, receive_timeout=timeout, read_only=True,
                            raise_exceptions=False)
    try:
        conn.open()
        if settings.PTYCHOPY_LDAP_START_TLS and not conn.start_tls():
            log.error("LDAP server %s refused STARTTLS: %s", url, conn.result)
            return None
        if not conn.bind():
            log.info("LDAP sign-in of %r refused by %s: %s", username, url, (conn.result or {}).get("description"))
            return None
        found: dict[str, str] = {}
        if "=" in dn and conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["mail", "givenName", "sn"]):
            entry = conn.entries[0].entry_attributes_as_dict
            found = {k: str(v[0]) for k, v in entry.items() if v}
        return found
    except LDAPException as exc:
        log.error("LDAP server %s cannot be used: %s: %s", url, type(exc).__name__, exc)
        return None
    finally:
        conn.unbind()


class LdapBackend(ModelBackend):
    """The login form's name and password, checked by the directory; the Django account of that name signs in."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> Any:
        if not settings.PTYCHOPY_LDAP_URL or not username or not password:
            return None  # an empty password would be an unauthenticated bind, which the directory may accept
        if not USERNAME.fullmatch(username):
            return None
        entry = directory_entry(username, password)
        if entry is None:
            return None
        users = get_user_model().objects
        user = users.filter(username=username).first()
        if user is None:
            if not settings.PTYCHOPY_LDAP_CREATE:
                log.info("LDAP user %r has no account here (PTYCHOPY_LDAP_CREATE=0)", username)
                return None
            user = users.create_user(username)
            user.set_unusable_password()
            log.info("new account %r from the LDAP directory", username)
        user.email = entry.get("mail", user.email)
        user.first_name = entry.get("givenName", user.first_name)[:150]
        user.last_name = entry.get("sn", user.last_name)[:150]
        user.save()
        return user if self.user_can_authenticate(user) else None

"""A real LDAP directory for the LDAP sign-in tests: Debian's OpenLDAP ``slapd`` on a loopback port with a
throw-away MDB database (suffix dc=lab,dc=example,dc=org), its people under ou=people."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .net import LOOPBACK, free_port
from .processes import ManagedProcess
from .services import PrerequisiteMissing

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SUFFIX = "dc=lab,dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"


@dataclass
class Slapd:
    folder: Path
    port: int = field(default_factory=free_port)
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"ldap://{LOOPBACK}:{self.port}"

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{SUFFIX}"

    def start(self) -> Slapd:
        if not Path(SLAPD).exists():
            raise PrerequisiteMissing("slapd is not installed (./dev test installs slapd)")
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        conf = self.folder / "slapd.conf"
        conf.write_text(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.folder}/slapd.pid
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "{self.admin_dn}"
rootpw {self.admin_password}
directory {self.folder}/db
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
""")
        self.proc = ManagedProcess("slapd", [SLAPD, "-d", "0", "-f", str(conf), "-h", f"{self.url}/"], {},
                                   port=self.port, marker=str(conf))
        self.proc.start(wait=30)
        import ldap3

        with ldap3.Connection(ldap3.Server(self.url), self.admin_dn, self.admin_password, auto_bind=True) as conn:
            conn.add(SUFFIX, ["dcObject", "organization"], {"o": "Lab", "dc": "lab"})
            conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
        return self

    def add_person(self, uid: str, password: str, *, given: str, surname: str, mail: str) -> str:
        """A person ``uid=<uid>,ou=people,...`` who can bind with ``password``; returns the DN."""
        import ldap3

        dn = f"uid={uid},{PEOPLE}"
        with ldap3.Connection(ldap3.Server(self.url), self.admin_dn, self.admin_password, auto_bind=True) as conn:
            ok = conn.add(dn, ["inetOrgPerson"], {"uid": uid, "cn": f"{given} {surname}", "givenName": given,
                                                  "sn": surname, "mail": mail, "userPassword": password})
            assert ok, conn.result
        return dn

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

"""The app's two run modes as real processes.

:class:`ProductionStack`: PostgreSQL + Redis + Daphne + ``python -m webapp.worker`` subprocesses, all
configured by environment variables as docker/compose.yaml does. :class:`EmbeddedServer`:
``python -m webapp.cli serve`` on SQLite with nothing else.
"""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .net import LOOPBACK, free_port
from .processes import ManagedProcess, app_env, daphne, embedded_server, run_manage, worker

# Defaults of the simulated experiment (reconstruction.parameters): lambda, z, detector pixel.
WAVELENGTH_M = 2.48e-10
DISTANCE_M = 1.0
DETECTOR_PIXEL_M = 172e-6


def small_sim_cmdstr(iterations: int, *, size: int = 64, scan: int = 10, step_px: float = 6.0,
                     job_id: str = "", extra: str = "") -> str:
    """An original-style command string for a small simulated scan (step about ``step_px`` object pixels)."""
    pixel_m = WAVELENGTH_M * DISTANCE_M / (size * DETECTOR_PIXEL_M)
    step_m = step_px * pixel_m
    cmd = (f"./ptycho -simulate=1 -size={size} -scanDims={scan},{scan} -step={step_m:.4e},{step_m:.4e} "
           f"-i={iterations} -photons=1e6 -updateProbe=2")
    if job_id:
        cmd += f" -jobID={job_id}"
    if extra:
        cmd += f" {extra}"
    return cmd


@dataclass
class User:
    username: str
    password: str
    token: str = ""
    staff: bool = False


_CREATE_USERS = """
from django.contrib.auth import get_user_model
User = get_user_model()
for name, password, email, staff in {users!r}:
    u, _ = User.objects.get_or_create(username=name)
    u.set_password(password)
    u.email = email
    u.is_staff = u.is_superuser = staff
    u.save()
"""


@dataclass
class ProductionStack:
    name: str
    database_url: str
    redis_url: str
    root: Path
    frame_rate_hz: float = 5.0
    port: int = field(default_factory=free_port)
    web: ManagedProcess | None = None
    workers: list[ManagedProcess] = field(default_factory=list)
    users: dict[str, User] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results_dir = self.root / "results"
        self.data_root = self.root / "data"
        self.outside_dir = self.root / "outside"
        for d in (self.results_dir, self.data_root, self.outside_dir, self.root / "home"):
            d.mkdir(parents=True, exist_ok=True)
        self.env = app_env({
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": f"{LOOPBACK},localhost",
            "PTYCHOPY_HOME": str(self.root / "home"),
            "PTYCHOPY_RESULTS_DIR": str(self.results_dir),
            "PTYCHOPY_DATA_ROOTS": str(self.data_root),
            "PTYCHOPY_FRAME_RATE_HZ": f"{self.frame_rate_hz:g}",
            "PTYCHOPY_INSECURE_COOKIES": "1",
            "dramatiq_queue_prefetch": "1",
        })

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def origin(self) -> str:
        return self.base_url

    def manage(self, *args: str, timeout: float = 180.0) -> str:
        return run_manage(self.env, *args, timeout=timeout)

    def setup(self) -> ProductionStack:
        self.manage("migrate", "--noinput")
        return self

    def add_user(self, username: str, password: str | None = None, *, staff: bool = False) -> User:
        password = password or secrets.token_urlsafe(12)
        self.create_users((username, password, "", staff))
        out = self.manage("create_token", username)
        token = _last_token(out)
        user = User(username, password, token, staff)
        self.users[username] = user
        return user

    def create_users(self, *users: tuple[str, str, str, bool]) -> None:
        """(username, password, e-mail, staff) rows, created or updated in one ``manage.py shell``; no tokens."""
        self.manage("shell", "-c", _CREATE_USERS.format(users=list(users)))

    def start_web(self) -> ManagedProcess:
        if self.web is None:
            self.web = daphne(f"{self.name}-daphne", self.port, self.env)
        return self.web.start()

    def start_worker(self, index: int = 0) -> ManagedProcess:
        while len(self.workers) <= index:
            self.workers.append(worker(f"{self.name}-worker{len(self.workers)}", self.env))
        return self.workers[index].start()

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        if self.web is not None:
            self.web.stop()

    def logs(self) -> str:
        parts = []
        for proc in [self.web, *self.workers]:
            if proc is not None:
                parts.append(f"--- {proc.log_path} ---\n{proc.log_tail(40)}")
        return "\n".join(parts)


def _last_token(output: str) -> str:
    tokens = re.findall(r"\b[0-9A-Za-z_\-]{20,}\b", output)
    if not tokens:
        raise AssertionError(f"create_token printed no token: {output!r}")
    return tokens[-1]


_LOGIN_RE = re.compile(r"(?:user(?:name)?|log\s?in(?:\s+as)?)\s*[:=]?\s*['\"]?(?P<user>[\w.@+-]+)['\"]?"
                       r"[\s,;]+password\s*[:=]?\s*['\"]?(?P<password>[^\s'\"]+)", re.IGNORECASE)


@dataclass
class EmbeddedServer:
    """``python -m webapp.cli serve --demo`` with only ``PTYCHOPY_HOME`` set (SQLite, in-process worker)."""

    name: str
    home: Path
    port: int = field(default_factory=free_port)
    demo: bool = True
    host: str = LOOPBACK  # the address it listens on; the tests always ask it on loopback
    proc: ManagedProcess | None = None

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = app_env({"PTYCHOPY_HOME": str(self.home)})

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, wait: float = 120.0) -> ManagedProcess:
        if self.proc is None:
            self.proc = embedded_server(self.name, self.port, self.env, demo=self.demo, host=self.host)
        return self.proc.start(wait=wait)

    def restart(self, *, crash: bool = False) -> float:
        """Stop (SIGTERM, or SIGKILL with ``crash``) and start again; returns how long the stop took."""
        assert self.proc is not None
        if crash:
            self.proc.kill()
            took = 0.0
        else:
            took = self.proc.stop(timeout=30)
        self.proc.start(wait=120.0)
        return took

    def demo_login(self) -> tuple[str, str]:
        """The demo user and password the launcher printed."""
        assert self.proc is not None
        text = self.proc.log_text()
        found = list(_LOGIN_RE.finditer(text))
        if not found:
            raise AssertionError(f"the launcher printed no demo login (user, password):\n{text[-3000:]}")
        m = found[-1]
        return m.group("user"), m.group("password")

    def remove(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        shutil.rmtree(self.home, ignore_errors=True)

"""Real processes on loopback for the latency benchmark: PostgreSQL, Redis, subprocesses, the CA loopback.

Self-contained on purpose (no import of ``tests.support``): the benchmark is a tool of its own. Every process
runs in its own session (process group) and is ended by its id; :class:`Cleanup` ends everything it was given,
in reverse order, on success, on an exception and at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
PG_BIN = Path(os.environ.get("PTYCHOPY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))

# The app's own settings: a subprocess gets exactly the ones the benchmark sets for its mode.
APP_ENV_VARS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DEBUG",
                "STATIC_ROOT", "DJANGO_SETTINGS_MODULE", "CUDA_VISIBLE_DEVICES")
APP_ENV_PREFIXES = ("PTYCHOPY_", "dramatiq_", "DRAMATIQ_", "EPICS_")


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll ``cond`` (measurement side only) until truthy; raise TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


_handed_out: set[int] = set()  # ports given to servers that may bind them only seconds later


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, never the same one twice per process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port p with p and p+1 free for TCP and UDP on loopback (CA server + repeater)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOOPBACK, 0))
            p = int(s.getsockname()[1])
        if (p < 65000 and not {p, p + 1} & _handed_out
                and all(_free(q, k) for q in (p, p + 1) for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM))):
            _handed_out.update((p, p + 1))
            return p
    raise RuntimeError("no free loopback port pair")


def port_open(port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the app's and EPICS settings and proxies, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV_VARS and not k.startswith(APP_ENV_PREFIXES)}
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    env.update(extra or {})
    return env


class Proc:
    """One subprocess in its own process group, output in a log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path,
                 port: int | None = None):
        self.name, self.argv, self.env, self.port = name, argv, dict(env), port
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait_s: float = 90.0) -> Proc:
        with self.log_path.open("ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if self.port is not None:
            deadline = time.monotonic() + wait_s
            while not port_open(self.port):
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited before listening:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} did not listen on {self.port} in {wait_s:g} s:\n{self.tail()}")
                time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the leader, then SIGKILL to its process group (by id) if anything is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Cleanup:
    """Stop callbacks run in reverse order exactly once (explicitly, or at exit as a fallback)."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []
        atexit.register(self.run)

    def add(self, what: str, stop: Callable[[], None]) -> None:
        self._stops.append((what, stop))

    def run(self) -> None:
        while self._stops:
            what, stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # keep cleaning up the rest
                print(f"cleanup of {what} failed: {exc}", file=sys.stderr)


# -- PostgreSQL and Redis ------------------------------------------------------------------------------------
class Postgres:
    """PostgreSQL 15 as the ``postgres`` user (initdb refuses root), throw-away data folder, fsync off."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ptychopy-latency-pg-"))
        self.port = 0

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    def start(self) -> Postgres:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install -y postgresql-15)")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        data = self.root / "data"
        res = self._run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                         "--no-sync", "-U", "postgres"])
        if res.returncode:
            raise RuntimeError(f"initdb failed: {res.stdout}{res.stderr}")
        self.port = free_port()
        opts = (f"-p {self.port} -c listen_addresses={LOOPBACK} -c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        res = self._run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.root / "pg.log"), "-w", "-t", "30",
                         "-o", opts, "start"])
        if res.returncode:
            raise RuntimeError(f"pg_ctl start failed: {res.stdout}{res.stderr}")
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "ptychopy"')
        return self

    def url(self, database: str = "ptychopy") -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "20", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """redis-server on loopback, no persistence, daemonised with a pid file."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ptychopy-latency-redis-"))
        self.port = 0

    def start(self) -> Redis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.port = free_port()
        res = subprocess.run([exe, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                              "--daemonize", "yes", "--pidfile", str(self.root / "redis.pid"),
                              "--logfile", str(self.root / "redis.log"), "--dir", str(self.root)],
                             capture_output=True, text=True, timeout=30, check=False)
        if res.returncode:
            raise RuntimeError(f"redis-server failed: {res.stdout}{res.stderr}")
        wait_for(lambda: port_open(self.port), 15, "redis-server")
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"

    def stop(self) -> None:
        pidfile = self.root / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while port_open(self.port) and time.monotonic() < deadline:
                time.sleep(0.05)
            if port_open(self.port):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


# -- Channel Access on a private loopback port ---------------------------------------------------------------
class CaLoopback:
    """CA server/repeater ports, a ``caRepeater`` shim on PATH (caproto's repeater) that records its PID."""

    def __init__(self, workdir: Path):
        self.port = free_port_pair()
        self.shim_dir = workdir / "shim"
        self.shim_dir.mkdir(parents=True, exist_ok=True)
        self.repeater_pids = workdir / "repeater.pids"
        shim = self.shim_dir / "caRepeater"
        shim.write_text("#!/bin/sh\n"
                        f"echo $$ >> '{self.repeater_pids}'\n"
                        f"exec '{sys.executable}' -c 'from caproto.sync.repeater import run; "
                        "run(host=\"127.0.0.1\")'\n")
        shim.chmod(0o755)

    @property
    def client_env(self) -> dict[str, str]:
        return dict(EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_ADDR_LIST=LOOPBACK,
                    EPICS_CA_SERVER_PORT=str(self.port), EPICS_CA_REPEATER_PORT=str(self.port + 1))

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env.update(self.client_env)
        env.update(EPICS_CAS_INTF_ADDR_LIST=LOOPBACK, EPICS_CAS_BEACON_PORT=str(self.port + 1),
                   EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO", EPICS_CAS_BEACON_ADDR_LIST=LOOPBACK)
        env["PATH"] = f"{self.shim_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def end_repeaters(self) -> None:
        try:
            pids = {int(x) for x in self.repeater_pids.read_text().split()}
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

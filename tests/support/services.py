"""A real PostgreSQL 15 and a real Redis, started on loopback for the test session.

``ensure_postgres()`` / ``ensure_redis()`` start one server each the first time they are called and return
the same one afterwards. ``stop_all_services()`` stops them (pytest_sessionfinish calls it; ``atexit`` is
the fallback).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .net import LOOPBACK, free_port, port_open, wait_for_port, wait_port_closed
from .reaper import forget, record

PG_BIN = Path(os.environ.get("PTYCHOPY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
T = TypeVar("T")


class PrerequisiteMissing(RuntimeError):
    """A program the tests drive for real is not installed."""


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class PostgresServer:
    """PostgreSQL run as the ``postgres`` user (initdb refuses root) with a throw-away data folder."""

    port: int = 0
    root: Path | None = None
    _databases: set[str] = field(default_factory=set)
    _entry: Path | None = None

    @property
    def running(self) -> bool:
        return self.port != 0 and port_open(self.port)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{PG_USER}@{LOOPBACK}:{self.port}/postgres"

    def url(self, database: str = "ptychopy") -> str:
        return f"postgresql://{PG_USER}@{LOOPBACK}:{self.port}/{database}"

    def _as_postgres(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> PostgresServer:
        if self.running:
            return self
        initdb = PG_BIN / "initdb"
        if not initdb.exists():
            raise PrerequisiteMissing(
                f"PostgreSQL server binaries not found at {PG_BIN} (set PTYCHOPY_TEST_PG_BIN, "
                "or install postgresql-15: apt-get install -y postgresql-15)"
            )
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(PG_USER)
            except KeyError as exc:
                raise PrerequisiteMissing("no 'postgres' system user to run PostgreSQL as") from exc
        self.root = Path(tempfile.mkdtemp(prefix="ptychopy-test-pg-"))
        self._entry = record("postgres", root=str(self.root), pg_ctl=str(PG_BIN / "pg_ctl"))
        if os.geteuid() == 0:
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        data = self.root / "data"
        res = self._as_postgres(
            [str(initdb), "-D", str(data), "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
             "-U", PG_USER]
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        for _attempt in range(3):  # another process may take the free port before the postmaster binds it
            self.port = free_port()
            res = self._pg_ctl_start()
            if res.returncode == 0 or "already in use" not in _tail(self.root / "postgres.log"):
                break
        if res.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n"
                f"{_tail(self.root / 'postgres.log')}"
            )
        wait_for_port(self.port, timeout=30, what="PostgreSQL")
        self.create_database("ptychopy")
        return self

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        assert self.root is not None
        opts = (f"-p {self.port} -c listen_addresses={LOOPBACK} -c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        return self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "postgres.log"), "-w",
             "-t", "30", "-o", opts, "start"]
        )

    def restart(self, down_s: float = 1.0, *, mode: str = "fast") -> float:
        """Stop the server (``pg_ctl stop -m mode``: every connection is cut), stay down ``down_s`` seconds, start
        it again on the same port with the same data; returns the monotonic time it accepts connections again."""
        assert self.root is not None, "restart() before start()"
        data = self.root / "data"
        res = self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", "20", "stop"],
                                timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {res.stdout}{res.stderr}")
        wait_port_closed(self.port, timeout=10)
        time.sleep(down_s)
        res = self._pg_ctl_start()
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {res.stdout}{res.stderr}\n{_tail(self.root / 'postgres.log')}")
        wait_for_port(self.port, timeout=30, what="PostgreSQL")
        return time.monotonic()

    def create_database(self, name: str) -> str:
        """Create (or re-create, empty) a database and return its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"bad database name {name!r}")
        import psycopg  # the web extra's driver

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        self._databases.add(name)
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        data = self.root / "data"
        if self.port and (data / "postmaster.pid").exists():
            self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "20",
                               "stop"], timeout=30)
            if not wait_port_closed(self.port, timeout=10):
                self._kill_postmaster(data)
        shutil.rmtree(self.root, ignore_errors=True)
        forget(self._entry)
        self.root = None
        self.port = 0

    @staticmethod
    def _kill_postmaster(data: Path) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)


@dataclass
class RedisServer:
    """redis-server daemonised on loopback, with no persistence."""

    port: int = 0
    root: Path | None = None
    _entry: Path | None = None

    @property
    def running(self) -> bool:
        return self.port != 0 and port_open(self.port)

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"

    def start(self) -> RedisServer:
        if self.running:
            return self
        exe = shutil.which("redis-server")
        if exe is None:
            raise PrerequisiteMissing(
                "redis-server is not installed: run the tests with `./dev test` (it installs it) "
                "or `apt-get install -y redis-server`"
            )
        self.root = Path(tempfile.mkdtemp(prefix="ptychopy-test-redis-"))
        self._entry = record("redis", root=str(self.root))
        self.port = free_port()
        self._launch(exe)
        return self

    def _launch(self, exe: str) -> None:
        assert self.root is not None
        res = subprocess.run(
            [exe, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--pidfile", str(self.root / "redis.pid"),
             "--logfile", str(self.root / "redis.log"), "--dir", str(self.root), "--databases", "64"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"redis-server failed ({res.returncode}): {res.stdout}{res.stderr}")
        try:
            wait_for_port(self.port, timeout=15, what="redis-server")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{_tail(self.root / 'redis.log')}") from exc

    def halt(self) -> None:
        """Stop redis-server (SIGTERM; with no persistence every message is lost), keeping port and folder for
        :meth:`resume`."""
        assert self.root is not None, "halt() before start()"
        pidfile = self.root / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        if not wait_port_closed(self.port, timeout=10):
            raise RuntimeError("redis-server did not stop")
        with contextlib.suppress(OSError):
            pidfile.unlink()

    def resume(self) -> float:
        """Start the halted server again on the same port; returns the monotonic time it accepts connections."""
        exe = shutil.which("redis-server")
        assert exe is not None
        self._launch(exe)
        return time.monotonic()

    def restart(self, down_s: float = 1.0) -> float:
        """:meth:`halt`, ``down_s`` seconds down, :meth:`resume`."""
        self.halt()
        time.sleep(down_s)
        return self.resume()

    def flush(self, db: int) -> None:
        import redis

        client = redis.Redis(host=LOOPBACK, port=self.port, db=db)
        try:
            client.flushdb()
        finally:
            client.close()

    def stop(self) -> None:
        if self.root is None:
            return
        pidfile = self.root / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        # An exited daemon can linger as <defunct>: watch the port, not the pid.
        if self.port and not wait_port_closed(self.port, timeout=10):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        forget(self._entry)
        self.root = None
        self.port = 0


_postgres: PostgresServer | None = None
_redis: RedisServer | None = None
_redis_dbs = iter(range(1, 64))


def ensure_postgres() -> PostgresServer:
    global _postgres
    if _postgres is None:
        _postgres = PostgresServer()
    return _postgres.start()


def ensure_redis() -> RedisServer:
    global _redis
    if _redis is None:
        _redis = RedisServer()
    return _redis.start()


def fresh_redis_url() -> str:
    """A Redis URL on a database index no other caller got this session (1..63), emptied."""
    server = ensure_redis()
    db = next(_redis_dbs)
    server.flush(db)
    return server.url(db)


def stop_all_services() -> None:
    global _postgres, _redis
    from .processes import stop_all_processes

    stop_all_processes()
    for server in (_redis, _postgres):
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
    _postgres = None
    _redis = None


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``predicate()`` until it returns a truthy value; return that value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last and time.monotonic() < deadline:
        time.sleep(interval)
        last = predicate()
    if not last:
        raise TimeoutError(f"{what} not reached within {timeout:.0f} s (last value: {last!r})")
    return last


atexit.register(stop_all_services)

"""Long-running subprocesses of the app (Daphne, Dramatiq workers, the embedded launcher).

Each runs in its own session (process group), so a crash test can SIGKILL the whole group (the ``dramatiq``
master forks children) and the harness can always clean up. Output goes to a log file under
``test-output/logs/`` that failing tests print the tail of.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from .net import LOOPBACK, wait_for_port, wait_port_closed
from .reaper import forget, record

REPO = Path(__file__).resolve().parents[2]
TEST_OUTPUT = REPO / "test-output"
LOG_DIR = TEST_OUTPUT / "logs"

# Variables that pick the app's run mode; a subprocess gets exactly the ones its test sets.
APP_ENV_VARS = (
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DEBUG",
    "STATIC_ROOT", "EMAIL_BACKEND", "DJANGO_SETTINGS_MODULE", "CUDA_VISIBLE_DEVICES",
)
APP_ENV_PREFIXES = ("PTYCHOPY_", "dramatiq_", "DRAMATIQ_")

_registry: list[ManagedProcess] = []


def app_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without the app's settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in APP_ENV_VARS and not k.startswith(APP_ENV_PREFIXES)}
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    env.update(extra or {})
    return env


class ManagedProcess:
    """One subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], *, port: int | None = None,
                 cwd: Path = REPO, marker: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.port = port
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.starts = 0
        self._entry: Path | None = None
        # What identifies this program in /proc/<pid>/cmdline, for the reaper of a killed session.
        self.marker = marker or (" ".join(argv[1:3]) if len(argv) > 2 else argv[0])

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} never started"
        return self.proc.pid

    def start(self, *, wait: float = 60.0) -> ManagedProcess:
        """Start (idempotent while running) and, with a port, wait until it listens."""
        if self.alive:
            return self
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        forget(self._entry)
        self._entry = record("pgroup", pgid=self.proc.pid, marker=self.marker, name=self.name)
        if self not in _registry:
            _registry.append(self)
        if self.port is not None:
            try:
                wait_for_port(self.port, timeout=wait, proc=self.proc, what=self.name)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n--- {self.log_path} ---\n{self.log_tail()}") from exc
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, nothing gets to clean up."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        forget(self._entry)
        self._entry = None

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM to the leader (graceful), then SIGKILL to the group if it is still there.

        Returns how long the graceful part took (``timeout`` when it had to be killed).
        """
        if self.proc is None:
            return 0.0
        took = 0.0
        if self.proc.poll() is None:
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
                took = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                took = timeout
            with self.log_path.open("ab") as log:
                log.write(f"===== SIGTERM: {'exited' if took < timeout else 'still running'} after "
                          f"{took:.1f} s\n".encode())
        self.kill()
        if self.port is not None:
            wait_port_closed(self.port, timeout=5)
        return took

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


def daphne(name: str, port: int, env: Mapping[str, str]) -> ManagedProcess:
    """The production web process, as docker/compose.yaml runs it (with the PostgreSQL connection pool)."""
    argv = python_argv("-m", "daphne", "-b", LOOPBACK, "-p", str(port), "--application-close-timeout", "5",
                       "webapp.asgi:application")
    return ManagedProcess(name, argv, {"PTYCHOPY_DB_POOL": "1", **env}, port=port)


def worker(name: str, env: Mapping[str, str]) -> ManagedProcess:
    return ManagedProcess(name, python_argv("-m", "webapp.worker"), env)


def container_like_worker(name: str, env: Mapping[str, str], hostname: str) -> ManagedProcess:
    """``python -m webapp.worker`` as a container runs it: its own PID and UTS namespaces (it is PID 1 there
    and its children get the same small pids on every start) and a fixed host name. Needs root and unshare."""
    script = f"hostname {hostname} && exec {sys.executable} -m webapp.worker"
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--uts", "sh", "-c", script]
    return ManagedProcess(name, argv, env, marker="-m webapp.worker")


def embedded_server(name: str, port: int, env: Mapping[str, str], *, demo: bool = True,
                    host: str = LOOPBACK) -> ManagedProcess:
    """``ptychopy serve`` listening on ``host`` (it is always asked on loopback)."""
    argv = python_argv("-m", "webapp.cli", "serve", "--host", host, "--port", str(port), "--no-browser")
    if demo:
        argv.append("--demo")
    return ManagedProcess(name, argv, env, port=port)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (from /proc)."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_manage(env: Mapping[str, str], *args: str, timeout: float = 120.0) -> str:
    """``python manage.py ARGS`` in ``env``; returns stdout, raises with the output on failure."""
    res = subprocess.run(python_argv("manage.py", *args), env=dict(env), cwd=REPO, capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    if res.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def stop_all_processes() -> None:
    while _registry:
        proc = _registry.pop()
        with contextlib.suppress(Exception):
            proc.stop(timeout=5)

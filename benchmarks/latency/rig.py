"""The whole path as real processes: simioc, the bridge, the web app (embedded or production), a logged-in user.

:class:`Rig` starts everything for one mode and exposes what the driver needs: the IOC (caproto's sync client via
:mod:`epics_bridge.caclient`, so no libca context exists in the benchmark process), the jobs
table, the bridge's journal, the web origin and a session cookie.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from epics_bridge.caclient import ca_get, ca_get_with_timestamp, ca_put
from epics_bridge.simioc_pva import pva_client_env
from epics_bridge.simioc_stream import live_source_address

from .procs import (
    LOOPBACK,
    REPO,
    CaLoopback,
    Cleanup,
    Postgres,
    Proc,
    Redis,
    base_env,
    free_port,
    free_port_pair,
    wait_for,
)

EXAMPLE_CONFIG = REPO / "epics_bridge" / "examples" / "beamline.toml"
PREFIX = "ptysim:"


@dataclass
class RigOptions:
    mode: str  # "embedded" | "production"
    workdir: Path
    rows: int = 12
    cols: int = 12
    size_px: int = 64
    point_time_s: float = 0.005
    iterations: int | None = None  # None: the example template's -i
    debounce_s: float | None = None  # None: the example configuration's value
    stable_checks: int | None = None
    file_backoff_s: float | None = None
    file_max_backoff_s: float | None = None  # [file_check] max_backoff_s (also how often a streaming job is asked)
    frame_rate_hz: float = 5.0
    stamp: bool = True  # the t_produced hook (benchmarks.latency.hooks)
    worker_timeout_ms: int | None = None  # dramatiq_worker_timeout for the production worker (None: default)
    web_conn_max_age: float | None = None  # experiment: Daphne with persistent DB connections (settings_conn_reuse)
    embedded_bridge: str = "inprocess"  # embedded mode: bridge "inprocess" (in the server) or its own "process"
    # "http": the bridge process submits over the JSON API with a bridge token and has no database settings;
    # "django": submit_job on the database (the in-process bridge always)
    submit: str = "django"
    bridge_url: str | None = None  # http: where the bridge sends (default: the web server), e.g. a test's proxy
    log: Any = field(default=print)
    # issue 21: simioc writes each scan into an SWMR file (--live-file) and the bridge opens a streaming job at the
    # scan's start ([stream]) with this many finishing iterations
    stream: bool = False
    finish_iterations: int = 20
    stall_s: float = 10.0  # the streaming job's -liveStall
    live_window: int = 200  # the streaming job's -liveWindow: epochs while acquiring visit the newest frames only
    # with stream: simioc streams each scan over pvAccess (--live-pva) instead of the SWMR file, and the bridge
    # opens the job on its NTNDArray ([stream] source = "pva://ptysim:Pva1:Image?scan=ptysim:Scan:")
    stream_pva: bool = False
    # with stream_pva: the bridge's buffer of each scan's first frames ([stream] buffer_mib; 0: off; None: the
    # default), served on a free loopback port; live_wait_s: simioc's sim:LiveWait (None: its default)
    stream_buffer_mib: float | None = None
    live_wait_s: float | None = None
    # with stream_pva and submit "http": the web server's PTYCHOPY_PVA_BUFFERS names the bridge's buffer_address
    # (a buffer_at= submitted over the API is refused otherwise; the in-process bridge needs nothing)
    server_allows_buffer: bool = True
    restream_attempts: int | None = None  # with stream: [stream] restream_attempts (None: the default)
    # with stream_pva: the bridge's [trigger] is "pva_frames" (a scan starts at its first frame over pvAccess and
    # ends at its status PV's end, or after frames_idle_s without a frame) instead of scan2.BUSY
    frames_trigger: bool = False
    frames_idle_s: float = 3.0

    def __post_init__(self) -> None:
        if self.submit not in ("django", "http"):
            raise ValueError(f"submit must be 'django' or 'http', got {self.submit!r}")
        if self.submit == "http" and self.mode == "embedded" and self.embedded_bridge != "process":
            raise ValueError("submit 'http' needs the bridge as its own process (embedded_bridge='process')")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the bridge configuration's shape (tables of scalars, lists, inline tables)."""
    out: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        subs = {k: v for k, v in body.items() if isinstance(v, dict) and k == "parameters" and name == "metadata"}
        out.append(f"[{name}]")
        for k, v in body.items():
            if k in subs:
                continue
            out.append(f"{json.dumps(k) if '.' in k else k} = {_toml_value(v)}")
        out.append("")
        for k, v in subs.items():
            table(f"{name}.{k}", v)

    for name, body in data.items():
        table(name, body)
    return "\n".join(out)


def bridge_config(opts: RigOptions, env_paths: dict[str, Path],
                  http: tuple[str, Path] | None = None) -> tuple[Path, dict[str, Any]]:
    """The example configuration with this run's journal, state file and (optionally) timing overrides; with
    ``http`` = (server URL, token file) the bridge submits over the JSON API."""
    cfg = tomllib.loads(EXAMPLE_CONFIG.read_text())
    if http is not None:
        cfg["submit"] = {"kind": "http", "url": http[0], "token_file": str(http[1]),
                         "initial_backoff_s": cfg["submit"]["initial_backoff_s"],
                         "max_backoff_s": cfg["submit"]["max_backoff_s"]}
    cfg["bridge"]["pv_prefix"] = PREFIX
    cfg["bridge"]["journal"] = str(env_paths["journal"])
    cfg["bridge"]["state_file"] = str(env_paths["state"])
    if opts.debounce_s is not None:
        cfg["bridge"]["debounce_s"] = opts.debounce_s
    if opts.stable_checks is not None:
        cfg["file_check"]["stable_checks"] = opts.stable_checks
    if opts.file_backoff_s is not None:
        cfg["file_check"]["initial_backoff_s"] = opts.file_backoff_s
    if opts.file_max_backoff_s is not None:
        cfg["file_check"]["max_backoff_s"] = opts.file_max_backoff_s
    if opts.stream:
        cfg["stream"] = {"enabled": True, "values": {"data.live_finish_iterations": opts.finish_iterations,
                                                     "data.live_stall_s": opts.stall_s,
                                                     "data.live_window_frames": opts.live_window}}
        if opts.restream_attempts is not None:
            cfg["stream"]["restream_attempts"] = opts.restream_attempts
        if opts.stream_pva:
            cfg["stream"]["source"] = live_source_address(PREFIX)
            cfg["stream"]["buffer_address"] = f"{LOOPBACK}:{free_port()}"
            if opts.stream_buffer_mib is not None:
                cfg["stream"]["buffer_mib"] = opts.stream_buffer_mib
            if opts.frames_trigger:  # its source: [stream] source
                cfg["trigger"] = {"kind": "pva_frames", "idle_s": opts.frames_idle_s}
    if opts.iterations is not None:
        template = cfg["parameters"]["template"]
        cfg["parameters"]["template"] = re.sub(r"-i=\d+", f"-i={opts.iterations}", template)
    path = opts.workdir / "bridge.toml"
    path.write_text(dump_toml(cfg))
    return path, cfg


def _parse_db_time(value: Any) -> float | None:
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class Rig:
    def __init__(self, opts: RigOptions):
        self.opts = opts
        self.mode = opts.mode
        self.cleanup = Cleanup()
        self.work = opts.workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.data_dir = self.work / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.home = self.work / "home"
        self.home.mkdir(exist_ok=True)
        self.journal_path = self.work / "bridge" / "journal.sqlite3"
        self.state_path = self.work / "bridge" / "state.json"
        self.port = free_port()
        self.ca = CaLoopback(self.work)
        self.cleanup.add("CA repeaters", self.ca.end_repeaters)
        self.procs: list[Proc] = []
        self.database_url = ""
        self.sqlite_path = self.home / "ptychopy.sqlite3"
        self.cookie = ""
        self.bridge_cfg: dict[str, Any] = {}
        self.token_path = self.work / "bridge.token"
        self._bridge_argv: list[str] = []
        self.bridge_env: dict[str, str] = {}  # the bridge process's environment
        self.live_pva_port = free_port_pair() if opts.stream and opts.stream_pva else None  # simioc --live-pva

    # -- start-up ---------------------------------------------------------------------------------------------
    def _proc(self, name: str, argv: list[str], env: dict[str, str], port: int | None = None,
              wait_s: float = 120.0) -> Proc:
        proc = Proc(name, argv, env, self.logs, port=port)
        self.cleanup.add(name, proc.stop)
        self.procs.append(proc)
        return proc.start(wait_s)

    def start(self) -> Rig:
        log = self.opts.log
        http = ((self.opts.bridge_url or self.base_url, self.token_path) if self.opts.submit == "http" else None)
        cfg_path, self.bridge_cfg = bridge_config(self.opts, {"journal": self.journal_path, "state": self.state_path},
                                                  http)
        app = {"PTYCHOPY_HOME": str(self.home), "PTYCHOPY_DATA_ROOTS": str(self.data_dir),
               "PTYCHOPY_FRAME_RATE_HZ": f"{self.opts.frame_rate_hz:g}", "PTYCHOPY_LOG_LEVEL": "INFO"}
        if self.mode == "production":
            pg = Postgres()
            self.cleanup.add("postgres", pg.stop)
            redis = Redis()
            self.cleanup.add("redis", redis.stop)
            pg.start()
            redis.start()
            self.database_url = pg.url()
            app.update(DATABASE_URL=self.database_url, REDIS_URL=redis.url(0), SECRET_KEY=secrets.token_urlsafe(40),
                       ALLOWED_HOSTS=f"{LOOPBACK},localhost", PTYCHOPY_INSECURE_COOKIES="1",
                       dramatiq_queue_prefetch="1")
        if self.live_pva_port is not None:  # the worker's pvAccess client reaches simioc's stream only
            app.update(pva_client_env(self.live_pva_port))
            buffer_at = self.bridge_cfg["stream"].get("buffer_address")
            if self.opts.submit == "http" and self.opts.server_allows_buffer and buffer_at:
                app["PTYCHOPY_PVA_BUFFERS"] = str(buffer_at)
        env = base_env(app)
        ca_env = self.ca.env(env)
        self._bridge_argv = [sys.executable, "-m", "epics_bridge", "--config", str(cfg_path)]
        self.bridge_env = ca_env
        if self.opts.submit == "http":  # the controls host: a URL and a token, no database or broker settings
            server_only = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
            self.bridge_env = {k: v for k, v in ca_env.items()
                                if k not in server_only and not k.startswith("PTYCHOPY_")}
        log(f"[{self.mode}] simioc on CA port {self.ca.port}, web on {self.port}")
        self._proc("simioc", [sys.executable, "-m", "epics_bridge.simioc", "--port", str(self.ca.port),
                              "--data-dir", str(self.data_dir), "--prefix", PREFIX, "--rows", str(self.opts.rows),
                              "--cols", str(self.opts.cols), "--size", str(self.opts.size_px),
                              "--point-time", str(self.opts.point_time_s),
                              *self._live_args()], ca_env)
        wait_for(lambda: self._ioc_ready(), 60, "the simulated IOC")
        if self.opts.live_wait_s is not None:
            self.ioc_put("sim:LiveWait", self.opts.live_wait_s)
        if self.mode == "production":
            self._manage(env, "migrate", "--noinput")
            self.username, self.password = "viewer", secrets.token_urlsafe(12)
            self._manage(env, "shell", "-c", _CREATE_USER.format(username=self.username, password=self.password))
            web_env = dict(env)
            if self.opts.web_conn_max_age is not None:
                web_env.update(DJANGO_SETTINGS_MODULE="benchmarks.latency.settings_conn_reuse",
                               PTYCHOPY_BENCH_CONN_MAX_AGE=f"{self.opts.web_conn_max_age:g}")
            self._proc("daphne", [sys.executable, "-m", "daphne", "-b", LOOPBACK, "-p", str(self.port),
                                  "webapp.asgi:application"], web_env, port=self.port)
            worker_env = dict(env)
            if self.opts.worker_timeout_ms is not None:
                worker_env["dramatiq_worker_timeout"] = str(self.opts.worker_timeout_ms)
            module = "benchmarks.latency.stamped_worker" if self.opts.stamp else "webapp.worker"
            self._proc("worker", [sys.executable, "-m", module], worker_env)
            if self.opts.submit == "http":
                self._bridge_token(env)
            self.start_bridge()
            wait_for(self._worker_ready, 120, "the Dramatiq worker's heartbeat")
        else:
            argv = [sys.executable, "-m", "benchmarks.latency.embedded_serve", "--port", str(self.port)]
            if self.opts.embedded_bridge == "inprocess":
                argv += ["--bridge", str(cfg_path)]
            if not self.opts.stamp:
                argv.append("--no-stamp")
            self._proc("serve", argv, ca_env, port=self.port)
            if self.opts.embedded_bridge == "process":  # its own process: the API, or the same SQLite (PTYCHOPY_HOME)
                if self.opts.submit == "http":
                    self._bridge_token(env)
                self.start_bridge()
            login = wait_for(lambda: (self.home / "demo-login.txt").exists(), 60, "the demo login file")
            assert login
            kv = dict(line.split("=", 1) for line in (self.home / "demo-login.txt").read_text().splitlines()
                      if "=" in line)
            self.username, self.password = kv["username"].strip(), kv["password"].strip()
        wait_for(self._bridge_connected, 60, "the bridge to connect to every PV")
        self.cookie = self.login()
        log(f"[{self.mode}] up: logged in as {self.username}")
        return self

    def stop(self) -> None:
        self.cleanup.run()

    def _live_args(self) -> list[str]:
        """simioc's options for a streaming rig: each scan into an SWMR file, or over pvAccess."""
        if not self.opts.stream:
            return []
        return ["--live-file"] if self.live_pva_port is None else ["--live-pva", str(self.live_pva_port)]

    def _bridge_token(self, env: dict[str, str]) -> None:
        """A bridge token (``manage.py create_token latency-bridge --bridge``) in a file only its owner reads."""
        token = self._manage(env, "create_token", "latency-bridge", "--bridge", "--name", "latency benchmark")
        self.token_path.write_text(token.strip().splitlines()[-1] + "\n")
        self.token_path.chmod(0o600)

    def start_bridge(self) -> Proc:
        """Start the bridge process (again, after :meth:`kill_bridge`: it resumes from its journal)."""
        old = next((p for p in self.procs if p.name == "bridge"), None)
        if old is not None:
            old.stop()
            self.procs.remove(old)
        return self._proc("bridge", self._bridge_argv, self.bridge_env)

    def kill_bridge(self) -> None:
        """SIGKILL the bridge's process group (a crash: no clean-up runs in it)."""
        bridge = next(p for p in self.procs if p.name == "bridge")
        assert bridge.proc is not None
        os.killpg(bridge.proc.pid, signal.SIGKILL)
        bridge.proc.wait(timeout=10)

    def _manage(self, env: dict[str, str], *args: str) -> str:
        res = subprocess.run([sys.executable, "manage.py", *args], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=300, check=False)
        if res.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{res.stdout}\n{res.stderr}")
        return res.stdout

    def _ioc_ready(self) -> bool:
        if not self.procs[-1].alive:
            raise RuntimeError(f"simioc exited:\n{self.procs[-1].tail()}")
        try:
            return bool(self.ioc_get("sim:Status", 0.5) == "idle")
        except Exception:
            return False

    def _worker_ready(self) -> bool:
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM jobs_workerheartbeat").fetchone()
        return bool(row and row[0] > 0)

    def bridge_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _bridge_connected(self) -> bool:
        for proc in self.procs:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        st = self.bridge_state()
        pvs = st.get("pvs") or {}
        return bool(pvs) and all(p.get("connected") and p.get("value") is not None for p in pvs.values())

    # -- web ----------------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def login(self) -> str:
        """Log in over HTTP as a browser does (CSRF cookie + form); returns the Cookie header for websockets."""
        jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
                return None

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPCookieProcessor(jar), NoRedirect())
        page = opener.open(f"{self.base_url}/accounts/login/", timeout=30).read().decode()
        m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not m:
            raise RuntimeError("no CSRF token on the login page")
        body = urllib.parse.urlencode({"username": self.username, "password": self.password,
                                       "csrfmiddlewaretoken": m.group(1), "next": "/"}).encode()
        req = urllib.request.Request(f"{self.base_url}/accounts/login/", data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Referer": f"{self.base_url}/accounts/login/"})
        try:
            opener.open(req, timeout=30)
        except urllib.error.HTTPError as err:
            if err.code not in (302, 303):
                raise
        cookies = {c.name: c.value for c in jar}
        if "sessionid" not in cookies:
            raise RuntimeError(f"login as {self.username} set no session cookie")
        return "; ".join(f"{k}={v}" for k, v in cookies.items())

    # -- IOC ----------------------------------------------------------------------------------------------------
    def ioc_get(self, pv: str, timeout_s: float = 2.0) -> Any:
        return ca_get(PREFIX + pv, self.ca.client_env, timeout_s)

    def ioc_timestamp(self, pv: str, timeout_s: float = 2.0) -> tuple[Any, float]:
        """A PV's value and the IOC's time stamp of its last write (POSIX seconds)."""
        return ca_get_with_timestamp(PREFIX + pv, self.ca.client_env, timeout_s)

    def ioc_put(self, pv: str, value: Any, timeout_s: float = 2.0) -> None:
        ca_put(PREFIX + pv, value, self.ca.client_env, timeout_s)

    # -- the jobs table and the journal ---------------------------------------------------------------------
    def jobs_after(self, last_id: int) -> list[dict[str, Any]]:
        sql = ("SELECT id, status, created, started, finished, dedup_key, iteration, message, worker "
               "FROM jobs_job WHERE id > {} ORDER BY id")
        if self.database_url:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.database_url, row_factory=dict_row) as pg:
                rows = list(pg.execute(sql.format("%s"), (last_id,)))
        else:
            if not self.sqlite_path.exists():
                return []
            conn = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=5)
            conn.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in conn.execute(sql.format("?"), (last_id,))]
            except sqlite3.OperationalError:
                rows = []
            finally:
                conn.close()
        for r in rows:
            for k in ("created", "started", "finished"):
                r[k] = _parse_db_time(r[k])
        return rows

    def _journal_rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.journal_path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True, timeout=5)
        try:
            return list(conn.execute(sql, args).fetchall())
        finally:
            conn.close()

    def journal_key(self, job_id: int) -> str:
        """The dedup key of the scan the bridge journalled as job ``job_id`` ("" if none): API jobs carry the
        key only as their Idempotency-Key, not in the jobs table."""
        rows = self._journal_rows("SELECT dedup_key FROM scans WHERE job_id = ?", (str(job_id),))
        return str(rows[0][0]) if rows else ""

    def journal_edges(self, since_s: float = 0.0) -> list[dict[str, Any]]:
        """Scan ends the bridge journalled since ``since_s``: IOC time stamp of the edge, outcome, dedup key."""
        rows = self._journal_rows("SELECT ioc_timestamp, at, outcome, scan_number, dedup_key, status FROM edges "
                                  "WHERE at >= ? ORDER BY id", (since_s,))
        return [dict(ioc_timestamp=r[0], at=r[1], outcome=r[2], scan_number=r[3], dedup_key=r[4], status=r[5])
                for r in rows]

    def stream_verdict(self, dedup_key: str, timeout_s: float = 60.0) -> str:
        """Wait until the bridge has decided a followed streaming scan for good (after its complete end): journal
        event ``stream_ended`` (the streaming job covers it) or ``stream_failed_batch`` (the batch job was queued);
        the one it journalled. A check that no more jobs come is decisive only after this."""
        verdicts = ("stream_ended", "stream_failed_batch")

        def decided() -> str:
            events = self.journal_events(dedup_key)
            return next((v for v in verdicts if v in events), "")

        return str(wait_for(decided, timeout_s, f"the bridge's verdict on {dedup_key}", interval_s=0.1))

    def journal_events(self, dedup_key: str) -> dict[str, float]:
        """The first time of each journal event kind for ``dedup_key`` (complete, file_complete, submitted)."""
        rows = self._journal_rows("SELECT kind, at FROM events WHERE dedup_key = ? ORDER BY id", (dedup_key,))
        out: dict[str, float] = {}
        for kind, at in rows:
            out.setdefault(str(kind), float(at))
        return out


_CREATE_USER = """
from django.contrib.auth import get_user_model
u, _ = get_user_model().objects.get_or_create(username={username!r})
u.set_password({password!r})
u.save()
"""

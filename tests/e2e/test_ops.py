"""Operations against a real production stack of its own (PostgreSQL, Redis, Daphne, a Dramatiq worker):
/livez and /readyz under each failure (Redis stopped or hung, PostgreSQL restarting, the worker stopped), the
worker container's healthcheck; /metrics and the worker's Dramatiq metrics scraped while a job runs, parsed by
prometheus_client, and every metric of the Grafana dashboard found in those scrapes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from epics_bridge.state import BridgeState
from tests.support import PostgresServer, RedisServer
from tests.support.net import free_port
from tests.support.services import PrerequisiteMissing
from tests.support.stack import ProductionStack, _last_token, small_sim_cmdstr
from tests.support.web import ApiClient, WebClient

pytestmark = [pytest.mark.services, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class OpsStack:
    postgres: PostgresServer
    redis: RedisServer
    stack: ProductionStack
    worker_metrics_port: int

    @property
    def web(self) -> WebClient:
        return WebClient(self.stack.base_url, timeout=10)

    def readyz(self) -> tuple[int, dict, float]:
        r = self.web.get("/readyz")
        return r.status, r.json(), r.seconds

    def wait_ready(self, timeout_s: float = 30) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            status, body, _ = self.readyz()
            if status == 200 and not body["degraded"]:
                return body
            assert time.monotonic() < deadline, f"not ready after {timeout_s} s: {body}"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    postgres, redis = PostgresServer(), RedisServer()
    try:
        postgres.start()
        redis.start()
    except PrerequisiteMissing as exc:
        pytest.fail(f"these tests need PostgreSQL and Redis: {exc}", pytrace=False)
    root = tmp_path_factory.mktemp("ops")
    stack = ProductionStack("ops", postgres.url("ptychopy"), redis.url(0), root)
    (root / "tmp").mkdir()
    stack.env.update({"PTYCHOPY_READYZ_REQUIRE": "database,broker,workers", "PTYCHOPY_HEARTBEAT_S": "1",
                      "TMPDIR": str(root / "tmp"), "PTYCHOPY_METRICS_TOKEN": "metrics-token-0123456789"})
    try:
        stack.setup()
        stack.add_user("olga", "olga-pw-12345")
        stack.start_web()
        port = free_port()  # the workers' Dramatiq metrics (the web process does not need the setting)
        stack.env.update({"PTYCHOPY_WORKER_METRICS_PORT": str(port), "dramatiq_prom_host": "127.0.0.1"})
        stack.start_worker(0)
        yield OpsStack(postgres, redis, stack, port)
    finally:
        stack.stop()
        redis.stop()
        postgres.stop()


def test_all_up_is_ready_fast_and_the_body_holds_no_secret(ops: OpsStack) -> None:
    body = ops.wait_ready()
    assert body["status"] == "ready" and body["mode"] == "production"
    checks = body["checks"]
    assert checks["broker"]["detail"] == "redis answers PING" and checks["database"]["detail"] == "postgresql answers"
    assert checks["workers"]["detail"].startswith("1 worker(s) alive") and checks["workers"]["required"]
    assert checks["bridges"] == {**checks["bridges"], "ok": True, "required": False, "detail": "no active bridge"}
    assert all(c["ms"] < 1000 for c in checks.values()), checks
    timings = sorted(ops.readyz()[2] for _ in range(20))
    print(f"\n/readyz, all up: median {timings[10] * 1000:.1f} ms, max {timings[-1] * 1000:.1f} ms over 20")
    text = ops.web.get("/readyz").text
    for secret in (ops.stack.env["SECRET_KEY"], ops.postgres.url("ptychopy"), "olga"):
        assert secret not in text
    assert ops.web.get("/livez").json() == {"status": "alive"}
    assert ops.web.get("/healthz").json()["checks"].keys() == checks.keys()


def test_redis_stopped_fails_the_broker_check_and_livez_still_answers(ops: OpsStack) -> None:
    ops.wait_ready()
    ops.redis.halt()
    try:
        status, body, took_s = ops.readyz()
        assert status == 503 and body["failed"] == ["broker"], body
        assert body["checks"]["broker"]["detail"].startswith("ConnectionError: "), body
        assert took_s < 1.5, f"/readyz took {took_s:.2f} s with Redis down"
        print(f"\n/readyz with Redis stopped: {took_s * 1000:.0f} ms")
        assert ops.web.get("/livez").status == 200
    finally:
        ops.redis.resume()
    ops.wait_ready()


def test_redis_hung_is_cut_at_the_time_limit(ops: OpsStack) -> None:
    ops.wait_ready()
    assert ops.redis.root is not None
    pid = int((ops.redis.root / "redis.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        status, body, took_s = ops.readyz()
        assert status == 503 and "broker" in body["failed"], body
        assert body["checks"]["broker"]["detail"] in ("no answer within 0.8 s",
                                                      "TimeoutError: Timeout reading from socket"), body
        assert took_s < 1.5, f"/readyz took {took_s:.2f} s with Redis hung"
        print(f"\n/readyz with Redis hung: {took_s * 1000:.0f} ms ({body['checks']['broker']['detail']})")
    finally:
        os.kill(pid, signal.SIGCONT)
    ops.wait_ready()


def test_postgres_down_fails_the_database_check(ops: OpsStack) -> None:
    ops.wait_ready()
    seen: list[tuple[int, dict, float]] = []
    restart = threading.Thread(target=ops.postgres.restart, kwargs={"down_s": 3.0})
    restart.start()
    try:
        deadline = time.monotonic() + 20
        while restart.is_alive() and time.monotonic() < deadline:
            status, body, took_s = ops.readyz()
            if "database" in body["failed"]:
                seen.append((status, body, took_s))
                break
            time.sleep(0.2)
    finally:
        restart.join(60)
    assert seen, "/readyz never reported the database down during a 3 s PostgreSQL outage"
    status, body, took_s = seen[0]
    assert status == 503 and took_s < 1.5, (status, took_s)
    print(f"\n/readyz with PostgreSQL down: {took_s * 1000:.0f} ms ({body['checks']['database']['detail']})")
    # the web's connection pool (PTYCHOPY_DB_POOL=1) waits for a connection: the time limit answers first
    detail = body["checks"]["database"]["detail"]
    assert detail.startswith("OperationalError") or detail == "no answer within 0.8 s", body
    ops.wait_ready()


def test_worker_stopped_fails_readiness_and_the_worker_healthcheck(ops: OpsStack) -> None:
    ops.wait_ready()
    env = dict(ops.stack.env)
    check = [sys.executable, str(REPO / "docker" / "healthcheck.py"), "worker"]
    alive = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert alive.returncode == 0, alive.stderr
    ops.stack.workers[0].stop()
    try:
        status, body, _ = ops.readyz()
        assert status == 503 and body["failed"] == ["workers"], body
        assert body["checks"]["workers"]["detail"].startswith("no worker heartbeat in the last 15 s"), body
        gone = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30, check=False)
        assert gone.returncode == 1 and "no worker heartbeat" in gone.stderr, gone
    finally:
        ops.stack.start_worker(0)
    ops.wait_ready()
    assert subprocess.run(check, env=env, capture_output=True, timeout=30, check=False).returncode == 0


# -- metrics -------------------------------------------------------------------------------------------------------
DASHBOARD = REPO / "docker" / "grafana" / "ptychopy-dashboard.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
                "bool", "le"}


def parse(text: str) -> tuple[set[str], dict[tuple[str, tuple], float]]:
    """(every metric name a scrape declares or samples, {(sample name, sorted labels): value})."""
    names: set[str] = set()
    values: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return names, values


def scrape_web(ops: OpsStack) -> str:
    r = ops.web.get("/metrics")
    assert r.status == 200, r.text[:300]
    return r.text


def scrape_worker(ops: OpsStack) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{ops.worker_metrics_port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges, strings and groupings removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group() in PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(m.group())
    return names


def test_metrics_while_a_job_runs_and_every_dashboard_metric_exists(ops: OpsStack) -> None:
    ops.wait_ready()
    api = ApiClient(ops.stack.base_url, ops.stack.users["olga"].token)
    # a bridge's real state (epics_bridge.state) published through the API with a bridge token
    bridge_api = ApiClient(ops.stack.base_url, _last_token(ops.stack.manage("create_token", "olga", "--bridge")))
    bridge = BridgeState("OPS-1", ("OPS:scan.BUSY",), roles={"OPS:scan.BUSY": "trigger"})
    bridge.pv_connection("OPS:scan.BUSY", True)
    bridge.scan_status("OPS-1:7", "7", "queued", "job 1", job_id="1")
    bridge.scan_status("OPS-1:8", "8", "not_queued", "aborted")
    bridge.count("missed_edges")
    assert bridge_api.post("/api/v1/bridges/status/", bridge.snapshot()).status == 200
    job_id = int(api.submit(small_sim_cmdstr(400, job_id="metrics"), label="metrics")["id"])
    deadline = time.monotonic() + 90
    while True:  # the worker's heartbeat carries its rate once the job has sent a frame
        names, web = parse(scrape_web(ops))
        rates = {labels: v for (name, labels), v in web.items() if name == "ptychopy_worker_iterations_per_second"}
        if any(v > 0 for v in rates.values()):
            break
        assert time.monotonic() < deadline, f"no iteration rate in /metrics after 90 s: {rates}"
        time.sleep(0.5)
    assert web[("ptychopy_jobs", (("state", "running"),))] == 1
    assert web[("ptychopy_workers_alive", ())] == 1
    worker = next(labels for labels, v in rates.items() if v > 0)
    assert web[("ptychopy_worker_busy", worker)] == 1
    assert web[("ptychopy_worker_frames_published_total", worker)] >= 1
    assert ("ptychopy_queue_messages", (("queue", "reconstruct"),)) in web
    assert all(v == 0 for (name, _), v in web.items() if name == "ptychopy_scrape_errors"), web
    # a live bridge beats every few seconds; waiting for the job's first frame can take longer than the 15 s after
    # which a silent bridge counts as crashed (on 2 loaded cores it did), so it beats once more before it is read
    bridge.heartbeat()
    assert bridge_api.post("/api/v1/bridges/status/", bridge.snapshot()).status == 200
    _, web = parse(scrape_web(ops))
    assert web[("ptychopy_bridge_scans", (("beamline", "OPS-1"), ("status", "queued")))] == 1
    assert web[("ptychopy_bridge_scans", (("beamline", "OPS-1"), ("status", "not_queued")))] == 1
    assert web[("ptychopy_bridge_events_total", (("beamline", "OPS-1"), ("event", "missed_edges")))] == 1
    assert web[("ptychopy_bridge_up", (("beamline", "OPS-1"), ("health", "ok")))] == 1
    bridge.heartbeat(running=False)  # stopped cleanly: /readyz leaves it alone for the tests after this one
    assert bridge_api.post("/api/v1/bridges/status/", bridge.snapshot()).status == 200
    while api.get(f"/api/v1/jobs/{job_id}/").json()["status"] != "done":
        assert time.monotonic() < deadline + 120, "the metrics job did not finish"
        time.sleep(0.5)
    worker_names, dramatiq = parse(scrape_worker(ops))
    done = [v for (name, labels), v in dramatiq.items()
            if name == "dramatiq_messages_total" and ("queue_name", "reconstruct") in labels]
    assert done and sum(done) >= 1, sorted(worker_names)
    assert not any(n.startswith("ptychopy_") for n in worker_names), "the worker port serves Dramatiq's only"
    scrape_s = sorted(ops.web.get("/metrics").seconds for _ in range(20))
    print(f"\n/metrics scrape: median {scrape_s[10] * 1000:.1f} ms, max {scrape_s[-1] * 1000:.1f} ms over 20")
    names, web = parse(scrape_web(ops))
    assert web[("ptychopy_jobs", (("state", "done"),))] >= 1
    assert any(name == "ptychopy_http_requests_total" and ("view", "readyz") in labels
               for name, labels in web), "the probes above were counted"

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 15
    used = set().union(*(metric_names(e) for e in exprs))
    missing = sorted(used - names - worker_names)
    assert not missing, f"the dashboard reads metrics no scrape has: {missing}"
    assert {"ptychopy_jobs", "dramatiq_messages_total", "ptychopy_http_request_duration_seconds_bucket"} <= used


def test_metrics_are_refused_to_other_addresses_without_the_token(ops: OpsStack) -> None:
    """127.0.0.2 is another client (the default allows 127.0.0.1 and ::1): 403, also with a forged
    X-Forwarded-For (no trusted proxy here); the token opens it; /livez stays open."""
    other = WebClient(ops.stack.base_url, timeout=10, source_ip="127.0.0.2")
    refused = other.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert refused.status == 403 and "PTYCHOPY_METRICS_ALLOW" in refused.text
    assert other.get("/metrics", headers={"Authorization": "Bearer not-it"}).status == 403
    token = ops.stack.env["PTYCHOPY_METRICS_TOKEN"]
    opened = other.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert opened.status == 200 and "ptychopy_jobs" in opened.text
    assert other.get("/livez").status == 200


# -- logs ----------------------------------------------------------------------------------------------------------
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ")
DRAMATIQ_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d ")


def run_one_job(ops: OpsStack, label: str) -> int:
    api = ApiClient(ops.stack.base_url, ops.stack.users["olga"].token)
    job_id = int(api.submit(small_sim_cmdstr(5, size=32, scan=4, job_id=label), label=label)["id"])
    deadline = time.monotonic() + 90
    while api.get(f"/api/v1/jobs/{job_id}/").json()["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} did not finish\n{ops.stack.logs()}"
        time.sleep(0.3)
    return job_id


def test_a_worker_prints_each_line_once(ops: OpsStack) -> None:
    """The duplicate of issue 19: a handler on 'webapp' printed each line, then Dramatiq's root handler again."""
    worker = ops.stack.workers[0]
    worker.stop()
    start = worker.log_path.stat().st_size
    ops.stack.start_worker(0)
    ops.wait_ready()
    job_id = run_one_job(ops, "plain-log")
    worker.stop()  # the lines are flushed; the next test starts its own worker
    text = worker.log_path.read_text(errors="replace")[start:]
    for event in ("GPU warm-up skipped", f"job {job_id} started (attempt 1)", f"job {job_id} ended: done after"):
        lines = [line for line in text.splitlines() if event in line]
        assert len(lines) == 1, f"{event!r} printed {len(lines)} times:\n" + "\n".join(lines)
        assert PLAIN_LINE.match(lines[0]), lines[0]


def test_json_logs_carry_the_job_and_the_user(ops: OpsStack) -> None:
    from tests.support.processes import worker as worker_process

    json_worker = worker_process("ops-json-worker", {**ops.stack.env, "PTYCHOPY_LOG_FORMAT": "json"})
    start = json_worker.log_path.stat().st_size if json_worker.log_path.exists() else 0
    json_worker.start()
    try:
        ops.wait_ready()
        job_id = run_one_job(ops, "json-log")
    finally:
        json_worker.stop()
        ops.stack.start_worker(0)
    text = json_worker.log_path.read_text(errors="replace")[start:]
    records = []
    for line in text.splitlines():
        assert not PLAIN_LINE.match(line) and not DRAMATIQ_LINE.match(line), f"a plain log line in JSON mode: {line}"
        if line.startswith("{"):
            records.append(json.loads(line))
    started = [r for r in records if r["message"] == f"job {job_id} started (attempt 1)"]
    assert len(started) == 1, started
    assert started[0]["job_id"] == job_id and started[0]["user"] == "olga" and started[0]["logger"] == \
        "webapp.jobs.runner" and started[0]["level"] == "INFO", started[0]
    ended = [r for r in records if r["message"].startswith(f"job {job_id} ended: done")]
    assert len(ended) == 1 and ended[0]["job_id"] == job_id
    assert any(r["logger"].startswith("dramatiq") for r in records), "Dramatiq's own lines are JSON too"
    assert all("job_id" not in r for r in records if r["logger"] == "webapp.worker"), "no job outside a job"
    keys = [(r["time"], r["logger"], r["message"]) for r in records]
    assert len(keys) == len(set(keys)), "a record printed twice"

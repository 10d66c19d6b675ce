"""Operations against a real production stack of its own (PostgreSQL, Redis, Daphne, a Dramatiq worker):
/livez and /readyz under each failure (Redis stopped or hung, PostgreSQL restarting, the worker stopped), the
worker container's healthcheck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import PostgresServer, RedisServer
from tests.support.services import PrerequisiteMissing
from tests.support.stack import ProductionStack
from tests.support.web import WebClient

pytestmark = [pytest.mark.services, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class OpsStack:
    postgres: PostgresServer
    redis: RedisServer
    stack: ProductionStack

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
                      "TMPDIR": str(root / "tmp")})
    try:
        stack.setup()
        stack.add_user("olga", "olga-pw-12345")
        stack.start_web()
        stack.start_worker(0)
        yield OpsStack(postgres, redis, stack)
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

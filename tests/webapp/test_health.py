"""/livez and /readyz in the embedded mode (SQLite, in-process broker): what each check reports, which decide,
the time limit per check. The production stack's failures (Redis, PostgreSQL, workers) are tests/e2e/test_health.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from webapp import health
from webapp.jobs.models import BridgeStatus, WorkerHeartbeat


def beat(age_s: float, wid: str = "elsewhere:1") -> None:
    WorkerHeartbeat.objects.create(worker_id=wid, host="elsewhere", pid=1,
                                   last_seen=timezone.now() - timedelta(seconds=age_s))


def test_livez_answers_without_touching_the_database(client) -> None:
    r = client.get("/livez")  # no django_db mark: any query would raise
    assert r.status_code == 200 and r.json() == {"status": "alive"}
    assert "no-cache" in r["Cache-Control"]


@pytest.mark.django_db(transaction=True)
def test_no_worker_is_reported_but_not_required_by_default(client) -> None:
    r = client.get("/readyz")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ready" and body["failed"] == []
    assert body["degraded"] == ["workers"]
    assert body["checks"]["database"] == {**body["checks"]["database"], "ok": True, "required": True}
    assert body["checks"]["broker"]["detail"] == "in-process (embedded mode)"
    assert body["checks"]["workers"]["required"] is False
    assert body["checks"]["workers"]["detail"] == "no worker heartbeat in the last 15 s"
    assert client.get("/healthz").json()["checks"].keys() == body["checks"].keys()


@pytest.mark.django_db(transaction=True)
def test_required_workers_decide_readiness(client, settings) -> None:
    settings.PTYCHOPY_READYZ_REQUIRE = ["database", "broker", "workers"]
    beat(40.0)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["failed"] == ["workers"]
    assert r.json()["checks"]["workers"]["detail"] == "no worker heartbeat in the last 15 s; newest heartbeat 40 s old"
    beat(1.0, "elsewhere:2")
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["workers"]["detail"].startswith("1 worker(s) alive")


@pytest.mark.django_db(transaction=True)
def test_a_crashed_bridge_is_named_and_a_stopped_one_is_not(client) -> None:
    now = time.time()
    pv = {"connected": True, "role": "trigger"}
    BridgeStatus.objects.create(beamline="2-ID", state={"running": True, "heartbeat_s": 1, "heartbeat_at": now - 60,
                                                        "pvs": {"T": pv}},
                                last_seen=timezone.now() - timedelta(seconds=60))
    BridgeStatus.objects.create(beamline="26-ID", state={"running": False, "pvs": {"T": pv}},
                                last_seen=timezone.now() - timedelta(seconds=600))
    body = client.get("/readyz").json()
    assert "bridges" in body["degraded"]
    detail = body["checks"]["bridges"]["detail"]
    assert detail.startswith("2-ID: crashed (no heartbeat for 60 s") and "26-ID" not in detail


def test_a_hung_check_is_cut_at_the_time_limit_and_not_started_twice(monkeypatch) -> None:
    release = threading.Event()

    def hangs() -> str:
        release.wait(10)
        return "late"

    monkeypatch.setitem(health.CHECKS, "database", hangs)
    try:
        t0 = time.monotonic()
        first = health.run_checks(("database",), 0.3)
        took_s = time.monotonic() - t0
        assert first["database"] == {"ok": False, "detail": "no answer within 0.3 s", "ms": first["database"]["ms"]}
        assert 0.25 < took_s < 0.6
        second = health.run_checks(("database",), 0.3)
        assert second["database"]["detail"] == "an earlier check has not finished yet (hung?)"
    finally:
        release.set()
    for _ in range(50):
        if "database" not in health._running:
            break
        time.sleep(0.05)
    monkeypatch.setitem(health.CHECKS, "database", lambda: "fine")
    assert health.run_checks(("database",), 0.3)["database"]["ok"]


def test_failure_reasons_carry_no_password() -> None:
    exc = ConnectionError("Error connecting to redis://default:s3cret-pw@cache:6379/0.\nmore")
    assert health.safe_reason(exc) == "ConnectionError: Error connecting to redis://default:***@cache:6379/0."


def test_an_unknown_required_check_stops_the_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["PTYCHOPY_READYZ_REQUIRE"] = "database,wokers"
    out = subprocess.run([sys.executable, "-c", "import webapp.settings"], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert ("PTYCHOPY_READYZ_REQUIRE: unknown check(s) wokers; choose from database, broker, workers, bridges"
            in out.stderr), out.stderr[-1500:]

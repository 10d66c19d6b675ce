"""Embedded mode end to end: ``python -m webapp.cli serve --demo`` on SQLite, nothing else running.

The demo job is running when the page first opens; a restart of the server loses no job.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core import signing
from django.core.signing import JSONSerializer

from tests.support.frames import collect_frames
from tests.support.net import free_port
from tests.support.processes import REPO, run_manage
from tests.support.stack import EmbeddedServer, _last_token, small_sim_cmdstr
from tests.support.web import ApiClient, WebClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOB_LINK = re.compile(r'href="/jobs/(\d+)/"')


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer("embedded", tmp_path / "home")
    try:
        server.start()
    except Exception as exc:
        pytest.fail(f"the embedded server did not start: {exc}", pytrace=False)
    yield server
    server.remove()


def test_demo_running_on_first_page_and_restart_loses_no_job(embedded: EmbeddedServer) -> None:
    username, password = embedded.demo_login()
    web = WebClient(embedded.base_url)
    web.login(username, password)

    page = web.get("/")
    assert page.status == 200, page
    ids = sorted({int(i) for i in JOB_LINK.findall(page.text)})
    assert ids, "the history shows no demo job when the page first opens"
    demo_id = ids[0]
    assert re.search(r'class="status status-(running|queued)"', page.text), (
        "the history shows no job running or queued (the demo's)")

    origin = embedded.base_url
    frames = asyncio.run(collect_frames(embedded.base_url, demo_id, web.cookie_header(), origin,
                                        min_frames=3, until_final=False, timeout=60))
    running = [f for f in frames if f.status == "running"]
    assert len({f.iteration for f in running}) >= 2, (
        f"the demo job is not visibly running: {[f.header for f in frames]}")

    token = _last_token(run_manage(embedded.env, "create_token", username))
    api = ApiClient(embedded.base_url, token)
    extra_ids = [int(api.submit(small_sim_cmdstr(8), label=f"emb-{i}")["id"]) for i in range(2)]
    before = {j: api.job(j)["status"] for j in [demo_id, *extra_ids]}
    listed_before = api.get("/api/v1/jobs/")
    assert listed_before.status == 200

    t0 = time.monotonic()
    stop_s = embedded.restart()
    restart_s = time.monotonic() - t0

    web = WebClient(embedded.base_url)
    web.login(username, password)
    after_page = web.get("/")
    after_ids = {int(i) for i in JOB_LINK.findall(after_page.text)}
    missing = {demo_id, *extra_ids} - after_ids
    assert not missing, f"jobs missing from the history after the restart: {missing}"

    # Stop the (long) demo so the queued jobs get the single in-process worker, then all must finish.
    resp = api.post(f"/api/v1/jobs/{demo_id}/cancel/")
    assert resp.status in (200, 202), resp
    for j in extra_ids:
        row = api.wait_status(j, {"done", "failed", "cancelled"}, timeout=120)
        assert row["status"] == "done", f"job {j} (was {before[j]} before the restart) ended {row}"
    print(f"embedded restart took {restart_s:.1f} s (stopping {stop_s:.1f} s); statuses before: {before}")
    assert stop_s < 10.0, f"Ctrl-C (SIGTERM) took {stop_s:.1f} s to stop the embedded server with a job running"

    # A crash (SIGKILL: power loss, OOM killer) mid-job loses nothing either: the job runs again after start-up.
    crash_id = int(api.submit(small_sim_cmdstr(400), label="emb-crash")["id"])
    frames = asyncio.run(collect_frames(embedded.base_url, crash_id, web.cookie_header(), origin,
                                        min_frames=2, until_final=False, timeout=60))
    assert any(f.status == "running" for f in frames), f"job {crash_id} never ran: {[f.header for f in frames]}"
    embedded.restart(crash=True)
    row = api.wait_status(crash_id, {"done", "failed", "cancelled"}, timeout=150)
    assert row["status"] == "done", f"the job running during the crash ended {row}"


def test_a_newcomers_first_job_does_not_wait_behind_the_demo(embedded: EmbeddedServer) -> None:
    """The demo (12,000 iterations, minutes) steps aside: a job submitted while it runs starts within a second or
    two, and the demo runs again after it."""
    from datetime import datetime

    username, _ = embedded.demo_login()
    api = ApiClient(embedded.base_url, _last_token(run_manage(embedded.env, "create_token", username)))
    demo_id = min(int(j["id"]) for j in api.get("/api/v1/jobs/").json()["results"])
    api.wait_status(demo_id, {"running"}, 60)
    job = api.submit(small_sim_cmdstr(20), label="newcomer")
    row = api.wait_status(job["id"], {"done", "failed", "cancelled"}, 60)
    assert row["status"] == "done", row
    waited_s = (datetime.fromisoformat(row["started"]) - datetime.fromisoformat(row["created"])).total_seconds()
    print(f"the newcomer's job waited {waited_s:.2f} s behind the running demo")
    assert waited_s < 3.0, f"the newcomer's job waited {waited_s:.1f} s behind the demo"
    demo = api.wait_status(demo_id, {"running"}, 30)
    assert demo["iterations"] == 12_000 and demo["status"] == "running"


# The key every embedded install used before finding 8 was fixed (it was in the source, hence public).
PUBLIC_FALLBACK_KEY = "ptychopy-embedded-insecure-key-set-SECRET_KEY-in-production"


def test_serving_on_a_network_address_is_safe(tmp_path: Path) -> None:
    """Finding 8: ``serve --host 0.0.0.0`` ran with DEBUG on and a fixed, public secret key."""
    server = EmbeddedServer("embedded-net", tmp_path / "home", demo=False, host="0.0.0.0")
    try:
        server.start()
        assert server.proc is not None
        assert "WARNING: serving the embedded mode on 0.0.0.0" in server.proc.log_text(), server.proc.log_tail()
        key_file = server.home / "secret_key"
        key = key_file.read_text().strip()
        assert len(key) >= 50 and key != PUBLIC_FALLBACK_KEY, "the embedded key is not this install's own"
        assert key_file.stat().st_mode & 0o077 == 0, f"{key_file} is readable by others"

        web = WebClient(server.base_url)
        missing = web.get("/no-such-page/")
        assert missing.status == 404, missing
        assert "DEBUG = True" not in missing.text and "URLconf" not in missing.text, "Django's debug page is served"
        assert web.get("/healthz", headers={"Host": "evil.example.com"}).status == 400, "a foreign Host was served"
        named = web.get("/healthz", headers={"Host": f"{socket.gethostname()}:{server.port}"})
        assert named.status == 200, f"the machine's own name is not among the allowed hosts: {named!r}"

        username, password = server.demo_login()
        web.login(username, password)
        # the server signed the session with the key in the data folder, not with the public one
        sessionid = web.cookie("sessionid")
        with sqlite3.connect(server.home / "ptychopy.sqlite3") as db:
            (data,) = db.execute("SELECT session_data FROM django_session WHERE session_key = ?",
                                 (sessionid,)).fetchone()
        salt = "django.contrib.sessions.SessionStore"
        session = signing.loads(data, key=key, salt=salt, serializer=JSONSerializer, fallback_keys=[])
        assert session.get("_auth_user_id"), session
        with pytest.raises(signing.BadSignature):
            signing.loads(data, key=PUBLIC_FALLBACK_KEY, salt=salt, serializer=JSONSerializer, fallback_keys=[])
        # the key is kept: a restart keeps the login
        server.restart()
        assert key_file.read_text().strip() == key
        page = web.get("/")
        assert page.status == 200 and username in page.text, f"the session ended with the restart: {page!r}"
    finally:
        server.remove()

    res = subprocess.run([sys.executable, "-m", "webapp.cli", "serve", "--host", "0.0.0.0", "--port",
                          str(free_port()), "--no-browser"], env=dict(server.env, DEBUG="1"), cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and "DEBUG=1 is refused with --host 0.0.0.0" in res.stderr, (res.returncode, res.stderr)

"""The embedded mode: demo login and job, the in-process worker started by the ASGI app, the launcher."""

import asyncio

import pytest
from webapp_helpers import small_parameters, wait_for

from webapp import cli, demo, worker
from webapp.jobs import embedded
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def home(settings, tmp_path):
    settings.PTYCHOPY_HOME = tmp_path / "home"
    return settings.PTYCHOPY_HOME


def test_demo_password_is_created_once_and_kept(home):
    user1, pw1 = demo.ensure_demo_user()
    user2, pw2 = demo.ensure_demo_user()
    assert user1 == user2 == "demo" and pw1 == pw2 and len(pw1) >= 10
    assert f"password={pw1}" in (home / "demo-login.txt").read_text()
    from django.contrib.auth import authenticate

    assert authenticate(username="demo", password=pw1) is not None


def test_demo_job_is_simulated_long_and_submitted_once(home, broker):
    demo.ensure_demo_user()
    params = demo.demo_parameters()
    assert params.data.simulate and params.reconstruction.iterations >= 5000
    step_px = params.experiment.step_m[0] / params.pixel_size_m
    assert abs(step_px - params.preprocessing.size_px / 10) < 1e-6
    first = demo.submit_demo_job()
    assert demo.submit_demo_job().pk == first.pk
    assert first.source == "demo" and first.owner.username == "demo"


def test_asgi_app_starts_the_embedded_worker_which_requeues_jobs(settings, broker):
    job = Job.objects.create(parameters=small_parameters(iterations=5).to_dict(), algorithm="ePIE",
                             status="running", worker="old-host:1")
    settings.PTYCHOPY_EMBEDDED_WORKER = True
    from webapp.asgi import application

    async def call_once():
        scope = {"type": "http", "method": "GET", "path": "/healthz", "query_string": b"",
                 "headers": [(b"host", b"127.0.0.1")]}
        sent = []
        requests = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            if requests:
                return requests.pop()
            await asyncio.sleep(3600)  # the client never disconnects; Django cancels this when done

        async def send(message):
            sent.append(message)

        await application(scope, receive, send)
        return sent, asyncio.get_running_loop()

    try:
        sent, loop = asyncio.run(call_once())
        assert sent[0]["status"] == 200
        assert embedded.worker_running() and embedded.server_loop() is loop
        wait_for(lambda: Job.objects.filter(pk=job.pk, status="done").exists(), timeout_s=60)
    finally:
        embedded.stop_worker()
        embedded.set_server_loop(None)
    assert not embedded.worker_running()


def test_launcher_arguments():
    args = cli.build_parser().parse_args(["serve", "--demo", "--no-browser", "--port", "8123"])
    assert (args.host, args.port, args.demo, args.no_browser) == ("127.0.0.1", 8123, True, True)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([])


def test_worker_command_line_is_one_process_one_thread_on_reconstruct():
    argv = worker.dramatiq_argv(["--verbose"])
    assert argv[:2] == ["dramatiq", "webapp.worker_boot"]
    assert argv[argv.index("--processes") + 1] == "1" and argv[argv.index("--threads") + 1] == "1"
    assert argv[argv.index("--queues") + 1] == "reconstruct" and argv[-1] == "--verbose"


def test_serve_as_a_process_prints_the_login_and_reports_a_busy_port(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env["PTYCHOPY_HOME"] = str(tmp_path / "home")
        proc = subprocess.run([sys.executable, "-m", "webapp.cli", "serve", "--port", str(port), "--no-browser"],
                              env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    password = (tmp_path / "home" / "demo-login.txt").read_text().split("password=")[1].strip()
    assert f"log in as: demo  password: {password}" in proc.stdout
    assert "is the port in use?" in proc.stderr
    assert (tmp_path / "home" / "ptychopy.sqlite3").is_file()


def test_worker_refuses_to_start_without_redis(capsys, monkeypatch):
    import os

    monkeypatch.setattr(os, "environ", dict(os.environ))  # main() sets dramatiq's prefetch variables
    assert worker.main([]) == 2
    assert "needs REDIS_URL" in capsys.readouterr().err


def test_reconciler_sends_jobs_queued_by_another_process_once(broker, settings):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.jobs.reconciler import broker_job_ids, reconcile_once
    from webapp.jobs.services import submit_job

    settings.PTYCHOPY_REQUEUE_AFTER_S = 3
    old = timezone.now() - timedelta(seconds=30)
    orphan = Job.objects.create(parameters=small_parameters().to_dict(), algorithm="ePIE", created=old)
    Job.objects.create(parameters=small_parameters().to_dict(), algorithm="ePIE")  # too young to judge
    with_message = submit_job(small_parameters())
    Job.objects.filter(pk=with_message.pk).update(created=old, enqueued_at=old)
    assert broker_job_ids(broker) == {with_message.pk}
    assert reconcile_once(broker).resent == [orphan.pk]
    assert broker_job_ids(broker) == {with_message.pk, orphan.pk}
    assert reconcile_once(broker).resent == []  # both have a message now
    broker.flush_all()  # the broker lost every message (a Redis restart without persistence)
    # the orphan's message was sent just now: not judged before 3 s; the other one's is 30 s old
    assert reconcile_once(broker).resent == [with_message.pk]
    broker.flush_all()
    Job.objects.filter(pk__in=[orphan.pk, with_message.pk]).update(enqueued_at=old)
    assert reconcile_once(broker).resent == [orphan.pk, with_message.pk]
    assert broker_job_ids(broker) == {with_message.pk, orphan.pk}

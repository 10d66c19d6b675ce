"""The bridge submitting over the JSON API (``[submit] kind = "http"``) to a live Django server on loopback:
a bridge token, the scan's Idempotency-Key, permanent refusals with the server's full reason, retries for
everything that is not the scan's fault, the state report, and no token in any log line or message."""

from __future__ import annotations

import http.server
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from worker_rig import Killed, LosesAnswer, Rig

from benchmarks.latency.procs import free_port
from epics_bridge import journal as jr
from epics_bridge.config import config_from_dict
from epics_bridge.http_submit import HttpSubmitter, SubmitUnavailable, idempotency_key
from epics_bridge.simdata import SimGeometry, write_scan_files
from epics_bridge.submit import SubmitRejected, SubmitRequest, load_submitter

pytestmark = pytest.mark.django_db(transaction=True)

GEOM = SimGeometry(rows=2, cols=3, size_px=16)
HTTP = {"kind": "http", "url": "http://127.0.0.1:1/", "token": "x", "initial_backoff_s": 0.5,
        "max_backoff_s": 1.0}


@pytest.fixture
def server(live_server, settings, tmp_path: Path) -> str:
    settings.PTYCHOPY_DATA_ROOTS = [tmp_path]
    settings.PTYCHOPY_RESULTS_DIR = tmp_path / "results"
    settings.PTYCHOPY_EMBEDDED_WORKER = False
    return str(live_server.url)


def new_token(username: str, *options: str) -> str:
    out = io.StringIO()
    call_command("create_token", username, *options, stdout=out)
    return out.getvalue().strip()


@pytest.fixture
def bridge_token() -> str:
    return new_token("bridge-bl", "--bridge", "--name", "BL bridge")


def scan_rig(tmp_path: Path, submitter: HttpSubmitter) -> Rig:
    write_scan_files(tmp_path, "scan7", GEOM)
    return Rig(tmp_path, submitter, submit=HTTP)


def test_a_scan_is_queued_once_over_the_api_and_a_resubmission_gets_the_same_job(server, bridge_token,
                                                                                  tmp_path: Path) -> None:
    from webapp.api.models import IdempotencyKey
    from webapp.jobs.models import Job

    submitter = HttpSubmitter(server, bridge_token)
    rig = scan_rig(tmp_path, submitter)
    rig.scan_ends()
    rig.run(2.0)
    key = f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    row = rig.journal.get(key)
    assert row is not None and row.status == jr.SUBMITTED, row
    job = Job.objects.get()
    assert row.job_id == str(job.pk) and job.source == "epics" and job.owner.username == "bridge-bl"
    assert job.label == "BL scan 7" and job.dedup_key is None
    assert job.provenance["reconstruction.iterations"]["source"] == "template"
    assert IdempotencyKey.objects.get().key == key
    # the answer was lost: the bridge sends the scan again (here without its provenance, as from an old journal)
    again = submitter.submit(SubmitRequest(job_params(job), key, "BL scan 7"))
    assert again == str(job.pk) and Job.objects.count() == 1


def job_params(job):
    from reconstruction import Parameters

    return Parameters.from_dict(job.parameters)


def test_a_refused_scan_is_recorded_with_the_servers_full_reason(server, settings, bridge_token,
                                                                 tmp_path: Path) -> None:
    from webapp.jobs.models import Job

    elsewhere = tmp_path / "other-root"
    elsewhere.mkdir()
    settings.PTYCHOPY_DATA_ROOTS = [elsewhere]  # the server cannot see the bridge's data folder
    rig = scan_rig(tmp_path, HttpSubmitter(server, bridge_token))
    rig.scan_ends()
    rig.run(2.0)
    row = rig.journal.get(f"BL:7:{tmp_path}/scan7_data_#06d.h5")
    assert row is not None and row.status == jr.REJECTED
    why = row.last_error
    assert "HTTP 400" in why and "data.file_pattern" in why and "outside the data folders" in why
    assert str(elsewhere) in why  # the whole reason, with the folders the server allows
    assert not Job.objects.exists()
    assert any("outside the data folders" in e["message"] for e in rig.state.snapshot()["errors"])


def test_a_wrong_token_keeps_the_scan_journalled_until_a_right_one_submits_it(server, bridge_token,
                                                                               tmp_path: Path, caplog) -> None:
    from webapp.jobs.models import Job

    caplog.set_level(logging.DEBUG)
    secret = "wrong-token-0123456789abcdef"
    rig = scan_rig(tmp_path, HttpSubmitter(server, secret))
    rig.scan_ends()
    rig.run(2.0)
    key = f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    row = rig.journal.get(key)
    assert row is not None and row.status == jr.SUBMITTING and row.attempts >= 2
    assert "HTTP 401" in row.last_error and "check [submit] token" in row.last_error
    assert not Job.objects.exists()
    seen = caplog.text + str(rig.state.snapshot()) + row.last_error + repr(rig.worker.submitter)
    assert secret not in seen
    # the operator fixes the token and restarts the bridge: the waiting scan goes through, once
    rig.journal.close()
    fixed = Rig(tmp_path, HttpSubmitter(server, bridge_token), submit=HTTP)
    fixed.run(1.0)
    row = fixed.journal.get(key)
    assert row is not None and row.status == jr.SUBMITTED and Job.objects.count() == 1


class _Answer503(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/moved/"):  # a proxy that sends http:// to https://
            self.send_response(301)
            self.send_header("Location", "https://ptycho.example.org/api/v1/jobs/")
            self.end_headers()
            return
        self.send_response(503)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>upstream restarting</html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy_503() -> Iterator[str]:
    """A real HTTP server on loopback that answers every POST with 503 (a proxy in front of a restarting app)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Answer503)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def test_an_unreachable_server_and_a_5xx_are_retried_not_refused(proxy_503, tmp_path: Path) -> None:
    from reconstruction import Parameters

    request = SubmitRequest(Parameters(), "BL:1:f", "BL scan 1")
    with pytest.raises(SubmitUnavailable, match="POST http://127.0.0.1:.*ConnectionRefusedError"):
        HttpSubmitter(f"http://127.0.0.1:{free_port()}", "t").submit(request)
    with pytest.raises(SubmitUnavailable, match="HTTP 503 .*upstream restarting"):
        HttpSubmitter(proxy_503, "t").submit(request)
    moved = r"HTTP 301 .*redirects to https://ptycho.example.org/.*set \[submit\] url"
    with pytest.raises(SubmitUnavailable, match=moved):
        HttpSubmitter(proxy_503 + "moved/", "t").submit(request)
    assert not issubclass(SubmitUnavailable, SubmitRejected)


def test_the_bridge_state_reaches_the_dashboard_over_the_api(server, bridge_token, user_token) -> None:
    from webapp.jobs.models import BridgeStatus

    state = {"beamline": "BL", "running": True, "pvs": {"BUSY": {"connected": True}}}
    with pytest.raises(SubmitUnavailable, match="HTTP 403 .*api.act_as_bridge"):
        HttpSubmitter(server, user_token).publish_state(state)
    HttpSubmitter(server, bridge_token).publish_state(state)
    row = BridgeStatus.objects.get(beamline="BL")
    assert row.state == state and row.age_s() < 30


@pytest.fixture
def user_token(django_user_model) -> str:
    django_user_model.objects.create_user("someone", password="pw-12345-xyz")
    return new_token("someone")


def test_an_http_config_takes_the_token_from_a_file_or_the_environment_and_never_shows_it(tmp_path: Path) -> None:
    from epics_bridge.config import load_config

    (tmp_path / "token").write_text("s3cret-token-from-file\n")
    (tmp_path / "token").chmod(0o600)
    raw = {"bridge": {"beamline": "BL", "journal": "j.sqlite3"},
           "trigger": {"kind": "sscan", "busy_pv": "BUSY", "message_pv": "SMSG"},
           "data": {"path_pv": "PATH", "name_pv": "NAME", "scan_number_pv": "NUM"},
           "parameters": {"template": "-size=16"},
           "submit": {"kind": "http", "url": "http://127.0.0.1:8000", "token_file": "token"}}
    config = config_from_dict(raw, base_dir=tmp_path)
    assert config.submit.token == "s3cret-token-from-file"
    assert "s3cret" not in repr(config) and "s3cret" not in repr(load_submitter(config.submit))
    assert isinstance(load_submitter(config.submit), HttpSubmitter)
    toml = tmp_path / "bridge.toml"
    toml.write_text('[bridge]\nbeamline = "BL"\njournal = "j.sqlite3"\n[trigger]\nkind = "sscan"\n'
                    'busy_pv = "BUSY"\nmessage_pv = "SMSG"\n[data]\npath_pv = "PATH"\nname_pv = "NAME"\n'
                    '[parameters]\ntemplate = "-size=16"\n[submit]\nkind = "http"\nurl = "http://127.0.0.1:8000"\n')
    from_env = load_config(toml, environ={"EPICS_BRIDGE__SUBMIT__TOKEN": "from-env"})
    assert from_env.submit.token == "from-env"
    (tmp_path / "empty").write_text("\n")
    raw["submit"]["token_file"] = "empty"
    with pytest.raises(ValueError, match="empty"):
        config_from_dict(raw, base_dir=tmp_path)


def test_a_long_scan_key_becomes_a_bounded_key_that_is_the_same_every_time() -> None:
    short = "BL:7:/data/scan7_data_#06d.h5"
    assert idempotency_key(short) == short
    long = "BL:7:/data/" + "deep/" * 60 + "scan7_\u00e9_#06d.h5"
    key = idempotency_key(long)
    assert key == idempotency_key(long) and len(key) <= 200 and key.isascii() and key.startswith("BL:7:/data/")
    assert key != idempotency_key(long.replace("scan7", "scan8"))


def test_a_bridge_that_submits_over_http_runs_without_django_installed(tmp_path: Path) -> None:
    """The controls host needs ``pip install ".[epics]"``, a URL and a token: the http path imports no Django."""
    import subprocess
    import sys

    (tmp_path / "token").write_text("0123456789abcdef0123\n")
    (tmp_path / "token").chmod(0o600)
    code = (
        "import sys\n"
        "sys.modules['django'] = None; sys.modules['webapp'] = None  # any import of them fails\n"
        "from epics_bridge.config import load_config\n"
        "from epics_bridge.bridge import Bridge\n"
        "from epics_bridge.submit import load_submitter\n"
        f"config = load_config({str(tmp_path / 'bridge.toml')!r}, environ={{}})\n"
        "print(type(load_submitter(config.submit)).__name__)\n"
    )
    (tmp_path / "bridge.toml").write_text(
        '[bridge]\nbeamline = "BL"\njournal = "j.sqlite3"\n[trigger]\nkind = "sscan"\nbusy_pv = "BUSY"\n'
        'message_pv = "SMSG"\n[data]\npath_pv = "PATH"\nname_pv = "NAME"\n[parameters]\ntemplate = "-size=16"\n'
        '[submit]\nkind = "http"\nurl = "http://127.0.0.1:8000/"\ntoken_file = "token"\n')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], check=False)
    assert out.returncode == 0 and out.stdout.strip() == "HttpSubmitter", out.stderr[-2000:]


def test_concurrent_repeats_of_one_scan_make_one_job(server, bridge_token, tmp_path: Path) -> None:
    """A bridge that timed out and sent the scan again while the first request was still being served: however
    the requests interleave, the unique (user, key) constraint leaves one job and every answer names it."""
    from reconstruction import Parameters
    from webapp.jobs.models import Job

    params = Parameters.from_cmdstr("./ptycho -simulate=1 -size=16 -scanDims=4,4 -i=2")
    request = SubmitRequest(params, "BL:7:/data/scan7_data_#06d.h5", "BL scan 7")
    barrier = threading.Barrier(6)
    answers: list[str] = []
    errors: list[BaseException] = []

    def send() -> None:
        barrier.wait(10)
        try:
            answers.append(HttpSubmitter(server, bridge_token, timeout_s=60).submit(request))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert Job.objects.count() == 1 and answers == [str(Job.objects.get().pk)] * 6


def test_a_bridge_killed_before_the_replacements_answer_gets_the_same_job_with_the_same_key(
        server, bridge_token, tmp_path: Path) -> None:
    """A streaming job fails while its scan acquires; the bridge journals its replacement (``key#restream``),
    sends it and dies before the answer; restarted, it sends the same Idempotency-Key and gets the same job."""
    from webapp.api.models import IdempotencyKey
    from webapp.jobs.models import Job

    stream = {"enabled": True, "values": {"data.live_stall_s": 60}}
    lost = LosesAnswer(HttpSubmitter(server, bridge_token), lambda r: r.dedup_key.endswith(jr.RESTREAM_SUFFIX))
    rig = Rig(tmp_path, lost, submit=HTTP, stream=stream)
    rig.value("BUSY", 1)
    rig.run(1.0)
    key = f"BL:7:{tmp_path}/scan7_data_#06d.h5"
    first = Job.objects.get()
    assert rig.journal.get(key).status == jr.WATCHING and rig.journal.get(key).job_id == str(first.pk)
    Job.objects.filter(pk=first.pk).update(status="failed", message="its worker h:1 stopped while streaming",
                                           live={"frames_received": 40})
    with pytest.raises(Killed):
        rig.run(2.0)
    replacement = Job.objects.exclude(pk=first.pk).get()
    assert replacement.parameters == first.parameters  # the same live file, from its first frame
    row = rig.journal.get(key)
    assert row.status == jr.SUBMITTING and row.restreams == 1 and row.job_id == ""
    rig.journal.close()
    rig = Rig(tmp_path, HttpSubmitter(server, bridge_token), submit=HTTP, stream=stream)
    rig.run(2.0)
    row = rig.journal.get(key)
    assert row.job_id == str(replacement.pk) and row.restreams == 1 and Job.objects.count() == 2
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == [key, key + jr.RESTREAM_SUFFIX]
    (said,) = rig.journal.events("stream_failed_during_scan")
    assert f"streaming job {first.pk} failed while scan 7 acquired, after 40 frames" in said["message"]

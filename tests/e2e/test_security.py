"""Security over real HTTP and websockets against the production stack (DEBUG off)."""

from __future__ import annotations

import asyncio
import html
import json
import os
import subprocess
import sys

import pytest
from websockets.exceptions import InvalidStatus, WebSocketException

from tests.support.frames import open_viewer
from tests.support.net import free_port
from tests.support.processes import REPO, cpu_seconds, daphne, run_manage
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient, Response, WebClient

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

DENIED = {401, 403}


def logged_in(stack: ProductionStack, user: User) -> WebClient:
    client = WebClient(stack.base_url)
    client.login(user.username, user.password)
    return client


def assert_login_redirect_or_denied(resp: Response, what: str) -> None:
    if resp.status in (302, 303):
        assert "/accounts/login/" in resp.location, f"{what}: redirected elsewhere: {resp.location}"
    else:
        assert resp.status in DENIED, f"{what}: expected a login redirect or 401/403, got {resp!r}"


@pytest.fixture
def alice_job(prod_stack: ProductionStack, alice: User) -> int:
    """A job of alice's (short; it may be queued, running or done when a test looks at it)."""
    job = ApiClient(prod_stack.base_url, alice.token).submit(small_sim_cmdstr(5), label="sec-alice")
    return int(job["id"])


def test_csrf_enforced_on_forms(prod_stack: ProductionStack, alice: User, alice_job: int) -> None:
    fresh = WebClient(prod_stack.base_url)
    fresh.get("/accounts/login/")
    resp = fresh.post_form("/accounts/login/", {"username": alice.username, "password": alice.password},
                           csrf=False)
    assert resp.status == 403, f"login without a CSRF token must be refused: {resp!r}"

    web = logged_in(prod_stack, alice)
    resp = web.post_form("/jobs/new/", {"cmdstr": small_sim_cmdstr(5)}, csrf=False)
    assert resp.status == 403, f"submit form without a CSRF token must be refused: {resp!r}"
    resp = web.post_form(f"/jobs/{alice_job}/cancel/", {}, csrf=False)
    assert resp.status == 403, f"cancel without a CSRF token must be refused: {resp!r}"
    resp = web.post_form(f"/jobs/{alice_job}/cancel/", {"csrfmiddlewaretoken": "x" * 64}, csrf=False)
    assert resp.status == 403, f"cancel with a forged CSRF token must be refused: {resp!r}"
    resp = web.post_form(f"/jobs/{alice_job}/delete/", {}, csrf=False)
    assert resp.status == 403, f"delete without a CSRF token must be refused: {resp!r}"
    row = ApiClient(prod_stack.base_url, alice.token).job(alice_job)
    assert row["status"] != "cancelled", f"a CSRF-less cancel took effect: {row}"


def test_login_required(prod_stack: ProductionStack, alice_job: int) -> None:
    anon = WebClient(prod_stack.base_url)
    anon.get("/accounts/login/")  # gets a CSRF cookie, so only the login is missing
    for path in ("/", "/jobs/new/", f"/jobs/{alice_job}/", "/dashboard/", f"/jobs/{alice_job}/download/h5/",
                 f"/jobs/{alice_job}/download/png/", f"/jobs/{alice_job}/clone/"):
        assert_login_redirect_or_denied(anon.get(path), f"anonymous GET {path}")
    for path in ("/jobs/new/", f"/jobs/{alice_job}/cancel/", f"/jobs/{alice_job}/delete/"):
        resp = anon.post_form(path, {"cmdstr": small_sim_cmdstr(5)})
        assert_login_redirect_or_denied(resp, f"anonymous POST {path}")

    for token in (None, "0" * 40, "not-a-token"):
        api = ApiClient(prod_stack.base_url, token)
        assert api.get("/api/v1/jobs/").status in DENIED, f"API list with token {token!r}"
        assert api.post("/api/v1/jobs/", {"cmdstr": small_sim_cmdstr(5)}).status in DENIED
        assert api.post(f"/api/v1/jobs/{alice_job}/cancel/").status in DENIED
    assert WebClient(prod_stack.base_url).get("/healthz").status == 200


def test_token_cannot_act_for_another_user(prod_stack: ProductionStack, alice: User, bob: User,
                                           carol: User) -> None:
    as_alice = ApiClient(prod_stack.base_url, alice.token)
    as_bob = ApiClient(prod_stack.base_url, bob.token)
    # A long job of alice's, so it is still cancellable while bob tries.
    job_id = int(as_alice.submit(small_sim_cmdstr(2000), label="sec-long")["id"])
    try:
        resp = as_bob.post(f"/api/v1/jobs/{job_id}/cancel/")
        assert resp.status in {403, 404}, f"bob's token cancelled alice's job: {resp!r}"
        assert as_alice.job(job_id)["status"] in {"queued", "running"}

        bob_web = logged_in(prod_stack, bob)
        resp = bob_web.post_form(f"/jobs/{job_id}/cancel/", {})
        assert resp.status in {403, 404}, f"bob's session cancelled alice's job: {resp!r}"
        resp = bob_web.post_form(f"/jobs/{job_id}/delete/", {})
        assert resp.status in {403, 404}, f"bob's session deleted alice's job: {resp!r}"
        assert as_alice.job(job_id)["status"] in {"queued", "running"}

        # A token's job belongs to the token's user: a payload cannot name another owner...
        resp = as_bob.post("/api/v1/jobs/", {"cmdstr": small_sim_cmdstr(3), "owner": alice.username,
                                             "owner_id": 1, "label": "sec-bob"})
        if resp.status != 400:  # (refusing the unknown field outright is fine too)
            assert resp.status in {200, 201, 202}, resp
            assert resp.json().get("owner") in {bob.username, {"username": bob.username}}, resp.json()
        resp = as_bob.post("/api/v1/jobs/", {"cmdstr": small_sim_cmdstr(3), "label": "sec-bob"})
        assert resp.status in {200, 201, 202}, resp
        bobs = resp.json()
        owner = bobs.get("owner")
        if isinstance(owner, dict):
            owner = owner.get("username")
        assert owner == bob.username, f"a job submitted with bob's token is owned by {owner!r}: {bobs}"
    finally:
        # The owner (or staff) may cancel: alice's own token does it here.
        resp = as_alice.post(f"/api/v1/jobs/{job_id}/cancel/")
        assert resp.status in {200, 202}, f"the owner could not cancel her job: {resp!r}"
    row = as_alice.wait_status(job_id, {"cancelled"}, timeout=60)
    assert row["status"] == "cancelled"

    # Staff may cancel anyone's job.
    other = int(as_bob.submit(small_sim_cmdstr(2000), label="sec-staff")["id"])
    resp = ApiClient(prod_stack.base_url, carol.token).post(f"/api/v1/jobs/{other}/cancel/")
    assert resp.status in {200, 202}, f"staff could not cancel: {resp!r}"
    assert as_bob.wait_status(other, {"cancelled"}, timeout=60)["status"] == "cancelled"


async def _ws_outcome(stack: ProductionStack, job_id: int, cookie: str | None, origin: str | None) -> str:
    """'accepted' when the socket opened and stayed open for a frame, else why it did not."""
    try:
        ws = await open_viewer(stack.base_url, job_id, cookie, origin, timeout=10)
    except InvalidStatus as exc:
        return f"rejected {exc.response.status_code}"
    except WebSocketException as exc:
        return f"rejected {type(exc).__name__}"
    try:
        msg = await asyncio.wait_for(ws.recv(), timeout=5)
        return "accepted" if msg else "accepted-empty"
    except WebSocketException as exc:
        return f"closed {type(exc).__name__}"
    except TimeoutError:
        return "accepted-silent"
    finally:
        await ws.close()


def test_websocket_origin_and_login_checked(prod_stack: ProductionStack, alice: User, alice_job: int) -> None:
    web = logged_in(prod_stack, alice)
    cookie = web.cookie_header()
    ApiClient(prod_stack.base_url, alice.token).wait_status(alice_job, {"running", "done"}, timeout=90)

    async def outcomes() -> dict[str, str]:
        return {
            "same origin": await _ws_outcome(prod_stack, alice_job, cookie, prod_stack.origin),
            "foreign origin": await _ws_outcome(prod_stack, alice_job, cookie, "http://evil.example.com"),
            "no origin": await _ws_outcome(prod_stack, alice_job, cookie, None),
            "anonymous": await _ws_outcome(prod_stack, alice_job, None, prod_stack.origin),
        }

    seen = asyncio.run(outcomes())
    print(f"websocket outcomes: {seen}")
    assert seen["same origin"] == "accepted", seen
    for case in ("foreign origin", "no origin", "anonymous"):
        assert not seen[case].startswith("accepted"), f"websocket with {case} was served: {seen}"


def test_typed_file_paths_confined_to_data_roots(prod_stack: ProductionStack, alice: User) -> None:
    root = prod_stack.data_root
    escape_link = root / "escape"
    if not escape_link.exists():
        os.symlink(prod_stack.outside_dir, escape_link)
    (prod_stack.outside_dir / "scan_1.h5").write_bytes(b"")
    bad_paths = [
        "/etc/passwd",
        f"{root}/../outside/scan_#.h5",
        "../../../../etc/passwd",
        f"{escape_link}/scan_#.h5",
    ]
    api = ApiClient(prod_stack.base_url, alice.token)
    for path in bad_paths:
        for flag in ("fp", "lf"):
            cmd = f"./ptycho -jobID=sec -{flag}={path} -size=64 -scanDims=10,10 -i=2"
            if flag == "lf":
                cmd += " -simulate=1"
            resp = api.post("/api/v1/jobs/", {"cmdstr": cmd})
            assert resp.status == 400, f"-{flag}={path} outside PTYCHOPY_DATA_ROOTS was accepted: {resp!r}"
            assert flag in resp.text, f"the error for -{flag}={path} names no flag: {resp.text[:500]}"

    # The job form: a typed path, in the command string or in its own field, gets an inline error.
    web = logged_in(prod_stack, alice)
    defaults = web.get("/jobs/new/").form("/jobs/new/")
    for fields, flag in (
        ({"cmdstr": "./ptycho -jobID=sec -fp=/etc/passwd -size=64 -i=2"}, "fp"),
        ({"experiment__positions_file": f"{root}/../outside/pos.csv"}, "lf"),
        ({"reconstruction__probe_guess": f"{escape_link}/probe.csv"}, "probeGuess"),
    ):
        resp = web.post_form("/jobs/new/", {**defaults, **fields})
        assert resp.status == 200, f"the form should re-render with an error for {fields}, got {resp!r}"
        errors = [html.unescape(e) for e in resp.field_errors()]
        assert any(flag in e and "outside" in e for e in errors), f"no inline error for {fields}: {errors}"
    # ... while a path inside a data root is not refused for where it is.
    inside = root / "scan" / "positions.csv"
    inside.parent.mkdir(exist_ok=True)
    inside.write_text("0,0\n")
    resp = web.post_form("/jobs/new/", {**defaults, "experiment__positions_file": str(inside)})
    errors = [html.unescape(e) for e in resp.field_errors()] if resp.status == 200 else []
    assert not any("outside" in e for e in errors), f"a path inside the data root was refused: {errors}"


def test_uploaded_file_names_cannot_escape_the_uploads_folder(prod_stack: ProductionStack, alice: User) -> None:
    uploads = prod_stack.root / "home" / "uploads"
    target = prod_stack.root / "escaped.csv"
    hostile = "../" * 12 + str(target).lstrip("/")
    web = logged_in(prod_stack, alice)
    defaults = web.get("/jobs/new/").form("/jobs/new/")
    positions = "\n".join(f"{r * 1e-7:.3e},{c * 1e-7:.3e}" for r in range(10) for c in range(10)).encode()
    resp = web.post_multipart("/jobs/new/", {**defaults, "cmdstr": small_sim_cmdstr(2), "label": "sec-upload"},
                              {"experiment__positions_file__upload": (hostile, positions)})
    assert resp.status in (302, 303), f"the upload form was not accepted: {resp.field_errors()}"
    assert not target.exists(), f"an uploaded file name escaped to {target}"
    stored = [p for p in prod_stack.root.rglob("escaped.csv")]
    for path in stored:
        assert uploads.resolve() in path.resolve().parents, f"an upload landed outside {uploads}: {path}"
    if resp.status in (302, 303):
        job_id = int(resp.location.rstrip("/").rsplit("/", 1)[-1])
        text = json.dumps(ApiClient(prod_stack.base_url, alice.token).job(job_id).get("parameters"))
        assert "escaped.csv" in text and "../" not in text, f"the job's upload path: {text[:400]}"
        assert stored, "the accepted upload was stored nowhere"


def test_production_settings_are_safe(prod_stack: ProductionStack, alice: User) -> None:
    """A second Daphne on the same database, configured exactly as production (no test-only cookie switch),
    asked as its TLS proxy asks (X-Forwarded-Proto: https); plain http is redirected to https."""
    env = {k: v for k, v in prod_stack.env.items() if k != "PTYCHOPY_INSECURE_COOKIES"}
    port = free_port()
    web_proc = daphne("prod-strict-daphne", port, env).start()
    tls = {"X-Forwarded-Proto": "https"}
    try:
        base = f"http://127.0.0.1:{port}"
        client = WebClient(base)
        plain = client.get("/accounts/login/")
        assert plain.status == 301 and plain.location.startswith("https://"), f"plain http: {plain!r}"
        page = client.get("/accounts/login/", headers=tls)
        assert page.status == 200, page
        hsts = page.headers.get("strict-transport-security", "")
        assert "max-age=31536000" in hsts and "includeSubDomains" in hsts, f"HSTS: {hsts!r}"
        csrf = [c for c in page.set_cookies if c.startswith("csrftoken=")]
        assert csrf and "secure" in csrf[0].lower(), f"the CSRF cookie is not Secure: {page.set_cookies}"
        # Plain http never sends a Secure cookie back, so hand it over as a TLS client would.
        token = client.cookie("csrftoken")
        resp = client.post_form("/accounts/login/", {"username": alice.username, "password": alice.password,
                                                     "csrfmiddlewaretoken": page.csrf_token()},
                                csrf=False, headers={"Cookie": f"csrftoken={token}",
                                                     "Referer": f"https://127.0.0.1:{port}/", **tls})
        assert resp.status == 302, f"login: {resp!r}"
        session = [c for c in resp.set_cookies if c.startswith("sessionid=")]
        assert session, f"no session cookie: {resp.set_cookies}"
        flags = session[0].lower()
        assert "secure" in flags and "httponly" in flags, f"the session cookie lacks Secure/HttpOnly: {session}"
        missing = client.get("/no-such-page/", headers=tls)
        assert missing.status == 404 and "DEBUG = True" not in missing.text, "DEBUG is on in production"
        foreign = client.get("/healthz", headers={"Host": "evil.example.com", **tls})
        assert foreign.status == 400, f"a Host outside ALLOWED_HOSTS was served: {foreign!r}"
    finally:
        web_proc.stop()

    bare = {k: v for k, v in prod_stack.env.items() if k != "SECRET_KEY"}
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        run_manage(bare, "check")


def test_behind_a_tls_proxy_and_the_container_healthcheck(prod_stack: ProductionStack) -> None:
    """ALLOWED_HOSTS without 127.0.0.1 and SECURE_SSL_REDIRECT on, as at a facility behind its TLS proxy:
    docker/healthcheck.py must still find the web healthy; plain http is redirected; a foreign Host refused."""
    env = {k: v for k, v in prod_stack.env.items() if k != "PTYCHOPY_INSECURE_COOKIES"}
    env.update(ALLOWED_HOSTS="ptycho.example.org", SECURE_SSL_REDIRECT="1")
    port = free_port()
    web_proc = daphne("prod-proxy-daphne", port, env).start()
    try:
        client = WebClient(f"http://127.0.0.1:{port}")
        plain = client.get("/healthz", headers={"Host": "ptycho.example.org"})
        assert plain.status == 301 and plain.location.startswith("https://ptycho.example.org/"), plain
        proxied = client.get("/healthz", headers={"Host": "ptycho.example.org", "X-Forwarded-Proto": "https"})
        assert proxied.status == 200, proxied
        assert client.get("/healthz").status == 400, "Host 127.0.0.1 is not in ALLOWED_HOSTS here"
        check = [sys.executable, str(REPO / "docker" / "healthcheck.py"), "web"]
        hc_env = dict(env, PTYCHOPY_HEALTHCHECK_URL=f"http://127.0.0.1:{port}/healthz")
        res = subprocess.run(check, env=hc_env, capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == 0, f"the web healthcheck failed on a healthy server: {res.stderr}"
    finally:
        web_proc.stop()
    res = subprocess.run(check, env=hc_env, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 1, "the web healthcheck passed with the server down"
    res = subprocess.run([sys.executable, str(REPO / "docker" / "healthcheck.py"), "worker"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, f"the worker healthcheck does not see the running worker: {res.stderr}"


def test_a_hostile_job_id_writes_nothing_outside_the_results(prod_stack: ProductionStack, alice: User) -> None:
    """Finding 1: -jobID=../../../outside/pwn (or absolute) was joined into the CSV export's path."""
    victim = prod_stack.outside_dir / "pwn_object_0.csv"
    victim.write_text("keep me\n")
    before = sorted(p.name for p in prod_stack.outside_dir.iterdir())
    api = ApiClient(prod_stack.base_url, alice.token)
    web = logged_in(prod_stack, alice)
    defaults = web.get("/jobs/new/").form("/jobs/new/")
    for job_id in ("../../../outside/pwn", str(prod_stack.outside_dir / "pwn"), "..", ".hidden"):
        resp = api.post("/api/v1/jobs/", {"cmdstr": f"{small_sim_cmdstr(2)} -jobID={job_id}"})
        assert resp.status == 400 and "-jobID" in resp.text, f"-jobID={job_id} was accepted: {resp!r}"
        resp = web.post_form("/jobs/new/", {**defaults, "cmdstr": f"{small_sim_cmdstr(2)} -jobID={job_id}"})
        errors = [html.unescape(e) for e in resp.field_errors()]
        assert resp.status == 200 and any("-jobID" in e for e in errors), f"form took -jobID={job_id}: {errors}"
    # A plain job ID still runs, and its CSV export lands inside the job's results folder.
    job = api.submit(f"{small_sim_cmdstr(2)} -jobID=scan_152.v2", label="sec-jobid")
    api.wait_status(job["id"], {"done"}, timeout=90)
    resp = web.get(f"/jobs/{job['id']}/download/csv/")
    assert resp.status == 200 and resp.body[:2] == b"PK", resp
    assert (prod_stack.results_dir / f"job_{job['id']}" / "export_csv" / "scan_152.v2_object_0.csv").is_file()
    assert sorted(p.name for p in prod_stack.outside_dir.iterdir()) == before
    assert victim.read_text() == "keep me\n"


def test_a_symlink_in_the_data_root_cannot_lead_a_job_outside(prod_stack: ProductionStack, alice: User) -> None:
    """Finding 6: -fp=link.h5, a symlink inside the data root to a file outside, was read by the worker."""
    secret = prod_stack.outside_dir / "secret.h5"
    secret.write_bytes(b"not for you")
    link = prod_stack.data_root / "link.h5"
    if not link.is_symlink():
        os.symlink(secret, link)
    api = ApiClient(prod_stack.base_url, alice.token)
    for flag in ("fp", "lf", "probeGuess", "objectGuess", "mask"):
        cmd = f"./ptycho -jobID=sec -size=64 -scanDims=10,10 -i=2 -{flag}=link.h5"
        if flag != "fp":
            cmd += " -simulate=1"
        resp = api.post("/api/v1/jobs/", {"cmdstr": cmd})
        assert resp.status == 400, f"-{flag}=link.h5 (a symlink out of the data root) was accepted: {resp!r}"
        problem = resp.json()["problems"][0]
        assert problem["flag"] == flag and "outside the data folders" in problem["message"], problem
        assert str(secret) in problem["message"], f"the error does not say where the link leads: {problem}"
    assert secret.read_bytes() == b"not for you"


def test_jobs_naming_no_data_or_a_missing_file_are_refused_at_submit(prod_stack: ProductionStack,
                                                                    alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    resp = api.post("/api/v1/jobs/", {"cmdstr": "./ptycho -size=64 -i=2"})
    assert resp.status == 400 and "-fp: no data named" in resp.text, resp
    missing = prod_stack.data_root / "nowhere" / "scan_000001.h5"
    resp = api.post("/api/v1/jobs/", {"cmdstr": "./ptycho -size=64 -i=2 -fp=nowhere/scan_#06d.h5 -fs=1"})
    assert resp.status == 400 and str(missing) in resp.text and "-fp" in resp.text, resp
    resp = api.post("/api/v1/jobs/", {"cmdstr": f"{small_sim_cmdstr(2)} -lf=nope.csv"})
    assert resp.status == 400 and str(prod_stack.data_root / "nope.csv") in resp.text, resp


def test_oversized_command_strings_and_bodies_cost_the_server_under_a_second(prod_stack: ProductionStack,
                                                                            alice: User) -> None:
    """Finding 9: a 2 MB command string took 56 s of CPU. Now: 64 KiB at most, read in linear time."""
    assert prod_stack.web is not None
    api = ApiClient(prod_stack.base_url, alice.token)
    worst = ("./ptycho " + " ".join(f"-zz{i}=1" for i in range(20000)))[:65536]
    cases = [
        ({"cmdstr": worst}, 400, "unknown parameter"),
        ({"cmdstr": "./ptycho -jobID=" + "a" * 2 * 2**20}, 400, "65,536"),
        ({"cmdstr": "./ptycho -fp='" + "a " * 2**20}, 400, "65,536"),
        ({"cmdstr": "x" * 4 * 2**20}, 413, "bytes the API accepts"),
    ]
    for body, status, text in cases:
        cpu0 = cpu_seconds(prod_stack.web.pid)
        resp = api.post("/api/v1/jobs/", body)
        cpu = cpu_seconds(prod_stack.web.pid) - cpu0
        print(f"{len(json.dumps(body))} byte body: {resp.status} in {resp.seconds:.3f} s, server CPU {cpu:.3f} s")
        assert resp.status == status and text in resp.text, resp
        assert resp.headers.get("content-type") == "application/json", f"not JSON: {resp!r}"
        assert cpu < 1.0, f"the server spent {cpu:.2f} s of CPU on one bad request"

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
from tests.support.processes import REPO, daphne, run_manage
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
    """A second Daphne on the same database, configured exactly as production (no test-only cookie switch)."""
    env = {k: v for k, v in prod_stack.env.items() if k != "PTYCHOPY_INSECURE_COOKIES"}
    port = free_port()
    web_proc = daphne("prod-strict-daphne", port, env).start()
    try:
        base = f"http://127.0.0.1:{port}"
        client = WebClient(base)
        page = client.get("/accounts/login/")
        assert page.status == 200, page
        csrf = [c for c in page.set_cookies if c.startswith("csrftoken=")]
        assert csrf and "secure" in csrf[0].lower(), f"the CSRF cookie is not Secure: {page.set_cookies}"
        # Plain http never sends a Secure cookie back, so hand it over as a TLS client would.
        token = client.cookie("csrftoken")
        resp = client.post_form("/accounts/login/", {"username": alice.username, "password": alice.password,
                                                     "csrfmiddlewaretoken": page.csrf_token()},
                                csrf=False, headers={"Cookie": f"csrftoken={token}"})
        assert resp.status == 302, f"login: {resp!r}"
        session = [c for c in resp.set_cookies if c.startswith("sessionid=")]
        assert session, f"no session cookie: {resp.set_cookies}"
        flags = session[0].lower()
        assert "secure" in flags and "httponly" in flags, f"the session cookie lacks Secure/HttpOnly: {session}"
        missing = client.get("/no-such-page/")
        assert missing.status == 404 and "DEBUG = True" not in missing.text, "DEBUG is on in production"
        foreign = client.get("/healthz", headers={"Host": "evil.example.com"})
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

"""``ptychopy serve --bridge CONFIG``, run as the real command: the option is in ``serve --help``; a bad
configuration is one line on stderr naming the file and the problem, exit status 2, no traceback and no web server;
the bridge's log lines (INFO and the WARNING about PVs that do not connect) reach the server's output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bridge_harness import REPO, CaLoopback, bridge_config

from benchmarks.latency.procs import free_port, wait_for
from tests.support.processes import app_env

pytestmark = [pytest.mark.epics]


def serve_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ptychopy", "serve", "--host", "127.0.0.1", "--no-browser", *args]


def run_serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = app_env({"PTYCHOPY_HOME": str(tmp_path / "home"), **(env or {})})
    return subprocess.run(serve_argv("--port", str(free_port()), *args), env=full_env, cwd=REPO, text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_serve_help_lists_the_bridge_option() -> None:
    res = subprocess.run([sys.executable, "-m", "ptychopy", "serve", "--help"], cwd=REPO, text=True,
                         capture_output=True, timeout=60, env=app_env(), check=False)
    assert res.returncode == 0, res.stderr
    assert "--bridge CONFIG" in res.stdout and "EPICS bridge" in res.stdout


@pytest.mark.parametrize("problem,expected", [
    ("unknown-kind", "[trigger] kind: expected one of sscan, areadetector"),
    ("missing-file", "cannot read the configuration"),
    ("not-toml", "not valid TOML"),
])
def test_a_bad_bridge_config_stops_serve_with_one_line_and_status_2(tmp_path: Path, problem: str,
                                                                    expected: str) -> None:
    cfg = bridge_config(tmp_path, tmp_path / "rec.jsonl")
    if problem == "unknown-kind":
        cfg.write_text(cfg.read_text().replace('kind = "sscan"', 'kind = "nope"'))
    elif problem == "missing-file":
        cfg = tmp_path / "no-such.toml"
    else:
        cfg.write_text("[bridge\nbeamline = 1\n")
    res = run_serve(tmp_path, "--bridge", str(cfg))
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"ptychopy serve: --bridge: {cfg}: "), lines[0]
    assert expected.lower() in lines[0].lower(), lines[0]
    assert "listening on" not in res.stdout


def test_a_bridge_that_cannot_start_stops_serve_with_one_line_and_status_2(tmp_path: Path) -> None:
    cfg = bridge_config(tmp_path, tmp_path / "rec.jsonl")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the journal's directory should be")
    cfg.write_text(cfg.read_text().replace('journal = "journal.sqlite3"', f'journal = "{blocker}/journal.sqlite3"'))
    res = run_serve(tmp_path, "--bridge", str(cfg))
    lines = [line for line in res.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "listening on" not in res.stdout
    assert len(lines) == 1 and lines[0].startswith(f"ptychopy serve: --bridge {cfg}: the bridge cannot start:")
    assert str(blocker) in lines[0]


def test_the_bridges_log_lines_reach_the_server_output(tmp_path: Path) -> None:
    """Against an unreachable IOC (nothing on the port): the start line at INFO, then within 5 s one WARNING
    naming every PV, then the stop line after SIGTERM."""
    ca = CaLoopback(tmp_path)
    cfg = bridge_config(tmp_path, tmp_path / "unused.jsonl", django=True)  # jobs go to this server's database
    out = tmp_path / "serve.log"
    env = ca.env()
    env.update(app_env({"PTYCHOPY_HOME": str(tmp_path / "home"), "PATH": env["PATH"]}))
    port = free_port()
    with out.open("wb") as log:
        proc = subprocess.Popen(serve_argv("--port", str(port), "--bridge", str(cfg)), env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def start_line() -> float | None:
            assert proc.poll() is None, f"serve exited ({proc.returncode}):\n{out.read_text()[-3000:]}"
            return time.monotonic() if "EPICS bridge for TEST" in out.read_text() else None

        started = wait_for(start_line, 90, "the bridge's start line in the server output")
        assert f"listening on http://127.0.0.1:{port}/" in wait_for(
            lambda: "listening on" in out.read_text() and out.read_text(), 30, "the server to listen")
        text = wait_for(lambda: "PVs connected after" in out.read_text() and out.read_text(), 10,
                        "the bridge's WARNING about PVs")
        warned = time.monotonic()
        assert warned - started < 5.0, f"the WARNING came {warned - started:.1f} s after the start"
        (line,) = [ln for ln in text.splitlines() if "PVs connected after" in ln]
        assert " WARNING epics_bridge.worker: none of 12 PVs connected after 3 s (IOC unreachable?" in line
        assert "ptysim:scan2.BUSY" in line and "ptysim:energy" in line
        assert " INFO epics_bridge.bridge: EPICS bridge for TEST: sscan trigger, 12 PVs" in text
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert "EPICS bridge stopped" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ca.end_repeaters()

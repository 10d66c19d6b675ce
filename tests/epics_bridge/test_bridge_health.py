"""``python -m epics_bridge health``: the bridge container's healthcheck, from the state file's heartbeat, against
a real bridge process on a simulated IOC (Channel Access on loopback)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bridge_harness import REPO

from epics_bridge.health import verdict

pytestmark = pytest.mark.epics


def health(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "epics_bridge", "health", "--config", str(config), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def test_health_follows_a_real_bridge_through_start_clean_stop_and_kill(sim, make_bridge) -> None:
    bridge = make_bridge()
    ok = health(bridge.config)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("healthy: bridge TEST: heartbeat ") and " PVs connected" in ok.stdout

    bridge.stop(signal.SIGTERM)
    stopped = health(bridge.config)
    assert stopped.returncode == 1 and "unhealthy: bridge TEST stopped" in stopped.stderr, stopped

    bridge.start()
    assert health(bridge.config).returncode == 0
    bridge.kill()  # no clean stop: the heartbeat just ages
    killed_at = time.monotonic()
    while (dead := health(bridge.config, "--max-age-s", "2")).returncode == 0:
        assert time.monotonic() - killed_at < 10, "a killed bridge still counts as healthy after 10 s"
        time.sleep(0.3)
    assert "no heartbeat for" in dead.stderr and "(limit 2.0 s)" in dead.stderr, dead.stderr


def test_health_names_what_is_missing(tmp_path: Path) -> None:
    missing = health(tmp_path / "nope.toml")
    assert missing.returncode == 1 and "nope.toml: cannot read the configuration" in missing.stderr
    config = tmp_path / "bridge.toml"
    config.write_text('[bridge]\nbeamline = "BL"\njournal = "j.sqlite3"\n[trigger]\nkind = "sscan"\n'
                      'busy_pv = "BUSY"\nmessage_pv = "SMSG"\n[data]\npath_pv = "PATH"\nname_pv = "NAME"\n'
                      '[parameters]\ntemplate = "-size=16"\n[submit]\nkind = "callable"\ntarget = "x:y"\n')
    no_state = health(config)
    assert no_state.returncode == 1 and "state_file is not set" in no_state.stderr, no_state.stderr
    config.write_text(config.read_text().replace('journal = "j.sqlite3"', 'journal = "j.sqlite3"\n'
                                                 'state_file = "state.json"'))
    never = health(config)
    assert never.returncode == 1 and "no readable state file" in never.stderr, never.stderr


def test_default_limit_is_three_heartbeats_but_at_least_five_seconds() -> None:
    now = 1000.0
    slow = {"beamline": "B", "heartbeat_s": 4.0, "heartbeat_at": now - 11.0, "running": True}
    assert verdict(slow, None, now)[0] and not verdict(dict(slow, heartbeat_at=now - 12.5), None, now)[0]
    fast = {"beamline": "B", "heartbeat_s": 0.5, "heartbeat_at": now - 4.0, "running": True}
    assert verdict(fast, None, now)[0] and not verdict(dict(fast, heartbeat_at=now - 5.5), None, now)[0]

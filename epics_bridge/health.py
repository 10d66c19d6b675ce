"""``python -m epics_bridge health --config FILE`` (or ``ptychopy bridge health``): is the bridge alive?

Reads the state file the running bridge writes (``[bridge] state_file``) and exits 0 when its heartbeat is
younger than ``--max-age-s`` (default three of the bridge's ``heartbeat_s``, at least 5 s) and it has not
stopped; 1 otherwise, with one line naming why. No network, no Django, no web port: the container healthcheck of
a bridge in its own process. PVs that are down are reported on the line but do not fail it (the IOC's fault,
not the bridge's; the web's ``/readyz`` reports them under ``bridges``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from .config import ConfigError, config_from_arg
from .state import read_state

MIN_MAX_AGE_S = 5.0


def verdict(state: dict[str, Any] | None, max_age_s: float | None, now_s: float) -> tuple[bool, str]:
    """``(healthy, line)`` for a state read from the state file (None: none there)."""
    if state is None:
        return False, "no readable state file (the bridge has not started, or cannot write it)"
    beamline = state.get("beamline", "?")
    if not state.get("running", True):
        return False, f"bridge {beamline} stopped (pid {state.get('pid')})"
    limit_s = max_age_s if max_age_s is not None else max(MIN_MAX_AGE_S, 3 * float(state.get("heartbeat_s") or 0))
    age_s = now_s - float(state.get("heartbeat_at") or 0)
    pvs = state.get("pvs") or {}
    connected = sum(1 for pv in pvs.values() if pv.get("connected"))
    tail = f"pid {state.get('pid')}, {connected} of {len(pvs)} PVs connected"
    if age_s > limit_s:
        return False, f"bridge {beamline}: no heartbeat for {age_s:.1f} s (limit {limit_s:.1f} s), {tail}"
    return True, f"bridge {beamline}: heartbeat {age_s:.1f} s old (limit {limit_s:.1f} s), {tail}"


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 (healthy) or 1 (unhealthy or no usable configuration), with one line on stdout/stderr."""
    p = argparse.ArgumentParser(prog="ptychopy bridge health", description="Exit 0 when the bridge of this "
                                "configuration beats (its state file's heartbeat), 1 otherwise.")
    p.add_argument("-c", "--config", default=os.environ.get("EPICS_BRIDGE_CONFIG", ""),
                   help="TOML configuration (default: $EPICS_BRIDGE_CONFIG); names the state file")
    p.add_argument("--max-age-s", type=float, default=None,
                   help="oldest acceptable heartbeat (default: 3 x the bridge's heartbeat_s, at least 5 s)")
    args = p.parse_args(argv)
    try:
        config = config_from_arg(args.config)
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if config.state_path is None:
        print(f"unhealthy: {args.config}: [bridge] state_file is not set, so the bridge writes no heartbeat to "
              "check (set it, or EPICS_BRIDGE__BRIDGE__STATE_FILE)", file=sys.stderr)
        return 1
    healthy, line = verdict(read_state(config.state_path), args.max_age_s, time.time())
    print(("healthy: " if healthy else "unhealthy: ") + line, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1

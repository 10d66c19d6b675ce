"""Command lines: ``ptychopy bridge`` / ``python -m epics_bridge`` (:func:`main`; ``... health`` is
:mod:`epics_bridge.health`) and ``ptychopy simioc`` (:func:`simioc_main`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import ConfigError, config_from_arg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptychopy bridge", description="EPICS bridge: queue the reconstruction of "
                                "every completed scan (see docs/epics_bridge.md).")
    p.add_argument("-c", "--config", default=os.environ.get("EPICS_BRIDGE_CONFIG", ""),
                   help="TOML configuration (default: $EPICS_BRIDGE_CONFIG)")
    p.add_argument("--check", action="store_true", help="validate the configuration, list the PVs and exit")
    p.add_argument("--log-level", default=os.environ.get("EPICS_BRIDGE_LOG_LEVEL", "INFO"),
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["health"]:  # the container healthcheck: the state file's heartbeat (epics_bridge.health)
        from .health import main as health_main

        return health_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s epics_bridge %(levelname)s %(name)s: %(message)s")
    for noisy in ("h5py", "hdf5plugin", "caproto"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, getattr(logging, args.log_level)))
    try:
        config = config_from_arg(args.config)
    except ConfigError as exc:
        if not args.config:
            parser.print_usage(sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"beamline {config.beamline}: {config.trigger.kind} trigger, journal {config.journal_path}")
        for pv in config.pvs:
            print(f"  {pv}")
        print(f"template: {config.template.to_cmdstr()}")
        sub = config.submit
        print(f"submit: {sub.kind}" + (f" to {sub.url} (API token of {len(sub.token)} characters)"
                                       if sub.kind == "http" else ""))
        return 0
    from .bridge import run_forever

    try:
        return run_forever(config)
    except ConfigError as exc:  # found while the bridge starts, e.g. a submitter a streaming bridge cannot use
        print(f"error: {config.source or args.config}: {exc}", file=sys.stderr)
        return 2


def simioc_main(argv: list[str] | None = None) -> int:
    from .simioc import main as run_simioc

    return run_simioc(argv)

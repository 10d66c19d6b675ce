"""``python -m benchmarks.latency.embedded_serve --port P [--bridge CONFIG] [--no-stamp]``: the embedded mode.

``ptychopy serve`` (``webapp.cli.serve``: SQLite, in-process Dramatiq worker, in-memory channel layer, Daphne)
with the EPICS bridge started in the same process, as docs/epics_bridge.md describes the embedded option
(``Bridge(load_config(path)).start()``; ``DjangoSubmitter`` then calls ``submit_job`` in this process, so the
job reaches the in-process StubBroker). ``serve`` has no option for this yet (see README, proposed changes);
a bridge in *another* process would enqueue into its own in-memory broker and the job would wait for the
next server start. With ``--no-stamp`` the frame hook is not installed.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bridge", default="", help="bridge TOML configuration to run in this process")
    p.add_argument("--no-stamp", action="store_true")
    args = p.parse_args(argv)
    if not args.no_stamp:
        from . import hooks

        hooks.install()
    bridge = None
    if args.bridge:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from epics_bridge.bridge import Bridge
        from epics_bridge.config import load_config

        bridge = Bridge(load_config(args.bridge))
        bridge.start()
    from webapp.cli import main as cli_main

    try:
        return cli_main(["serve", "--host", "127.0.0.1", "--port", str(args.port), "--no-browser"])
    finally:
        if bridge is not None:
            bridge.stop()


if __name__ == "__main__":
    sys.exit(main())

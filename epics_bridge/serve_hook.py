"""The bridge inside ``ptychopy serve --bridge CONFIG`` (the embedded server): the entry point ``epics`` of the
group ``ptychopy.serve_bridge`` (pyproject.toml), which the ``ptychopy`` command hands the web server.

The web server (``webapp.cli``) never imports the bridge, and the ``ptychopy`` package names neither: this module
checks the configuration when the server parses ``--bridge`` and returns the hook that starts the bridge once the
web side is up.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from .bridge import Bridge
from .config import ConfigError, load_config


def bridge_hook(config_path: str, startup_error: type[Exception]) -> Callable[[], Callable[[], None]]:
    """Read and check the configuration at ``config_path`` now (raising ``startup_error`` with one line naming the
    file and the problem) and return the hook that starts the bridge, with the bridge's log lines sent to this
    process's output; the hook returns the bridge's stop function."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:  # its message starts with the file's name
        where = "" if str(config_path) in str(exc) else f" {config_path}"
        raise startup_error(f"--bridge{where}: {exc}") from None

    def start_bridge() -> Callable[[], None]:
        log_to_output("epics_bridge")
        try:
            bridge = Bridge(config)
            bridge.start()
        except Exception as exc:  # e.g. a journal it cannot open, a submitter it cannot import
            raise startup_error(f"--bridge {config_path}: the bridge cannot start: "
                                f"{type(exc).__name__}: {exc}") from None
        return bridge.stop

    return start_bridge


def log_to_output(logger_name: str) -> None:
    """Send ``logger_name``'s records (INFO and up, or ``$PTYCHOPY_LOG_LEVEL``) to stderr, where the server
    prints its own; without this only WARNINGs reach the output (Python's last-resort handler)."""
    logger = logging.getLogger(logger_name)
    if logging.getLogger().handlers:
        return  # Django's LOGGING (webapp.logs) prints every logger once, in its format (plain or JSON)
    if any(getattr(h, "_ptychopy_output", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._ptychopy_output = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("PTYCHOPY_LOG_LEVEL", "INFO").upper())
    logger.propagate = False

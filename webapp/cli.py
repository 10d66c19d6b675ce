"""``ptychopy serve``: the embedded web application in one process (Daphne + an in-process worker).

``ptychopy serve [--host 127.0.0.1] [--port 8000] [--demo] [--no-browser] [--bridge CONFIG]`` migrates the
database, creates the demo login (printed; the password is kept in ``$PTYCHOPY_HOME/demo-login.txt``),
re-queues unfinished jobs, starts the worker thread and serves HTTP and websockets until Ctrl-C.

``--bridge CONFIG`` also runs the EPICS bridge in this process. This package does not import the bridge (imports
point down): the ``ptychopy`` command calls :func:`serve_command` (its entry point) with the bridge's factory
(``epics_bridge.serve_hook``, found through its own entry point), which reads the configuration at
once (before anything else starts) and returns the startup hook that starts the bridge. A bad configuration, or a
bridge that cannot start, raises :class:`StartupError`: ``serve`` prints its one line and exits with status 2
without starting the web server (a site that runs without the bridge it was asked for would look healthy while
no scan is queued).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable, Sequence

StartupHook = Callable[[], Callable[[], None]]  # starts something; returns its stop function
EXIT_BAD_STARTUP = 2


class StartupError(Exception):
    """A startup hook (or its configuration) cannot work; the message is one line naming what and where."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptychopy", description="ptychopy web application")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the web application (embedded mode unless DATABASE_URL/REDIS_URL)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--demo", action="store_true", help="start a simulated demo reconstruction")
    serve.add_argument("--no-browser", action="store_true", help="do not open a browser")
    serve.add_argument("--bridge", metavar="CONFIG", default="",
                       help="also run the EPICS bridge in this process with this TOML configuration (see "
                            "docs/epics_bridge.md); its log lines appear in this output. A bad configuration "
                            "stops serve at once with exit status 2 and a one-line error")
    return parser


def main(argv: list[str] | None = None, startup_hooks: Sequence[StartupHook] = (),
         bridge_factory: Callable[[str], StartupHook] | None = None) -> int:
    """``startup_hooks``: callables run once Django and the worker are up; each returns its stop function.
    ``bridge_factory(config_path)`` checks a ``--bridge`` configuration and returns the hook that starts the
    bridge (the ``ptychopy`` command passes it); it raises :class:`StartupError` for a bad configuration."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        return 2
    hooks = list(startup_hooks)
    if args.bridge:
        if bridge_factory is None:
            parser.error("--bridge needs the EPICS bridge: run it as `ptychopy serve --bridge CONFIG`")
        try:
            hooks.append(bridge_factory(args.bridge))
        except StartupError as exc:
            print(f"ptychopy serve: {exc}", file=sys.stderr)
            return EXIT_BAD_STARTUP
    return serve(args.host, args.port, demo=args.demo, open_browser=not args.no_browser, startup_hooks=hooks)


def serve_command(argv: list[str],
                  make_bridge_factory: Callable[[type[Exception]], Callable[[str], StartupHook]] | None = None) -> int:
    """``ptychopy serve ARGS``: the entry point ``serve`` of the group ``ptychopy.commands`` (pyproject.toml).
    ``make_bridge_factory(StartupError)`` gives the ``bridge_factory`` of :func:`main` (the ``ptychopy`` command
    passes one that finds the bridge through its own entry point)."""
    factory = make_bridge_factory(StartupError) if make_bridge_factory is not None else None
    return main(["serve", *argv], bridge_factory=factory)


def _start_all(hooks: Sequence[StartupHook]) -> list[Callable[[], None]]:
    """Run the startup hooks in order; when one raises :class:`StartupError` stop those already started and
    raise it again."""
    stops: list[Callable[[], None]] = []
    try:
        for hook in hooks:
            stops.append(hook())
    except StartupError:
        for stop in reversed(stops):
            stop()
        raise
    return stops


def serve(host: str, port: int, *, demo: bool = False, open_browser: bool = True,
          startup_hooks: Sequence[StartupHook] = ()) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ["PTYCHOPY_SERVE_HOST"] = host  # the settings decide DEBUG and ALLOWED_HOSTS from it
    # Daphne installs Twisted's asyncio reactor at import: it must come before anything imports Twisted.
    import django
    from daphne.server import Server, twisted_loop

    from webapp.site_security import SiteConfigError, is_loopback

    try:
        django.setup()
    except SiteConfigError as exc:
        print(f"ptychopy serve: {exc}", file=sys.stderr)
        return EXIT_BAD_STARTUP
    from django.conf import settings
    from django.core.management import call_command

    from webapp import demo as demo_setup
    from webapp.jobs import embedded

    call_command("migrate", interactive=False, verbosity=0)
    from webapp.asgi import application

    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host  # a wildcard is no address to open
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
    lines = [f"ptychopy web application ({'embedded' if settings.EMBEDDED else 'production'} mode)"]
    if settings.EMBEDDED:
        username, password = demo_setup.ensure_demo_user()
        lines.append(f"  log in as: {username}  password: {password}  (kept in {demo_setup.demo_login_file()})")
        embedded.set_server_loop(twisted_loop)
        embedded.start_worker()
        if not is_loopback(host):
            lines.append(network_warning(host, settings.ALLOWED_HOSTS))
    try:
        stops = _start_all(startup_hooks)
    except StartupError as exc:
        embedded.stop_worker()
        print(f"ptychopy serve: {exc}", file=sys.stderr)
        return EXIT_BAD_STARTUP
    if demo:
        job = demo_setup.submit_demo_job()
        url_job = f"{url}jobs/{job.pk}/"
        lines.append(f"  demo reconstruction: job {job.pk} at {url_job}")
    lines.append(f"  open {url}  (Ctrl-C to stop)")
    print("\n".join(lines), flush=True)

    def ready() -> None:
        print(f"listening on {url}", flush=True)
        if open_browser:
            target = url_job if demo else url
            threading.Thread(target=webbrowser.open, args=(target,), daemon=True).start()

    interface = host.replace(":", r"\:")
    server = Server(application, endpoints=[f"tcp:port={port}:interface={interface}"], ready_callable=ready)
    try:
        server.run()
    finally:
        for stop in reversed(stops):
            stop()
        embedded.stop_worker()
    if not server.listening_addresses:
        print(f"could not listen on {host}:{port} (is the port in use?)", file=sys.stderr)
        return 1
    return 0


def network_warning(host: str, allowed_hosts: list[str]) -> str:
    """What an embedded server listening on a network address tells its operator."""
    return "\n".join([
        f"  WARNING: serving the embedded mode on {host}, reachable from the network, over plain http:",
        "    passwords and session cookies cross the network unencrypted. DEBUG is off, the secret key is this",
        "    install's own (PTYCHOPY_HOME/secret_key) and failed logins are throttled. For a facility, run the",
        "    production mode behind a TLS proxy (docs/deploy.md).",
        f"    answering to the host names {', '.join(allowed_hosts)} (set ALLOWED_HOSTS for others)",
    ])


if __name__ == "__main__":
    sys.exit(main())

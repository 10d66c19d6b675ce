"""``python -m webapp.worker [dramatiq options]``: one production worker process (one per GPU).

Sets Django up, re-queues jobs a dead worker left behind, then runs the ``dramatiq`` command for this project
with ``--processes 1 --threads 1 -Q reconstruct`` and ``dramatiq_queue_prefetch=1`` (so an idle GPU never
waits behind a busy one). Extra arguments go to ``dramatiq`` as they are. Pin the GPU with
``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import sys

BOOT_MODULE = "webapp.worker_boot"


def dramatiq_argv(extra: list[str]) -> list[str]:
    return ["dramatiq", BOOT_MODULE, "--processes", "1", "--threads", "1", "--queues", "reconstruct", *extra]


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("dramatiq_queue_prefetch", "1")
    os.environ.setdefault("dramatiq_delay_queue_prefetch", "1")
    # how long the idle consumer waits between looks at Redis (Dramatiq's default, 1000 ms, adds up to a second
    # between a job being queued and its start: benchmarks/latency)
    os.environ.setdefault("dramatiq_worker_timeout", "100")

    import django

    django.setup()
    from django.conf import settings
    from django.db import DatabaseError, connections

    from webapp.jobs.reconciler import requeue_unfinished

    if not settings.REDIS_URL:
        print("python -m webapp.worker needs REDIS_URL (and DATABASE_URL): without them the broker is in-memory "
              "and only 'ptychopy serve' (the embedded mode) can run jobs", file=sys.stderr)
        return 2
    try:
        n = requeue_unfinished()
    except DatabaseError as exc:
        print(f"start-up re-queue skipped, the database is not ready ({exc}); run 'manage.py migrate'",
              file=sys.stderr, flush=True)
    else:
        if n:
            print(f"re-queued {n} unfinished job(s)", flush=True)
    connections.close_all()

    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    sys.argv = dramatiq_argv(extra)
    return int(dramatiq_main(make_argument_parser().parse_args(sys.argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())

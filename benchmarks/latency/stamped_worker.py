"""``python -m benchmarks.latency.stamped_worker``: ``python -m webapp.worker`` with the ``t_produced`` hook.

The same start-up (re-queue, ``dramatiq --processes 1 --threads 1 -Q reconstruct``, prefetch 1); only the
module the Dramatiq processes import is :mod:`benchmarks.latency.stamped_boot` instead of ``webapp.worker_boot``.
"""

from __future__ import annotations

import sys

import webapp.worker as worker


def main() -> int:
    worker.BOOT_MODULE = "benchmarks.latency.stamped_boot"
    return worker.main()


if __name__ == "__main__":
    sys.exit(main())

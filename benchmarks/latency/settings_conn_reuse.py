"""Experiment only (``--web-conn-max-age N``): ``webapp.settings`` with persistent database connections.

Under Daphne every ``database_sync_to_async`` call (Channels' session and user lookup, the consumer's
``latest_frame``) runs on one shared thread and, with ``CONN_MAX_AGE=0``, opens and closes a PostgreSQL
connection each time. This module lets the benchmark measure the websocket handshakes with connections kept
(the change proposed in README.md is the psycopg pool, ``OPTIONS={"pool": True}``, which needs psycopg_pool).
"""

import os

from webapp.settings import *  # noqa: F403
from webapp.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = int(float(os.environ.get("PTYCHOPY_BENCH_CONN_MAX_AGE", "60")))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

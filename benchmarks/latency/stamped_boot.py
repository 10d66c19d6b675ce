"""What the benchmark's production worker imports in each Dramatiq process: the hook, then ``webapp.worker_boot``."""

from . import hooks

hooks.install()

import webapp.worker_boot  # noqa: E402,F401  (Django set-up and the actors, exactly as in production)

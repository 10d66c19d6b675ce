"""The module the ``dramatiq`` command imports in each worker process: Django, then the actors.

The reconstruction code is imported here too, not when the first job starts (about 0.3 s off its start).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django.setup()

import reconstruction.driver  # noqa: E402,F401
import reconstruction.io.scan  # noqa: E402,F401
import reconstruction.multigpu  # noqa: E402,F401
from webapp.jobs import tasks  # noqa: E402,F401  (registers the actors on the configured broker)

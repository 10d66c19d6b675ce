"""The module the ``dramatiq`` command imports in each worker process: Django, then the actors."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django.setup()

from webapp.jobs import tasks  # noqa: E402,F401  (registers the actors on the configured broker)

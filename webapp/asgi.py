"""ASGI entry point: ``daphne webapp.asgi:application``.

In the embedded mode the application also records the server's event loop and starts the in-process
Dramatiq worker on its first call (``webapp.cli serve`` starts it at once). In production the web process runs a
reconciler (``webapp.jobs.reconciler``) beside the workers' own.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django_http = get_asgi_application()  # sets Django up before consumers and models are imported

from django.conf import settings  # noqa: E402

from webapp.jobs.embedded import EmbeddedStarter  # noqa: E402
from webapp.routing import build_application  # noqa: E402

application = build_application(django_http)
if settings.EMBEDDED:
    application = EmbeddedStarter(application)
elif settings.PTYCHOPY_WEB_RECONCILER:
    from webapp.jobs.reconciler import start_in_web_process

    start_in_web_process()  # so a job whose workers are all gone shows the truth (re-queued, or failed)

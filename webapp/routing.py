"""The ASGI protocol router: Django for HTTP, the job consumer for websockets (origin-checked, logged in)."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from webapp.jobs.consumers import JobFramesConsumer

websocket_urlpatterns = [
    path("ws/jobs/<int:job_id>/", JobFramesConsumer.as_asgi()),
]


def build_application(http_app: Any) -> ProtocolTypeRouter:
    return ProtocolTypeRouter({
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    })

"""The ASGI protocol router: Django for HTTP, the job consumer for websockets (same origin, logged in)."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from webapp.live.consumers import JobFramesConsumer
from webapp.live.origin import SameOriginValidator

websocket_urlpatterns = [
    path("ws/jobs/<int:job_id>/", JobFramesConsumer.as_asgi()),
]


def build_application(http_app: Any) -> ProtocolTypeRouter:
    return ProtocolTypeRouter({
        "http": http_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    })

"""Fixtures for the web application's tests: users, a temporary data root, a small simulated job, an
in-process Dramatiq worker on the StubBroker, and logged-in websocket headers. No external servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq import Worker
from webapp_helpers import small_parameters

from reconstruction import Parameters


@pytest.fixture(autouse=True)
def webapp_settings(settings, tmp_path: Path) -> Path:
    """Results and data roots in a temporary folder; no embedded worker started by the ASGI app."""
    data = tmp_path / "data"
    data.mkdir()
    settings.PTYCHOPY_DATA_ROOTS = [data]
    settings.PTYCHOPY_RESULTS_DIR = tmp_path / "results"
    settings.PTYCHOPY_UPLOADS_DIR = tmp_path / "uploads"
    settings.PTYCHOPY_EMBEDDED_WORKER = False
    settings.PTYCHOPY_FRAME_RATE_HZ = 20
    return data


@pytest.fixture
def data_root(webapp_settings: Path) -> Path:
    return webapp_settings


@pytest.fixture
def small_params() -> Parameters:
    return small_parameters()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.org", "alice-password")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.org", "bob-password")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("carol", "carol@example.org", "carol-password", is_staff=True)


@pytest.fixture
def token(user) -> str:
    """An API token of ``user``."""
    from webapp.api.models import ApiToken

    return ApiToken.objects.create(user=user, name="tests").key


@pytest.fixture
def other_token(other_user) -> str:
    from webapp.api.models import ApiToken

    return ApiToken.objects.create(user=other_user).key


@pytest.fixture
def broker():
    """The project's StubBroker, emptied before and after the test."""
    from webapp.jobs import tasks  # noqa: F401  (registers the actor)

    b = dramatiq.get_broker()
    b.flush_all()
    yield b
    b.flush_all()


@pytest.fixture
def worker(transactional_db, broker) -> Iterator[Worker]:
    """One Dramatiq worker thread consuming ``reconstruct``, like the embedded mode's."""
    w = Worker(broker, queues={"reconstruct"}, worker_threads=1, worker_timeout=50)
    w.start()
    yield w
    w.stop(timeout=10_000)


@pytest.fixture
def sent_frames(monkeypatch):
    """Every frame the worker publishes, decoded: (header, images)."""
    from webapp.jobs import runner
    from webapp.live import status
    from webapp.live.frames import decode_frame

    frames: list = []
    monkeypatch.setattr(runner, "publish_frame", lambda job_id, data: frames.append(decode_frame(data)))
    monkeypatch.setattr(status, "publish_frame", lambda job_id, data: frames.append(decode_frame(data)))
    return frames

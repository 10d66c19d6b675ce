"""Log format and context (webapp.logs); real worker processes are tests/e2e/test_ops.py."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpResponse
from django.test import RequestFactory

from webapp.logs import ContextFilter, JsonFormatter, RequestLogContext, log_context, logging_config


@pytest.fixture
def json_lines():
    """A logger whose records come out as the JSON lines of PTYCHOPY_LOG_FORMAT=json."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("webapp.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_context_is_carried_inside_the_block_only(json_lines) -> None:
    logger, lines = json_lines
    with log_context(job_id=12, user="olga"), log_context(scan="2-ID:scan 7"):
        logger.info("inside %s", "it")
    logger.warning("outside", extra={"job_id": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    inside, outside, failed = lines()
    assert inside["message"] == "inside it" and inside["level"] == "INFO" and inside["logger"] == "webapp.test_logs"
    assert (inside["job_id"], inside["user"], inside["scan"]) == (12, "olga", "2-ID:scan 7")
    assert inside["time"].endswith("+00:00")
    assert outside["job_id"] == 3 and "user" not in outside and "scan" not in outside
    assert "ValueError: boom" in failed["exc"]


@pytest.mark.django_db
def test_a_request_names_its_user_and_job(json_lines) -> None:
    logger, lines = json_lines

    def view(request, job_id):
        logger.info("viewing")
        return HttpResponse("ok")

    middleware = RequestLogContext(lambda request: middleware.process_view(request, view, (), {"job_id": 9})
                                   or view(request, job_id=9))
    request = RequestFactory().get("/jobs/9/")
    request.user = User.objects.create_user("vera")
    middleware(request)
    request.user = AnonymousUser()
    middleware(request)
    named, anonymous = lines()
    assert named["user"] == "vera" and named["job_id"] == 9
    assert "user" not in anonymous and anonymous["job_id"] == 9


def test_one_root_handler_and_clear_errors() -> None:
    config = logging_config("json", "debug")
    assert config["root"]["handlers"] == ["console"] and config["loggers"]["webapp"] == {"level": "DEBUG"}
    assert all("handlers" not in c or c["handlers"] == [] for c in config["loggers"].values())
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    bad = (("PTYCHOPY_LOG_FORMAT", "xml", "PTYCHOPY_LOG_FORMAT='xml': expected one of plain, json"),
           ("PTYCHOPY_LOG_LEVEL", "LOUD", "PTYCHOPY_LOG_LEVEL='LOUD': expected DEBUG, INFO"))
    for var, value, message in bad:
        out = subprocess.run([sys.executable, "-c", "import webapp.settings"], env={**env, var: value},
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 1 and message in out.stderr, out.stderr[-1500:]

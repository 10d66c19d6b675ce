"""Fixtures for the end-to-end tests: the production stack (Daphne + Dramatiq worker subprocesses on
PostgreSQL and Redis) shared by the whole session, and helpers that keep evidence (logs, screenshots) on
failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PostgresServer, RedisServer
from tests.support.processes import TEST_OUTPUT
from tests.support.services import fresh_redis_url
from tests.support.stack import ProductionStack, User


@pytest.fixture(scope="session")
def prod_stack(postgres_server: PostgresServer, redis_server: RedisServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionStack]:
    database_url = postgres_server.create_database("ptychopy_e2e")
    stack = ProductionStack("prod", database_url, fresh_redis_url(), tmp_path_factory.mktemp("prod"))
    try:
        stack.setup()
        stack.add_user("alice", "alice-pw-12345")
        stack.add_user("bob", "bob-pw-12345")
        stack.add_user("carol", "carol-pw-12345", staff=True)
        stack.start_web()
        stack.start_worker(0)
    except Exception as exc:
        stack.stop()
        pytest.fail(f"could not start the production stack: {exc}\n{stack.logs()}", pytrace=False)
    yield stack
    stack.stop()


@pytest.fixture
def alice(prod_stack: ProductionStack) -> User:
    return prod_stack.users["alice"]


@pytest.fixture
def bob(prod_stack: ProductionStack) -> User:
    return prod_stack.users["bob"]


@pytest.fixture
def carol(prod_stack: ProductionStack) -> User:
    return prod_stack.users["carol"]


CHROMIUM = os.environ.get("PTYCHOPY_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run the tests with `./dev test` (it installs it) "
                    "or `apt-get install -y chromium`", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright for Python is not installed (pip install -e '.[test]')", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest, prod_stack: ProductionStack):  # type: ignore[no-untyped-def]
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000},
                                  base_url=prod_stack.base_url)
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    pg.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    yield pg
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
        stem = TEST_OUTPUT / f"browser-failure-{request.node.name}"
        try:
            pg.screenshot(path=f"{stem}.png", full_page=True)
            Path(f"{stem}.html").write_text(pg.content())
        except Exception as exc:  # the page may be gone; keep the console at least
            console.append(f"(screenshot failed: {exc})")
        Path(f"{stem}.console.txt").write_text("\n".join(console))
    context.close()


@pytest.fixture(scope="session")
def output_dir() -> str:
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    return str(TEST_OUTPUT)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]  # read by fixtures that keep evidence
    if report.when == "call" and report.failed:
        stack = item.funcargs.get("prod_stack") if hasattr(item, "funcargs") else None
        if isinstance(stack, ProductionStack):
            report.sections.append(("production stack logs", stack.logs()))
    return report

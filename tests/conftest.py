"""Session-wide test services: a real PostgreSQL and a real Redis on loopback, started on first use.

``postgres_url`` and ``redis_url`` are for any test package (webapp, epics_bridge, e2e). The servers are
stopped at the end of the session whatever happened; see tests/support/ for the helpers.

``--suite-part`` splits the suite in two (``./dev test`` runs both): ``parallel``, the tests that start no server
and drive no browser, IOC or GPU (the physics, the API, the web app's views on SQLite, the docs), run on every core
(pytest-xdist); ``serial``, the rest (tests/e2e, tests/epics_bridge and every test marked for a service, a browser,
an IOC or a GPU), alone, since they time what a user would see.
"""

from __future__ import annotations

import pytest

from tests.support import PostgresServer, PrerequisiteMissing, RedisServer, ensure_postgres, ensure_redis
from tests.support import stop_all_services as _stop_all_services


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    try:
        return ensure_postgres()
    except PrerequisiteMissing as exc:
        pytest.fail(f"PostgreSQL is needed and missing: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of an empty database ``ptychopy`` on the session's PostgreSQL (superuser role, CREATEDB)."""
    return postgres_server.url("ptychopy")


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    try:
        return ensure_redis()
    except PrerequisiteMissing as exc:
        pytest.fail(f"Redis is needed and missing: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """URL of database 0 on the session's Redis (other tests take their own database index)."""
    return redis_server.url(0)


#: the test folders, and the marks, of the tests that run alone (the ``serial`` part of ``--suite-part``)
SERIAL_FOLDERS = ("e2e", "epics_bridge")
SERIAL_MARKS = ("services", "browser", "epics", "gpu")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--suite-part", choices=("parallel", "serial"), default=None,
                     help="only the tests that may run beside another worker (parallel) or only the others (serial)")


def runs_in_parallel_part(item: pytest.Item) -> bool:
    """True for a test outside :data:`SERIAL_FOLDERS` with none of :data:`SERIAL_MARKS`."""
    parts = item.path.relative_to(item.config.rootpath / "tests").parts
    return parts[0] not in SERIAL_FOLDERS and not any(item.get_closest_marker(m) for m in SERIAL_MARKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    part = config.getoption("--suite-part")
    if part is None:
        return
    wanted = part == "parallel"
    config.hook.pytest_deselected(items=[item for item in items if runs_in_parallel_part(item) != wanted])
    items[:] = [item for item in items if runs_in_parallel_part(item) == wanted]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _stop_all_services()



def pytest_configure(config: pytest.Config) -> None:
    """Every /api/v1/ answer of Django's test client is checked against the OpenAPI document
    (tests/support/openapi_check.py): an answer the document does not describe fails the test that got it."""
    from tests.support import openapi_check

    openapi_check.install()

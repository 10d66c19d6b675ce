"""API tokens against the production stack (Daphne, PostgreSQL, Redis): a token from ``create_token`` (stored
hashed) downloads a finished job's result and, through a ticket offered as a websocket subprotocol, opens its live
websocket once, through a real nginx in front of Daphne; the ticket appears in neither's access log. A ticket
in the URL is refused, saying where it belongs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.frames import parse_frame, viewer_subprotocols, ws_url
from tests.support.nginx import websocket_proxy
from tests.support.processes import ManagedProcess
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient, WebClient
from webapp.live.consumers import CLOSE_BAD_REQUEST
from webapp.live.subprotocol import PROTOCOL

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def proxy(prod_stack: ProductionStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """nginx in front of the stack's Daphne, as a site runs it (docs/deploy.md), logging every request."""
    nginx = websocket_proxy("tokens-nginx", tmp_path_factory.mktemp("nginx"), prod_stack.port)
    try:
        nginx.start(wait=30)
        yield nginx
    finally:
        nginx.stop()


async def _first_frame(url: str, origin: str, ticket: str = "") -> tuple[dict, str | None]:
    """The header of the first frame a socket opened at ``url`` (offering ``ticket``) sends and the subprotocol
    the server chose (the client refuses any it did not offer); InvalidStatus when it is refused."""
    async with connect(url, origin=origin, subprotocols=viewer_subprotocols(ticket), proxy=None,  # type: ignore[arg-type]
                       open_timeout=10, max_size=8 * 2**20, compression=None) as ws:
        return parse_frame(await asyncio.wait_for(ws.recv(), timeout=10)).header, ws.subprotocol


def test_a_token_downloads_results_and_opens_the_websocket_with_a_ticket_kept_out_of_access_logs(
        prod_stack: ProductionStack, alice: User, proxy: ManagedProcess) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    job_id = int(api.submit(small_sim_cmdstr(5), label="token-e2e")["id"])
    job = api.wait_status(job_id, {"done"}, timeout=120)

    resp = api.get(job["downloads"]["h5"])  # the token alone, no session
    assert resp.status == 200 and resp.body[:8] == b"\x89HDF\r\n\x1a\n", resp
    anonymous = WebClient(prod_stack.base_url).get(job["downloads"]["h5"])
    assert anonymous.status == 302 and "/accounts/login/" in anonymous.location

    site = f"http://127.0.0.1:{proxy.port}"  # the address the client knows: nginx's
    asked = api.post(f"/api/v1/jobs/{job_id}/ws-ticket/")
    assert asked.status == 201, asked
    ticket = asked.json()["ticket"]
    url = ws_url(site, job_id)
    assert url.endswith(asked.json()["websocket"]) and ticket not in url
    header, chosen = asyncio.run(_first_frame(url, site, ticket))
    assert header["job"] == job_id and header["status"] == "done" and chosen == PROTOCOL
    with pytest.raises(InvalidStatus):  # used once already
        asyncio.run(_first_frame(url, site, ticket))
    used = redis.Redis.from_url(prod_stack.redis_url).keys("ptychopy:*ws-ticket:*")
    assert len(used) == 1, used  # noted in Redis, which every web process shares

    nginx_log = (Path(proxy.argv[-1]).parent / "access.log").read_text()
    daphne_log = prod_stack.web.log_text() if prod_stack.web else ""
    assert f'"GET /ws/jobs/{job_id}/ HTTP/1.1" 101' in nginx_log, nginx_log[-2000:]
    assert f"WSCONNECT /ws/jobs/{job_id}/" in daphne_log, daphne_log[-2000:]
    assert ticket not in nginx_log and ticket not in daphne_log

    fresh_ticket = api.post(f"/api/v1/jobs/{job_id}/ws-ticket/").json()["ticket"]
    with pytest.raises(InvalidStatus):  # a ticket does not lift the Origin check
        asyncio.run(_first_frame(url, "http://evil.example.com", fresh_ticket))
    assert ApiClient(prod_stack.base_url, alice.token[:-1]).post(f"/api/v1/jobs/{job_id}/ws-ticket/").status == 401


async def _told_and_closed(url: str, origin: str) -> tuple[dict, int | None]:
    """What a socket opened at ``url`` (offering ptychopy.v1 only) is told before the server closes it, and the
    close code."""
    async with connect(url, origin=origin, subprotocols=viewer_subprotocols(), proxy=None,  # type: ignore[arg-type]
                       open_timeout=10, compression=None) as ws:
        told = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=10)
    return told, closed.value.rcvd.code if closed.value.rcvd else None


def test_a_ticket_in_the_url_is_refused_saying_where_it_belongs(prod_stack: ProductionStack, alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    job_id = int(api.submit(small_sim_cmdstr(5), label="ticket-in-url")["id"])
    ticket = api.post(f"/api/v1/jobs/{job_id}/ws-ticket/").json()["ticket"]
    url = ws_url(prod_stack.base_url, job_id)
    told, code = asyncio.run(_told_and_closed(f"{url}?ticket={ticket}", prod_stack.origin))
    assert code == CLOSE_BAD_REQUEST and "Sec-WebSocket-Protocol" in told["error"], told
    with pytest.raises(InvalidStatus):  # it went through a URL: used up
        asyncio.run(_first_frame(url, prod_stack.origin, ticket))

"""API tokens against the production stack (Daphne, PostgreSQL, Redis): a token from ``create_token`` (stored
hashed) downloads a finished job's result and, through a ticket, opens its live websocket once."""

from __future__ import annotations

import asyncio

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.frames import parse_frame, ws_url
from tests.support.stack import ProductionStack, User, small_sim_cmdstr
from tests.support.web import ApiClient, WebClient

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]


async def _first_frame(url: str, origin: str) -> dict:
    """The header of the first frame a socket opened at ``url`` sends; InvalidStatus when it is refused."""
    async with connect(url, origin=origin, proxy=None, open_timeout=10,  # type: ignore[arg-type]
                       max_size=8 * 2**20, compression=None) as ws:
        return parse_frame(await asyncio.wait_for(ws.recv(), timeout=10)).header


def test_a_token_downloads_results_and_opens_the_websocket_with_a_ticket(prod_stack: ProductionStack,
                                                                        alice: User) -> None:
    api = ApiClient(prod_stack.base_url, alice.token)
    job_id = int(api.submit(small_sim_cmdstr(5), label="token-e2e")["id"])
    job = api.wait_status(job_id, {"done"}, timeout=120)

    resp = api.get(job["downloads"]["h5"])  # the token alone, no session
    assert resp.status == 200 and resp.body[:8] == b"\x89HDF\r\n\x1a\n", resp
    anonymous = WebClient(prod_stack.base_url).get(job["downloads"]["h5"])
    assert anonymous.status == 302 and "/accounts/login/" in anonymous.location

    ticket = api.post(f"/api/v1/jobs/{job_id}/ws-ticket/")
    assert ticket.status == 201, ticket
    url = ws_url(prod_stack.base_url, job_id) + f"?ticket={ticket.json()['ticket']}"
    assert ticket.json()["websocket"] in url
    header = asyncio.run(_first_frame(url, prod_stack.origin))
    assert header["job"] == job_id and header["status"] == "done"
    with pytest.raises(InvalidStatus):  # used once already
        asyncio.run(_first_frame(url, prod_stack.origin))
    used = redis.Redis.from_url(prod_stack.redis_url).keys("ptychopy:*ws-ticket:*")
    assert len(used) == 1, used  # noted in Redis, which every web process shares
    fresh_ticket = api.post(f"/api/v1/jobs/{job_id}/ws-ticket/").json()["ticket"]
    fresh = ws_url(prod_stack.base_url, job_id) + f"?ticket={fresh_ticket}"
    with pytest.raises(InvalidStatus):  # a ticket does not lift the Origin check
        asyncio.run(_first_frame(fresh, "http://evil.example.com"))
    assert ApiClient(prod_stack.base_url, alice.token[:-1]).post(f"/api/v1/jobs/{job_id}/ws-ticket/").status == 401

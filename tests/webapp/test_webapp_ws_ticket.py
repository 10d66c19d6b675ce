"""A token client opens the live websocket with a ticket from POST /api/v1/jobs/<id>/ws-ticket/, offered as the
subprotocol ptychopy.ticket.<ticket> beside ptychopy.v1 (never in the URL): valid 60 s, once, for that job only;
the server answers with ptychopy.v1, never the ticket; the Origin check still applies. A ticket in the URL is
refused with a close code and a reason that says where to put it, and is used up."""

from __future__ import annotations

import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from webapp_helpers import api_auth, small_parameters

from webapp.accounts import tickets
from webapp.asgi import application
from webapp.jobs.models import Job
from webapp.live.consumers import CLOSE_BAD_REQUEST, CLOSE_UNAUTHENTICATED
from webapp.live.frames import decode_frame
from webapp.live.subprotocol import PROTOCOL, ticket_protocol

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://testserver")
HOST = (b"host", b"testserver")


@database_sync_to_async
def ask_ticket(token: str, job_id: int):
    return Client().post(f"/api/v1/jobs/{job_id}/ws-ticket/", **api_auth(token))


@database_sync_to_async
def make_job(**fields) -> Job:
    return Job.objects.create(parameters=small_parameters().to_dict(), algorithm="ePIE", **fields)


async def open_socket(path: str, ticket: str | None = None, headers=(ORIGIN, HOST),
                      protocols: list[str] | None = None) -> tuple[WebsocketCommunicator, bool, str | int | None]:
    """A socket to ``path`` offering ``protocols`` (default: ptychopy.v1 and the ticket's subprotocol); the
    communicator, whether it was accepted, and the chosen subprotocol (accepted) or the close code (refused)."""
    offered = protocols if protocols is not None else [PROTOCOL, *([ticket_protocol(ticket)] if ticket else [])]
    ws = WebsocketCommunicator(application, path, headers=list(headers), subprotocols=offered)
    connected, detail = await ws.connect(timeout=10)
    return ws, connected, detail


async def refusal(ws: WebsocketCommunicator) -> tuple[dict, dict]:
    """The text message and the close message of a socket accepted only to say why it closes."""
    said = json.loads(await ws.receive_from(timeout=10))
    closed = await ws.receive_output(timeout=10)
    return said, closed


async def test_a_ticket_offered_as_a_subprotocol_opens_the_socket_once(token):
    job = await make_job(status="queued")
    r = await ask_ticket(token, job.pk)
    assert r.status_code == 201
    body = r.json()
    assert body["expires_in_s"] == 60 and body["websocket"] == f"/ws/jobs/{job.pk}/"
    assert body["subprotocols"] == [PROTOCOL, f"ptychopy.ticket.{body['ticket']}"]
    ws = WebsocketCommunicator(application, body["websocket"], headers=[ORIGIN, HOST],
                               subprotocols=body["subprotocols"])
    assert await ws.connect(timeout=10) == (True, PROTOCOL)  # the plain one, never the ticket
    header, _ = decode_frame(await ws.receive_from(timeout=30))
    assert header["job"] == job.pk and header["status"] == "queued"
    await ws.disconnect()
    _, connected, code = await open_socket(body["websocket"], body["ticket"])
    assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)  # single use


async def test_tickets_are_refused_for_another_job_when_forged_or_too_old(token, monkeypatch):
    job, other = await make_job(status="queued"), await make_job(status="queued")
    ticket = (await ask_ticket(token, job.pk)).json()["ticket"]
    assert not (await open_socket(f"/ws/jobs/{other.pk}/", ticket))[1]
    assert not (await open_socket(f"/ws/jobs/{job.pk}/", f"{ticket[:-3]}xyz"))[1]
    assert not (await open_socket(f"/ws/jobs/{job.pk}/", protocols=[PROTOCOL, "ptychopy.ticket."]))[1]
    assert not (await open_socket(f"/ws/jobs/{job.pk}/"))[1]  # no ticket, no login
    old = (await ask_ticket(token, job.pk)).json()["ticket"]
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + tickets.TICKET_TTL_S + 1)
    assert (await open_socket(f"/ws/jobs/{job.pk}/", old))[1:] == (False, CLOSE_UNAUTHENTICATED)
    with pytest.raises(tickets.TicketRefused, match="older than 60 s"):
        await database_sync_to_async(tickets.redeem)(old, job.pk)
    monkeypatch.setattr(time, "time", real_time)
    assert (await open_socket(f"/ws/jobs/{job.pk}/", old))[1]  # the refused tries did not use it up


async def test_a_ticket_in_the_url_is_refused_saying_where_to_put_it_and_is_used_up(token):
    job = await make_job(status="queued")
    ticket = (await ask_ticket(token, job.pk)).json()["ticket"]
    ws, connected, chosen = await open_socket(f"/ws/jobs/{job.pk}/?ticket={ticket}", protocols=[PROTOCOL])
    assert connected and chosen == PROTOCOL  # accepted only to say why it closes
    said, closed = await refusal(ws)
    assert closed == {"type": "websocket.close", "code": CLOSE_BAD_REQUEST, "reason": said["error"]}
    assert "ticket in the URL is refused" in said["error"]
    assert "'ptychopy.ticket.<ticket>' beside 'ptychopy.v1'" in said["error"]
    assert "Sec-WebSocket-Protocol" in said["error"] and ticket not in said["error"]
    assert not (await open_socket(f"/ws/jobs/{job.pk}/", ticket))[1]  # it was in a URL: it opens nothing now


async def test_a_ticket_without_the_plain_subprotocol_is_refused_saying_so(token):
    job = await make_job(status="queued")
    ticket = (await ask_ticket(token, job.pk)).json()["ticket"]
    ws, connected, chosen = await open_socket(f"/ws/jobs/{job.pk}/", protocols=[ticket_protocol(ticket)])
    assert connected and chosen is None  # nothing to answer with: the ticket is never echoed
    said, closed = await refusal(ws)
    assert closed["code"] == CLOSE_BAD_REQUEST and "offer the subprotocol 'ptychopy.v1'" in said["error"]
    assert (await open_socket(f"/ws/jobs/{job.pk}/", ticket))[1:] == (True, PROTOCOL)  # not used up


async def test_a_ticket_still_needs_this_sites_origin(token):
    job = await make_job(status="queued")
    ticket = (await ask_ticket(token, job.pk)).json()["ticket"]
    _, connected, _ = await open_socket(f"/ws/jobs/{job.pk}/", ticket,
                                        headers=[(b"origin", b"http://evil.example"), HOST])
    assert not connected
    assert (await open_socket(f"/ws/jobs/{job.pk}/", ticket))[1]  # refused by Origin: not used up


async def test_a_ticket_needs_a_valid_token_and_an_existing_job(token):
    job = await make_job(status="queued")
    assert (await ask_ticket("not-a-token", job.pk)).status_code == 401
    assert (await ask_ticket(token, job.pk + 1000)).status_code == 404

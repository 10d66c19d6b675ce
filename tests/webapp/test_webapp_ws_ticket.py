"""A token client opens the live websocket with a ticket from POST /api/v1/jobs/<id>/ws-ticket/: valid 60 s, once,
for that job only; the Origin check still applies."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from webapp_helpers import api_auth, small_parameters

from webapp.accounts import tickets
from webapp.asgi import application
from webapp.jobs.models import Job
from webapp.live.frames import decode_frame

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://testserver")
HOST = (b"host", b"testserver")


@database_sync_to_async
def ask_ticket(token: str, job_id: int):
    return Client().post(f"/api/v1/jobs/{job_id}/ws-ticket/", **api_auth(token))


@database_sync_to_async
def make_job(**fields) -> Job:
    return Job.objects.create(parameters=small_parameters().to_dict(), algorithm="ePIE", **fields)


async def open_socket(path: str, headers=(ORIGIN, HOST)) -> tuple[WebsocketCommunicator, bool]:
    ws = WebsocketCommunicator(application, path, headers=list(headers))
    connected, _ = await ws.connect(timeout=10)
    return ws, connected


async def test_a_ticket_opens_the_socket_once(token):
    job = await make_job(status="queued")
    r = await ask_ticket(token, job.pk)
    assert r.status_code == 201
    body = r.json()
    assert body["expires_in_s"] == 60 and body["websocket"] == f"/ws/jobs/{job.pk}/?ticket={body['ticket']}"
    ws, connected = await open_socket(body["websocket"])
    assert connected
    header, _ = decode_frame(await ws.receive_from(timeout=30))
    assert header["job"] == job.pk and header["status"] == "queued"
    await ws.disconnect()
    again, connected = await open_socket(body["websocket"])
    assert not connected  # single use


async def test_tickets_are_refused_for_another_job_when_forged_or_too_old(token, monkeypatch):
    job, other = await make_job(status="queued"), await make_job(status="queued")
    ticket = (await ask_ticket(token, job.pk)).json()["ticket"]
    assert not (await open_socket(f"/ws/jobs/{other.pk}/?ticket={ticket}"))[1]
    assert not (await open_socket(f"/ws/jobs/{job.pk}/?ticket={ticket[:-3]}xyz"))[1]
    assert not (await open_socket(f"/ws/jobs/{job.pk}/?ticket="))[1]
    old = (await ask_ticket(token, job.pk)).json()["ticket"]
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + tickets.TICKET_TTL_S + 1)
    with pytest.raises(tickets.TicketRefused, match="older than 60 s"):
        await database_sync_to_async(tickets.redeem)(old, job.pk)
    monkeypatch.setattr(time, "time", real_time)
    assert (await open_socket(f"/ws/jobs/{job.pk}/?ticket={old}"))[1]  # the refused try did not use it up


async def test_a_ticket_still_needs_this_sites_origin(token):
    job = await make_job(status="queued")
    ticket = (await ask_ticket(token, job.pk)).json()["ticket"]
    ws, connected = await open_socket(f"/ws/jobs/{job.pk}/?ticket={ticket}",
                                      headers=[(b"origin", b"http://evil.example"), HOST])
    assert not connected
    assert (await open_socket(f"/ws/jobs/{job.pk}/?ticket={ticket}"))[1]  # refused by Origin: not used up


async def test_a_ticket_needs_a_valid_token_and_an_existing_job(token):
    job = await make_job(status="queued")
    assert (await ask_ticket("not-a-token", job.pk)).status_code == 401
    assert (await ask_ticket(token, job.pk + 1000)).status_code == 404

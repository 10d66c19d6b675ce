"""The websocket /ws/jobs/<id>/: logged-in viewers get the latest frame first, then live frames; anonymous
and cross-origin connections are refused."""

import json

import numpy as np
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from webapp_helpers import small_parameters

from webapp.asgi import application
from webapp.jobs import services
from webapp.jobs.models import Job
from webapp.live.frames import FrameImage, decode_frame, encode_frame
from webapp.live.subprotocol import PROTOCOL

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://testserver")
HOST = (b"host", b"testserver")


@database_sync_to_async
def login_cookie(user) -> tuple[bytes, bytes]:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@database_sync_to_async
def make_job(**fields) -> Job:
    return Job.objects.create(parameters=small_parameters().to_dict(), algorithm="ePIE", **fields)


def stored_frame(job_id: int, seq: int, iteration: int) -> bytes:
    img = np.full((4, 5), iteration, dtype=np.uint8)
    header = {"job": job_id, "seq": seq, "iteration": iteration, "iterations": 100, "status": "running",
              "error": 0.5, "errors": [0.5], "rate_per_s": 10.0, "eta_s": 9.0}
    return encode_frame(header, [FrameImage("object_amplitude", img, 0.0, 1.0)])


async def test_logged_in_viewer_receives_the_latest_frame_first(user):
    job = await make_job(status="running", iteration=42, iterations=100, last_seq=7)
    await database_sync_to_async(Job.objects.filter(pk=job.pk).update)(last_preview=stored_frame(job.pk, 7, 42))
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, HOST, await login_cookie(user)])
    connected, _ = await ws.connect(timeout=10)
    assert connected
    header, images = decode_frame(await ws.receive_from(timeout=30))
    assert header["seq"] == 7 and header["iteration"] == 42 and header["status"] == "running"
    assert images["object_amplitude"].shape == (4, 5) and images["object_amplitude"][0, 0] == 42
    await ws.disconnect()


async def test_viewer_of_a_job_without_frames_gets_its_status(user):
    job = await make_job(status="queued")
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, HOST, await login_cookie(user)])
    assert (await ws.connect(timeout=10))[0]
    header, images = decode_frame(await ws.receive_from(timeout=30))
    assert header["status"] == "queued" and header["job"] == job.pk and images == {}
    await ws.disconnect()


async def test_a_viewer_offering_ptychopy_v1_is_answered_with_it_and_one_offering_none_with_none(user):
    job = await make_job(status="queued")
    cookie = await login_cookie(user)
    for offered, chosen in (([PROTOCOL], PROTOCOL), ([], None)):
        ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, HOST, cookie],
                                   subprotocols=offered)
        assert await ws.connect(timeout=10) == (True, chosen)
        await ws.disconnect()


async def test_anonymous_viewer_is_rejected():
    job = await make_job(status="running")
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, HOST])
    connected, _ = await ws.connect(timeout=10)
    assert not connected


async def test_cross_origin_viewer_is_rejected(user):
    job = await make_job(status="running")
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/",
                               headers=[(b"origin", b"http://evil.example"), await login_cookie(user)])
    connected, _ = await ws.connect(timeout=10)
    assert not connected
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[await login_cookie(user)])
    assert not (await ws.connect(timeout=10))[0]


@pytest.mark.parametrize("origin, host, accepted", [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
    ("http://127.0.0.1:8001", "127.0.0.1:8000", False),  # another service on the same host: another port
    ("http://127.0.0.1", "127.0.0.1:8000", False),
    ("https://127.0.0.1:8000", "127.0.0.1:8000", False),  # another scheme
    ("http://localhost:80", "localhost", True),  # default ports are the same address
    ("http://evil.example:8000", "evil.example:8000", False),  # a host outside ALLOWED_HOSTS
    ("null", "127.0.0.1:8000", False),
])
async def test_websocket_origin_must_match_scheme_host_and_port(user, origin, host, accepted):
    job = await make_job(status="queued")
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/",
                               headers=[(b"origin", origin.encode()), (b"host", host.encode()),
                                        await login_cookie(user)])
    connected, _ = await ws.connect(timeout=10)
    assert connected is accepted, f"Origin {origin} on Host {host}"
    if connected:
        await ws.disconnect()


async def test_missing_job_is_rejected(user):
    ws = WebsocketCommunicator(application, "/ws/jobs/999999/", headers=[ORIGIN, HOST, await login_cookie(user)])
    assert not (await ws.connect(timeout=10))[0]


async def test_live_frames_from_the_worker_thread_reach_two_viewers(worker, broker, user):
    job = await database_sync_to_async(services.submit_job)(small_parameters(iterations=1_000_000), owner=user)
    cookie = await login_cookie(user)
    viewers = [WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, HOST, cookie])
               for _ in range(2)]
    for ws in viewers:
        assert (await ws.connect(timeout=10))[0]
    received: list[list[dict]] = [[], []]
    for k, ws in enumerate(viewers):
        while len([h for h in received[k] if h["status"] == "running"]) < 3:
            header, images = decode_frame(await ws.receive_from(timeout=30))
            received[k].append(header)
    for headers in received:
        running = [h for h in headers if h["status"] == "running"]
        its = [h["iteration"] for h in running]
        assert its == sorted(its) and len(set(its)) == len(its)
    await database_sync_to_async(services.cancel_job)(await database_sync_to_async(Job.objects.get)(pk=job.pk),
                                                      user)
    for ws in viewers:
        status = None
        while status != "cancelled":
            status = decode_frame(await ws.receive_from(timeout=30))[0]["status"]
        await ws.disconnect()


async def _viewer_of_a_running_job(user) -> tuple[Job, WebsocketCommunicator]:
    """A running job with a stored frame, and a logged-in viewer's socket that has received that frame."""
    job = await make_job(status="running", iteration=3, iterations=100, last_seq=1)
    await database_sync_to_async(Job.objects.filter(pk=job.pk).update)(last_preview=stored_frame(job.pk, 1, 3))
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=[ORIGIN, HOST, await login_cookie(user)])
    assert (await ws.connect(timeout=10))[0]
    await ws.receive_from(timeout=30)  # the stored frame
    return job, ws


async def test_a_viewer_chooses_the_diffraction_position_and_bad_choices_are_named(user):
    from webapp.live import viewer_choice

    job, ws = await _viewer_of_a_running_job(user)
    await ws.send_to(text_data='{"diffraction_position": 7}')
    assert await ws.receive_json_from(timeout=10) == {"diffraction_position": 7}
    assert await database_sync_to_async(viewer_choice.chosen_position)(job.pk, 36) == 7
    assert await database_sync_to_async(viewer_choice.chosen_position)(job.pk, 5) is None  # not one of 5
    for bad in ("-1", "2.5", "true", '"x"'):
        await ws.send_to(text_data='{"diffraction_position": ' + bad + "}")
        answer = await ws.receive_json_from(timeout=10)
        assert answer["error"].startswith("diffraction_position must be a whole number >= 0, got "), answer
    assert await database_sync_to_async(viewer_choice.chosen_position)(job.pk, 36) == 7  # kept
    await ws.send_to(text_data="not json")  # ignored, the socket stays open
    await ws.send_to(text_data='{"diffraction_position": 2}')
    assert await ws.receive_json_from(timeout=10) == {"diffraction_position": 2}
    await ws.disconnect()


async def test_a_deeply_nested_or_oversized_message_is_ignored_and_a_flood_of_choices_is_refused(user):
    from webapp.live import viewer_choice
    from webapp.live.consumers import CHOICES_PER_S

    job, ws = await _viewer_of_a_running_job(user)
    await ws.send_to(text_data="[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError; killed the socket
    await ws.send_to(text_data='{"diffraction_position": 3, "pad": "' + "x" * 5000 + '"}')  # over 1 KiB: unread
    await ws.send_to(text_data='{"diffraction_position": 4}')
    assert await ws.receive_json_from(timeout=10) == {"diffraction_position": 4}  # the socket still serves
    answers = []
    for k in range(int(CHOICES_PER_S) + 5):  # a burst beyond the allowance, well within a second
        await ws.send_to(text_data=json.dumps({"diffraction_position": 10 + k}))
        answers.append(await ws.receive_json_from(timeout=10))
    refused = [a for a in answers if "error" in a]
    assert 5 <= len(refused) <= 6 and all(a["error"].startswith("too many position choices") for a in refused)
    assert await database_sync_to_async(viewer_choice.chosen_position)(job.pk, 100) < 10 + int(CHOICES_PER_S) + 1
    await ws.disconnect()

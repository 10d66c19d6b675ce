"""The live-view wire format and a real websocket client for it.

A frame is one binary message: a 4-byte big-endian header length, a JSON header, then the uint8 images
concatenated (each image's ``offset``/``length`` counts from the end of the header).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from webapp.live.subprotocol import PROTOCOL, ticket_protocol

FINAL_STATUSES = frozenset({"done", "failed", "cancelled"})


@dataclass
class Frame:
    header: dict[str, Any]
    images: dict[str, bytes]
    received_at: float = field(default_factory=time.monotonic)
    size: int = 0

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    @property
    def iteration(self) -> int:
        return int(self.header["iteration"])

    @property
    def status(self) -> str:
        return str(self.header.get("status", ""))


def parse_frame(message: bytes) -> Frame:
    if len(message) < 4:
        raise ValueError(f"frame of {len(message)} bytes has no header length")
    (hlen,) = struct.unpack(">I", message[:4])
    if hlen > len(message) - 4:
        raise ValueError(f"header length {hlen} exceeds the message ({len(message)} bytes)")
    header = json.loads(message[4:4 + hlen])
    for key in ("job", "seq", "iteration", "iterations", "status", "images"):
        if key not in header:
            raise ValueError(f"frame header lacks {key!r}: {sorted(header)}")
    payload = message[4 + hlen:]
    images: dict[str, bytes] = {}
    for img in header["images"]:
        start, length = int(img["offset"]), int(img["length"])
        shape = img["shape"]
        if start + length > len(payload):
            raise ValueError(f"image {img['name']} [{start}:{start + length}] beyond payload {len(payload)}")
        expected = 1
        for n in shape:
            expected *= int(n)
        if expected != length:
            raise ValueError(f"image {img['name']}: shape {shape} does not match {length} bytes")
        if max(int(n) for n in shape) > 512:
            raise ValueError(f"image {img['name']} of shape {shape} exceeds 512 px")
        images[str(img["name"])] = payload[start:start + length]
    return Frame(header, images, size=len(message))


def ws_url(base_http: str, job_id: int | str) -> str:
    return base_http.replace("http://", "ws://", 1).rstrip("/") + f"/ws/jobs/{job_id}/"


def viewer_subprotocols(ticket: str = "") -> list[Subprotocol]:
    """What a viewer offers in ``Sec-WebSocket-Protocol``: ``ptychopy.v1``, and its ticket beside it when it has one."""
    return [Subprotocol(PROTOCOL), *([Subprotocol(ticket_protocol(ticket))] if ticket else [])]


async def open_viewer(base_http: str, job_id: int | str, cookie_header: str | None,
                      origin: str | None, timeout: float = 10.0, *, ticket: str = "") -> ClientConnection:
    """A websocket to the job's live view, logged in by ``cookie_header`` or by ``ticket`` (as a subprotocol)."""
    headers = {"Cookie": cookie_header} if cookie_header else None
    return await connect(ws_url(base_http, job_id), origin=origin, additional_headers=headers,  # type: ignore[arg-type]
                         subprotocols=viewer_subprotocols(ticket), proxy=None, open_timeout=timeout,
                         max_size=8 * 2**20, compression=None)


async def collect_frames(base_http: str, job_id: int | str, cookie_header: str, origin: str, *,
                         min_frames: int = 0, until_final: bool = True, timeout: float = 60.0) -> list[Frame]:
    """Watch a job: return frames until it reports a final status (and ``min_frames`` arrived) or time out."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    async with await open_viewer(base_http, job_id, cookie_header, origin) as ws:
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            if isinstance(msg, str):
                continue  # text messages are not frames
            frames.append(parse_frame(msg))
            done = until_final and frames[-1].status in FINAL_STATUSES
            if done and len(frames) >= min_frames:
                break
            if not until_final and min_frames and len(frames) >= min_frames:
                break
    return frames

"""Bluesky runs as scans: start and stop documents from a 0MQ proxy (``bluesky.callbacks.zmq.Proxy``).

A RunEngine publishes every document through ``bluesky.callbacks.zmq.Publisher`` to the proxy's in port; the
bridge subscribes to its out port. The wire format is bluesky's: one 0MQ message per document,
``b"<prefix> <name> <payload>"`` with ``payload = serializer(document)`` (``pickle.dumps`` by default). Only
``start`` and ``stop`` documents are decoded; all others are skipped by their name, unread.

Pickle runs code chosen by whoever wrote the payload, so the documents are unpickled with an unpickler that
builds plain data only (dicts, lists, numbers, text, NumPy scalars and arrays) and refuses anything else.

:class:`DocumentSource` turns the subscription into monitor events on one pseudo-PV, the stream's name
``zmq://host:port``: connection events from the socket's monitor, and one :class:`ValueEvent` per start/stop
document whose value is ``(name, document)``. :class:`BlueskyTrigger` pairs each stop with its start: the run
is complete when ``exit_status`` is ``"success"`` and the stop's ``num_events`` for ``stream`` reached the
start's ``expected_events_key`` (``num_points`` in bluesky's own plans); an ``abort`` is *aborted*, a ``fail``
is *failed*, fewer events is *partial*. The stop document decides at once: no debounce, so the next run
cannot change what the last one looked like. Both documents become the scan's values, ``start:KEY`` and
``stop:KEY`` (nested keys and list items joined with dots: ``start:scan_dims.0``, ``stop:num_events.primary``),
for ``[data]`` and ``[metadata]``; the run is classified from those values alone, so it can be classified again
from what was journalled.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .config import DOCUMENT_KEY, STOP_KEY, TriggerConfig
from .trigger import ConnectionEvent, EdgeHook, Event, Outcome, PendingEnd, ScanEnd, Trigger, ValueEvent

log = logging.getLogger(__name__)

DECODED = ("start", "stop")
MAX_OPEN_RUNS = 1000  # start documents kept while waiting for their stop
POLL_TIMEOUT_MS = 100


class DocumentDecodeError(ValueError):
    """A message from the proxy that is not a bluesky document in the configured format."""


# (module, name) pairs plain data needs: NumPy scalars and arrays (both module spellings: NumPy 1 and 2)
_PLAIN_DATA = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
               for n in ("scalar", "_reconstruct")} | {("numpy", "dtype"), ("numpy", "ndarray"),
                                                       ("collections", "OrderedDict")}


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_DATA:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a document holds plain data only; refusing to build {module}.{name}")


def deserialize(payload: bytes, serializer: str) -> Any:
    """A document from its ``payload`` bytes (``serializer``: pickle, msgpack or json)."""
    if serializer == "pickle":
        return _PlainDataUnpickler(io.BytesIO(payload)).load()
    if serializer == "msgpack":
        import msgpack

        return msgpack.unpackb(payload, raw=False)
    return json.loads(payload)


def decode_message(message: bytes, prefix: str, serializer: str) -> tuple[str, dict[str, Any]] | None:
    """``(name, document)`` for a start or stop document published with ``prefix``; None for any other
    document or prefix. Raises :class:`DocumentDecodeError` naming what is wrong."""
    parts = message.split(b" ", 2)
    if len(parts) != 3:
        raise DocumentDecodeError(f"not a bluesky 0MQ message (expected b'prefix name payload'): {message[:60]!r}")
    msg_prefix, raw_name, payload = parts
    if msg_prefix != prefix.encode():
        return None
    name = raw_name.decode("ascii", errors="replace")
    if name not in DECODED:
        return None
    try:
        doc = deserialize(payload, serializer)
    except Exception as exc:
        raise DocumentDecodeError(f"{name} document: cannot decode it as {serializer} ({type(exc).__name__}: "
                                  f"{exc}); [trigger] serializer must match the Publisher's") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("uid"), str):
        raise DocumentDecodeError(f"{name} document: expected a dict with a 'uid', got {type(doc).__name__}")
    return name, doc


def document_values(prefix: str, doc: Mapping[str, Any], received_s: float,
                    timestamp: float) -> dict[str, ValueEvent]:
    """A document as scan values: ``{prefix}KEY``, and for nested dicts and lists each item
    (``start:md.sample``, ``start:scan_dims.0``, ``stop:num_events.primary``)."""
    out: dict[str, ValueEvent] = {}

    def add(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                add(f"{key}.{k}", v)
            return
        if isinstance(value, list | tuple):
            for k, v in enumerate(value):
                add(f"{key}.{k}", v)
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[prefix + key] = ValueEvent(prefix + key, value, text, received_s, timestamp)

    for k, v in doc.items():
        add(str(k), v)
    return out


class DocumentSource:
    """A 0MQ subscription to a bluesky proxy feeding monitor events for ``config.document_source``.

    The socket lives on its own thread (0MQ sockets are not thread-safe); the thread only decodes and queues.
    A connect yields a :class:`ConnectionEvent` and a ``None`` value ("subscribed, no run yet"), so the
    documents that follow are live; 0MQ never replays a document, and one published while the bridge was not
    subscribed is not seen.
    """

    def __init__(self, config: TriggerConfig, events: queue.Queue[Event]):
        self.config = config
        self.name = config.document_source
        self.events = events
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="epics-bridge-zmq", daemon=True)
        self._thread.start()
        log.info("subscribing to bluesky documents at %s", self.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def _run(self) -> None:
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 0)  # never drop a document on our side
        sock.setsockopt(zmq.SUBSCRIBE, (self.config.zmq_prefix + " ").encode())
        mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        address = self.config.zmq_address
        sock.connect(address if "://" in address else f"tcp://{address}")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(mon, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for ready, _ in poller.poll(POLL_TIMEOUT_MS):
                    if ready is mon:
                        self._on_monitor(recv_monitor_message(mon)["event"], zmq)
                    else:
                        self._on_message(sock.recv())
        finally:
            sock.disable_monitor()
            mon.close(0)
            sock.close(0)
            ctx.term()

    def _on_monitor(self, event: int, zmq: Any) -> None:
        now = time.monotonic()
        if event == zmq.EVENT_CONNECTED:
            self.events.put(ConnectionEvent(self.name, True, now))
            self.events.put(ValueEvent(self.name, None, "subscribed", now, time.time()))
        elif event == zmq.EVENT_DISCONNECTED:
            self.events.put(ConnectionEvent(self.name, False, now))

    def _on_message(self, message: bytes) -> None:
        try:
            decoded = decode_message(message, self.config.zmq_prefix, self.config.serializer)
        except DocumentDecodeError as exc:
            log.error("%s: %s", self.name, exc)
            return
        if decoded is None:
            return
        name, doc = decoded
        stamp = float(doc.get("time") or time.time())
        self.events.put(ValueEvent(self.name, (name, doc), f"{name} {doc['uid']}", time.monotonic(), stamp))


class BlueskyTrigger(Trigger):
    """A run's stop document ends a scan; ``exit_status`` and ``num_events`` classify it (see the module)."""

    def __init__(self, config: TriggerConfig, debounce_s: float, max_debounce_s: float,
                 next_scan_pvs: tuple[str, ...] = (), on_capture: EdgeHook | None = None):
        super().__init__(config, debounce_s, max_debounce_s, next_scan_pvs, on_capture)
        self._starts: OrderedDict[str, tuple[dict[str, Any], ValueEvent]] = OrderedDict()

    @property
    def edge_pv(self) -> str:
        return self.config.document_source

    def _on_edge_pv(self, event: ValueEvent, previous: ValueEvent | None, live: bool,
                    latest: Mapping[str, ValueEvent]) -> None:
        if not isinstance(event.value, tuple):
            return  # "subscribed": no document
        name, doc = event.value
        if name == "start":
            self._starts[doc["uid"]] = (doc, event)
            while len(self._starts) > MAX_OPEN_RUNS:
                uid, _ = self._starts.popitem(last=False)
                log.warning("run %s: no stop document after %d newer runs; forgotten", uid, MAX_OPEN_RUNS)
            if live and self.on_start is not None:
                self.on_start(event, document_values(DOCUMENT_KEY, doc, event.received_s, event.timestamp))
            return
        started = self._starts.pop(str(doc.get("run_start", "")), None)
        values = {k: v for k, v in latest.items() if k != self.edge_pv}
        if started is not None:
            start, start_event = started
            values.update(document_values(DOCUMENT_KEY, start, start_event.received_s, start_event.timestamp))
        values.update(document_values(STOP_KEY, doc, event.received_s, event.timestamp))
        at_s = event.received_s
        pending = PendingEnd(at_s, at_s, at_s, values, frozen=True, edge_timestamp=event.timestamp)
        self._notify(pending)  # journalled before it is classified: a restart classifies it again from these
        self._ready.append(self.classify(pending))

    def classify_values(self, values: Mapping[str, ValueEvent]) -> tuple[Outcome, str]:
        """Outcome and reason of one run from its documents' values (``start:KEY``, ``stop:KEY``), so that a
        run can be classified again from what was journalled."""
        c = self.config

        def get(key: str) -> Any:
            ev = values.get(key)
            return None if ev is None else ev.value

        if get(DOCUMENT_KEY + "uid") is None:
            return Outcome.PARTIAL, (f"run {get(STOP_KEY + 'run_start')!r}: its start document was not seen "
                                     "(the bridge subscribed during the run)")
        status, why = str(get(STOP_KEY + "exit_status") or ""), str(get(STOP_KEY + "reason") or "")
        scan = f"scan_id {get(DOCUMENT_KEY + 'scan_id') or '?'}"
        if status == "abort":
            return Outcome.ABORTED, f"{scan}: exit_status 'abort' {why!r}"
        if status != "success":
            return Outcome.FAILED, f"{scan}: exit_status {status!r} {why!r}"
        got = get(f"{STOP_KEY}num_events.{c.stream}") or 0
        want = get(DOCUMENT_KEY + c.expected_events_key)
        if not isinstance(want, int) or isinstance(want, bool):
            return Outcome.COMPLETE, (f"{scan}: exit_status 'success', {got} {c.stream} events (no "
                                      f"{c.expected_events_key} in the start document to compare with)")
        if got < want:
            return Outcome.PARTIAL, f"{scan}: num_events[{c.stream!r}]={got} < {c.expected_events_key}={want}"
        return Outcome.COMPLETE, f"{scan}: exit_status 'success', {got} {c.stream} events"

    def classify(self, pending: PendingEnd) -> ScanEnd:
        """A run end kept with its documents' values (e.g. read back from the journal)."""
        return pending.end(*self.classify_values(pending.values))

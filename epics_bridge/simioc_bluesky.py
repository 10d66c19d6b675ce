"""``ptychopy simioc --zmq-proxy HOST:PORT``: each simulated scan is also a bluesky run, published through
bluesky's own ``Publisher`` to a 0MQ proxy (``bluesky-0MQ-proxy IN OUT``). The documents are composed with
``event_model`` as a RunEngine would: a start document (``scan_id``, ``num_points``, the data directory and file
name, energy, distance, steps), a ``primary`` descriptor, one event per point and a stop document whose
``exit_status`` is ``success``, ``abort`` or ``fail`` and whose ``num_events`` counts the events."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

SERIALIZERS = {"pickle": pickle.dumps, "json": lambda d: json.dumps(d).encode()}


def _serializer(name: str) -> Any:
    if name == "msgpack":
        import msgpack

        return msgpack.packb
    return SERIALIZERS[name]


class RunPublisher:
    """One bluesky run at a time: :meth:`start`, :meth:`event` per point, :meth:`stop`."""

    def __init__(self, address: str, serializer: str = "pickle", prefix: bytes = b""):
        from bluesky.callbacks.zmq import Publisher

        self.publisher = Publisher(address, prefix=prefix, serializer=_serializer(serializer))
        self._run: Any = None
        self._descriptor: Any = None

    def start(self, metadata: dict[str, Any]) -> None:
        from event_model import compose_run

        self._run = compose_run(metadata=metadata)
        self.publisher("start", self._run.start_doc)
        self._descriptor = self._run.compose_descriptor(
            name="primary", data_keys={"x_um": {"source": "sim:x", "dtype": "number", "shape": []},
                                       "y_um": {"source": "sim:y", "dtype": "number", "shape": []}})
        self.publisher("descriptor", self._descriptor.descriptor_doc)

    def event(self, y_um: float, x_um: float) -> None:
        now = time.time()
        self.publisher("event", self._descriptor.compose_event(data={"x_um": x_um, "y_um": y_um},
                                                               timestamps={"x_um": now, "y_um": now}))

    def stop(self, exit_status: str, reason: str = "") -> None:
        self.publisher("stop", self._run.compose_stop(exit_status=exit_status, reason=reason))
        self._run = self._descriptor = None

    def close(self) -> None:
        self.publisher.close()

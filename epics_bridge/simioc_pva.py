"""``ptychopy simioc --pva-port P``: every PV of the simulated IOC over pvAccess too, as an EPICS 7 IOC's QSRV
serves its records: NTScalar for numbers and text, NTEnum for enums. Writes over pvAccess go to the caproto PV
(its putter runs, so ``pvput ptysim:sim:Go 1`` plays a scan) and every change is posted to pvAccess monitors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


def pva_server_conf(port: int, interface: str = "127.0.0.1") -> dict[str, str]:
    """p4p server configuration for a private server on ``port`` (UDP search/beacons on port+1)."""
    return dict(EPICS_PVAS_INTF_ADDR_LIST=interface, EPICS_PVAS_SERVER_PORT=str(port),
                EPICS_PVAS_BROADCAST_PORT=str(port + 1), EPICS_PVAS_AUTO_BEACON_ADDR_LIST="NO",
                EPICS_PVAS_BEACON_ADDR_LIST=interface)


def pva_client_env(port: int) -> dict[str, str]:
    """Client variables that reach only the loopback server on ``port`` (what the bridge needs)."""
    return dict(EPICS_PVA_ADDR_LIST="127.0.0.1", EPICS_PVA_AUTO_ADDR_LIST="NO", EPICS_PVA_SERVER_PORT=str(port),
                EPICS_PVA_BROADCAST_PORT=str(port + 1))


def _nt_and_value(data: Any) -> tuple[Any, Any]:
    from caproto import ChannelType
    from p4p.nt import NTEnum, NTScalar

    kind = data.data_type
    if kind == ChannelType.ENUM:
        choices = list(data.enum_strings)
        value = data.value
        return NTEnum(), {"index": choices.index(value) if value in choices else 0, "choices": choices}
    if kind == ChannelType.DOUBLE or kind == ChannelType.FLOAT:
        return NTScalar("d"), float(data.value)
    if kind in (ChannelType.LONG, ChannelType.INT):
        return NTScalar("i"), int(data.value)
    return NTScalar("s"), str(data.value)


class PvaMirror:
    """A p4p server holding one SharedPV per caproto PV of ``pvdb``."""

    def __init__(self, pvdb: dict[str, Any], conf: dict[str, str], loop: asyncio.AbstractEventLoop):
        from p4p.server import Server
        from p4p.server.thread import SharedPV

        self.loop = loop
        self._data = dict(pvdb)
        self._pvs: dict[str, Any] = {}
        for name, data in self._data.items():
            nt, initial = _nt_and_value(data)
            self._pvs[name] = SharedPV(nt=nt, initial=initial, handler=_PutHandler(self, name))
        self.server = Server(providers=[self._pvs], conf=conf, useenv=False)
        log.info("pvAccess: %d PVs on port %s", len(self._pvs), conf.get("EPICS_PVAS_SERVER_PORT"))

    def post(self, name: str) -> None:
        """Publish the caproto PV's current value to pvAccess monitors."""
        self._pvs[name].post(_nt_and_value(self._data[name])[1], timestamp=time.time())

    def post_all(self) -> None:
        for name in self._pvs:
            self.post(name)

    async def write(self, name: str, value: Any) -> None:
        await self._data[name].write(value)
        self.post(name)

    def close(self) -> None:
        self.server.stop()


class _PutHandler:
    def __init__(self, mirror: PvaMirror, name: str):
        self.mirror, self.name = mirror, name

    def put(self, pv: Any, op: Any) -> None:
        from .pva import pva_value

        value = pva_value(op.value())[1 if self.mirror._data[self.name].data_type.name == "ENUM" else 0]
        future = asyncio.run_coroutine_threadsafe(self.mirror.write(self.name, value), self.mirror.loop)
        try:
            future.result(5.0)
        except Exception as exc:
            op.done(error=f"{self.name}: {type(exc).__name__}: {exc}")
            return
        op.done()

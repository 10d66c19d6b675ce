"""What happens to an EPICS bridge's row: its published state is recorded (its heartbeat), and staff retire a
bridge that stopped or crashed. What the dashboard shows of it is :mod:`webapp.workers.bridges`."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from webapp.jobs.models import BridgeStatus

from .bridges import bridge_view

log = logging.getLogger(__name__)


def record_bridge_status(beamline: str, state: dict) -> BridgeStatus:
    """Store the latest state an EPICS bridge published (its heartbeat); the dashboard shows it."""
    row, _ = BridgeStatus.objects.update_or_create(
        beamline=beamline[:200], defaults={"state": state, "last_seen": timezone.now()})
    return row


class BridgeStillRunning(Exception):
    """A bridge that still beats cannot be retired (its next heartbeat would bring it back)."""


def retire_bridge(row: BridgeStatus, user) -> None:
    """Remove a stopped or crashed bridge from the dashboard (staff only). Raises ``PermissionDenied`` for
    anyone else and :class:`BridgeStillRunning` while it is alive (stop it first)."""
    if not getattr(user, "is_staff", False):
        raise PermissionDenied("only staff can retire a bridge")
    view = bridge_view(row)
    if not view.retirable:
        raise BridgeStillRunning(f"the {row.beamline} bridge is {view.level_title} ({view.why}): stop it first")
    log.info("bridge %s retired by %s (%s)", row.beamline, user, view.why)
    row.delete()

"""EPICS bridge: a completed scan queues its reconstruction by itself (see ``docs/epics_bridge.md``).

Imports point down only: ``epics_bridge`` uses ``reconstruction`` and, only in ``epics_bridge.django_submit``
(``DjangoSubmitter``, loaded by name for ``kind = "django"``), ``webapp``.
"""

from .bridge import Bridge
from .config import BridgeConfig, ConfigError, load_config
from .state import read_state
from .submit import SubmitRejected, SubmitRequest, Submitter

__all__ = ["Bridge", "BridgeConfig", "ConfigError", "SubmitRejected", "SubmitRequest",
           "Submitter", "load_config", "read_state"]

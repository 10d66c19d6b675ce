"""EPICS bridge: a completed scan queues its reconstruction by itself (see ``docs/epics_bridge.md``).

Imports point down only: ``epics_bridge`` uses ``reconstruction`` and, through ``DjangoSubmitter``, ``webapp``.
"""

from .bridge import Bridge
from .config import BridgeConfig, ConfigError, load_config
from .state import read_state
from .submit import DjangoSubmitter, SubmitRejected, SubmitRequest, Submitter

__all__ = ["Bridge", "BridgeConfig", "ConfigError", "DjangoSubmitter", "SubmitRejected", "SubmitRequest",
           "Submitter", "load_config", "read_state"]

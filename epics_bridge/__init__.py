"""EPICS bridge: a completed scan queues its reconstruction by itself (see ``docs/epics_bridge.md``).

Imports point down only: ``epics_bridge`` uses ``reconstruction`` and, through ``DjangoSubmitter``, ``webapp``.
"""

from .config import BridgeConfig, ConfigError, load_config
from .submit import DjangoSubmitter, SubmitRejected, SubmitRequest, Submitter

__all__ = ["BridgeConfig", "ConfigError", "DjangoSubmitter", "SubmitRejected", "SubmitRequest", "Submitter",
           "load_config"]

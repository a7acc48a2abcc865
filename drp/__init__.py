"""The orchestrator: split plan, campaign state machine, processing, failover, report, demo, doctor."""

from common import __version__

__all__ = ["__version__"]

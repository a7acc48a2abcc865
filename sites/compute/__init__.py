"""Compute back-ends (local process pool, HTCondor DAGMan, Pegasus) behind one interface."""

from .base import BackendSettings, ComputeBackend, NodeState, RunReport, RunState
from .registry import BACKENDS, get_backend

__all__ = [
    "BACKENDS",
    "BackendSettings",
    "ComputeBackend",
    "NodeState",
    "RunReport",
    "RunState",
    "get_backend",
]

"""Compute back-ends by name, through the one plugin loader (:mod:`common.plugins`).

Modules are imported on first use, so a site that runs ``local`` never imports htcondor2 or Pegasus.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.plugins import PLUGINS, Kind, configure, load_class

from .base import ComputeBackend

BACKENDS: dict[str, str] = {name: p.target for name, p in PLUGINS[Kind.COMPUTE].items()}


def backend_class(name: str, source: str = "site catalogue") -> type[ComputeBackend]:
    found: type[ComputeBackend] = load_class(Kind.COMPUTE, name, source, "compute.backend")
    return found


def get_backend(name: str, settings: Mapping[str, Any], source: str = "site catalogue") -> ComputeBackend:
    """A configured back-end; a bad setting is a ConfigError naming ``compute.<key>`` and the reason."""
    cls, parsed = configure(
        Kind.COMPUTE, name, settings, source=source, prefix="compute", name_key="compute.backend"
    )
    backend: ComputeBackend = cls(parsed)
    return backend

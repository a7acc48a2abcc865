"""Compute back-ends by name: the only place that knows where each implementation lives.

Modules are imported on first use, so a site that runs ``local`` never imports htcondor2 or Pegasus.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from drp.errors import ConfigError

from .base import ComputeBackend

BACKENDS: dict[str, str] = {
    "local": "sites.compute.local:LocalBackend",
    "htcondor": "sites.compute.htcondor:HTCondorBackend",
    "pegasus": "sites.compute.pegasus:PegasusBackend",
}


def backend_class(name: str, source: str = "site catalogue") -> type[ComputeBackend]:
    try:
        target = BACKENDS[name]
    except KeyError as err:
        raise ConfigError(
            source, "compute.backend", f"unknown back-end {name!r}; known: {', '.join(sorted(BACKENDS))}"
        ) from err
    module, _, cls = target.partition(":")
    found: type[ComputeBackend] = getattr(importlib.import_module(module), cls)
    return found


def get_backend(name: str, settings: Mapping[str, Any], source: str = "site catalogue") -> ComputeBackend:
    """A configured back-end; a bad setting is a ConfigError naming ``compute.<key>`` and the reason."""
    cls = backend_class(name, source)
    try:
        parsed = cls.Settings.model_validate(dict(settings))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in ("compute", *first["loc"]))
        reason = "unknown key" if first["type"] == "extra_forbidden" else str(first["msg"])
        raise ConfigError(source, key, reason.removeprefix("Value error, ")) from err
    return cls(parsed)

"""Replication back-ends by name (``[replication] backend`` in sites.toml), imported on first use."""

from __future__ import annotations

import importlib

from pydantic import ValidationError

from drp.errors import ConfigError
from sites.catalogue import SiteCatalogue

from .base import ReplicationBackend

BACKENDS: dict[str, str] = {
    "embedded": "transfer.replication.embedded:EmbeddedBackend",
    "rucio": "transfer.replication.rucio:RucioBackend",
}


def get_replication(catalogue: SiteCatalogue, source: str = "site catalogue") -> ReplicationBackend:
    """The catalogue's replication back-end, configured; bad settings name ``replication.<key>``."""
    cfg = catalogue.replication
    try:
        module, _, cls_name = BACKENDS[cfg.backend].partition(":")
    except KeyError as err:
        raise ConfigError(
            source,
            "replication.backend",
            f"unknown back-end {cfg.backend!r}; known: {', '.join(sorted(BACKENDS))}",
        ) from err
    cls: type[ReplicationBackend] = getattr(importlib.import_module(module), cls_name)
    try:
        settings = cls.Settings.model_validate(cfg.settings)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in ("replication", *first["loc"]))
        reason = "unknown key" if first["type"] == "extra_forbidden" else str(first["msg"])
        raise ConfigError(source, key, reason.removeprefix("Value error, ")) from err
    return cls(settings, catalogue)

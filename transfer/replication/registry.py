"""Replication back-ends by name (``[replication] backend`` in sites.toml), through the one plugin
loader (:mod:`common.plugins`), imported on first use."""

from __future__ import annotations

from common.plugins import PLUGINS, Kind, configure
from sites.catalogue import SiteCatalogue

from .base import ReplicationBackend

BACKENDS: dict[str, str] = {name: p.target for name, p in PLUGINS[Kind.REPLICATION].items()}


def get_replication(catalogue: SiteCatalogue, source: str = "site catalogue") -> ReplicationBackend:
    """The catalogue's replication back-end, configured; bad settings name ``replication.<key>``."""
    cfg = catalogue.replication
    cls, settings = configure(
        Kind.REPLICATION,
        cfg.backend,
        cfg.settings,
        source=source,
        prefix="replication",
        name_key="replication.backend",
    )
    backend: ReplicationBackend = cls(settings, catalogue)
    return backend

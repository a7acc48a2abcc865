"""The one plugin loader: back-ends by name, and the production client each one needs.

A site catalogue names back-ends (``[site.compute] backend``, ``[replication] backend``, a link's
``mover``); this table maps each name to the class that implements it and to the client module that
class imports, with the pip extra that installs it. Nothing here imports a back-end: modules are
imported on first use, so a site that copies posix files never loads the XRootD or FTS3 clients, and a
missing client is found (``importlib.util.find_spec``) before any work starts, as one line that says
how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from typing import Any

from common.errors import ConfigError


class Kind(StrEnum):
    COMPUTE = "compute"
    MOVER = "mover"
    REPLICATION = "replication"

    @property
    def label(self) -> str:
        return "mover" if self is Kind.MOVER else "back-end"


@dataclass(frozen=True)
class Client:
    """A production client: the module a back-end imports, its distribution and the satdrp extra."""

    module: str
    distribution: str
    extra: str

    @property
    def install(self) -> str:
        return f"pip install 'satdrp[{self.extra}]'"

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a parent that fails to import, or a broken sys.modules entry
            return False

    def version(self) -> str | None:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None


RUCIO = Client("rucio", "rucio-clients", "rucio")
FTS3 = Client("fts3", "fts3", "fts3")
XROOTD = Client("XRootD", "xrootd", "xrootd")
HTCONDOR = Client("htcondor2", "htcondor", "htcondor")
PEGASUS = Client("Pegasus", "pegasus-wms.api", "pegasus")
POSTGRES = Client("psycopg", "psycopg", "postgres")


@dataclass(frozen=True)
class Plugin:
    kind: Kind
    name: str
    target: str  # "module:Class"
    clients: tuple[Client, ...] = ()


_REGISTERED = (
    Plugin(Kind.COMPUTE, "local", "sites.compute.local:LocalBackend"),
    Plugin(Kind.COMPUTE, "htcondor", "sites.compute.htcondor:HTCondorBackend", (HTCONDOR,)),
    Plugin(Kind.COMPUTE, "pegasus", "sites.compute.pegasus:PegasusBackend", (PEGASUS,)),
    Plugin(Kind.MOVER, "local", "transfer.movers.local:LocalMover"),
    Plugin(Kind.MOVER, "xrootd", "transfer.movers.xrootd:XRootDMover", (XROOTD,)),
    Plugin(Kind.MOVER, "fts3", "transfer.movers.fts3:FTS3Mover", (FTS3,)),
    Plugin(Kind.REPLICATION, "embedded", "transfer.replication.embedded:EmbeddedBackend"),
    Plugin(Kind.REPLICATION, "rucio", "transfer.replication.rucio:RucioBackend", (RUCIO,)),
)
PLUGINS: dict[Kind, dict[str, Plugin]] = {
    kind: {p.name: p for p in _REGISTERED if p.kind is kind} for kind in Kind
}
OWN_PACKAGES = frozenset(
    {"common", "bookkeeping", "instrumentation", "science", "sites", "transfer", "drp", "commands", "cli"}
)


class MissingClientError(ConfigError):
    """A configured back-end's client module is not installed (exit 2, with the command that fixes it)."""

    def __init__(self, source: str, key: str | None, what: str, client: Client) -> None:
        self.client = client
        super().__init__(
            source, key, f"{what} needs the Python module {client.module}, not installed: {client.install}"
        )


def plugin(kind: Kind, name: str, source: str, key: str) -> Plugin:
    """The registered plugin; an unknown name is a ConfigError naming the key and the known names."""
    try:
        return PLUGINS[kind][name]
    except KeyError as err:
        known = ", ".join(sorted(PLUGINS[kind]))
        raise ConfigError(source, key, f"unknown {kind.label} {name!r}; known: {known}") from err


def missing_client(found: Plugin) -> Client | None:
    """The first client of the plugin that is not installed, or None."""
    return next((c for c in found.clients if not c.installed()), None)


def require(found: Plugin, source: str, key: str, what: str | None = None) -> None:
    """Raise :class:`MissingClientError` unless every client the plugin imports is installed."""
    client = missing_client(found)
    if client is not None:
        raise MissingClientError(source, key, what or f"{found.kind.label} {found.name!r}", client)


def load_class(kind: Kind, name: str, source: str, key: str) -> Any:
    """The class registered as ``name``; a missing client is a MissingClientError, never a traceback."""
    found = plugin(kind, name, source, key)
    require(found, source, key)
    module, _, cls_name = found.target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls_name)
    except ModuleNotFoundError as err:  # the client is there but one of its own dependencies is not
        missing = err.name or str(err)
        if missing.partition(".")[0] in OWN_PACKAGES:
            raise  # our own bug: a traceback, not advice to install something
        client = found.clients[0] if found.clients else None
        fix = f": {client.install}" if client else ""
        reason = f"{kind.label} {name!r} cannot be loaded, module {missing} is missing{fix}"
        raise ConfigError(source, key, reason) from err


def configure(
    kind: Kind, name: str, settings: Mapping[str, Any], *, source: str, prefix: str, name_key: str
) -> tuple[Any, Any]:
    """The plugin class and its validated ``Settings``; a bad setting is a ConfigError naming
    ``<prefix>.<key>`` and the reason, an unknown name or missing client one naming ``name_key``."""
    from pydantic import ValidationError

    cls = load_class(kind, name, source, name_key)
    try:
        return cls, cls.Settings.model_validate(dict(settings))
    except ValidationError as err:
        first = err.errors()[0]
        reason = "unknown key" if first["type"] == "extra_forbidden" else str(first["msg"])
        key = ".".join(str(p) for p in (prefix, *first["loc"]))
        raise ConfigError(source, key, reason.removeprefix("Value error, ")) from err

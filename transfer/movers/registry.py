"""Movers by name: the only place that knows where each implementation lives (imported on first use,
so a site that copies posix files never imports the XRootD or FTS3 clients)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from drp.errors import ConfigError

from .base import Mover

MOVERS: dict[str, str] = {
    "local": "transfer.movers.local:LocalMover",
    "xrootd": "transfer.movers.xrootd:XRootDMover",
    "fts3": "transfer.movers.fts3:FTS3Mover",
}


def get_mover(name: str, settings: Mapping[str, Any], key: str = "transfer.link") -> Mover:
    """A configured mover; an unknown name or bad setting is a ConfigError naming the key."""
    try:
        module, _, cls_name = MOVERS[name].partition(":")
    except KeyError as err:
        raise ConfigError(
            "site catalogue", f"{key}.mover", f"unknown mover {name!r}; known: {', '.join(sorted(MOVERS))}"
        ) from err
    cls: type[Mover] = getattr(importlib.import_module(module), cls_name)
    try:
        parsed = cls.Settings.model_validate(dict(settings))
    except ValidationError as err:
        first = err.errors()[0]
        reason = "unknown key" if first["type"] == "extra_forbidden" else str(first["msg"])
        where = ".".join(str(p) for p in (key, *first["loc"]))
        raise ConfigError("site catalogue", where, reason.removeprefix("Value error, ")) from err
    return cls(parsed)

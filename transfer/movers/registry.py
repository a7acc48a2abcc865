"""Movers by name, through the one plugin loader (:mod:`common.plugins`): imported on first use, so a
site that copies posix files never imports the XRootD or FTS3 clients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.plugins import PLUGINS, Kind, configure

from .base import Mover

MOVERS: dict[str, str] = {name: p.target for name, p in PLUGINS[Kind.MOVER].items()}


def get_mover(name: str, settings: Mapping[str, Any], key: str = "transfer.link") -> Mover:
    """A configured mover; an unknown name or bad setting is a ConfigError naming the key."""
    cls, parsed = configure(
        Kind.MOVER, name, settings, source="site catalogue", prefix=key, name_key=f"{key}.mover"
    )
    mover: Mover = cls(parsed)
    return mover

"""Helpers shared by the DR commands: which mover can look at a site's storage, dataset types."""

from __future__ import annotations

from common.errors import InvalidInputError
from sites.catalogue import DEFAULT_MOVERS, SiteCatalogue

from ..movers.base import Mover
from ..movers.registry import get_mover

EXAMPLES = 20


def dataset_type(name: str) -> str:
    """``inputs.tract0042`` → ``inputs``; ``raw/000001`` → ``raw``; ``meta`` → ``meta``."""
    return name.split("/", 1)[0].split(".", 1)[0]


def storage_mover(catalogue: SiteCatalogue, site: str) -> Mover:
    """The mover that can look at a site's storage (by its scheme; FTS3 links cannot list or stat)."""
    scheme = catalogue.get(site).scheme
    name = DEFAULT_MOVERS.get((scheme, scheme))
    if name is None:
        raise InvalidInputError(
            f"site {site}: auditing {scheme}:// storage is not supported (file://, root://)"
        )
    return get_mover(name, {})

"""The site catalogue (``sites.toml``): which centres take part, their role, share, storage and compute.

Example::

    [[site]]
    name = "ncsa"
    role = "lead"
    share = 0.5
    storage = "file:///data/ncsa"
    [site.compute]
    backend = "local"
    max_workers = 2

    [site.attributes]              # extra attributes for rule expressions (site= and role= are implicit)
    country = "us"

    [replication]                  # the replication back-end (embedded or rucio) and its settings
    backend = "embedded"

    [transfer]                     # retries with exponential back-off, then the replica is given up
    retries = 3
    [[transfer.link]]              # a mover per link; by default file→file is "local", root→root "xrootd"
    source = "ncsa"
    dest = "*"
    mover = "local"
    max_active = 8

Loaded once by the CLI, validated here, then passed explicitly. Every error names the file, the key
(``site[2].share``) and the reason, and is raised as :class:`common.errors.ConfigError`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from bookkeeping.sites import SiteRow
from bookkeeping.states import SiteRole
from common.configfile import config_error, read_toml
from common.errors import ConfigError
from common.plugins import Kind, MissingClientError, Plugin, configure, plugin, require

DEFAULT_SITES_FILE = "sites.toml"
STORAGE_SCHEMES = ("file", "root", "davs", "https")
SITE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
ATTRIBUTE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
# The mover used when no [[transfer.link]] names one, by (source scheme, destination scheme).
DEFAULT_MOVERS = {("file", "file"): "local", ("root", "root"): "xrootd", ("root", "file"): "xrootd"}


class ComputeConfig(BaseModel):
    """A compute back-end by registry name; other keys are that back-end's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: str = Field(default="local", pattern=r"^[a-z][a-z0-9_]*$")

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SITE_NAME_PATTERN)
    role: SiteRole
    share: float = Field(ge=0.0, le=1.0)
    storage: str
    compute: ComputeConfig = ComputeConfig()
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(ATTRIBUTE_PATTERN, key) or key in ("site", "role"):
                raise ValueError(
                    f"bad attribute name {key!r} (letters, digits, _.-; site and role are implicit)"
                )
            if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", value):
                raise ValueError(f"bad value {value!r} for attribute {key!r} (letters, digits, _.:-)")
        return v

    @property
    def all_attributes(self) -> dict[str, str]:
        """What site expressions match: ``site``, ``role`` and the configured attributes."""
        return {**self.attributes, "site": self.name, "role": self.role.value}

    @property
    def scheme(self) -> str:
        return urlparse(self.storage).scheme

    @field_validator("share")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, v: str) -> str:
        url = urlparse(v)
        if url.scheme not in STORAGE_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(STORAGE_SCHEMES)} (got {v!r})")
        if url.scheme == "file":
            if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
                raise ValueError(f"a file:// URL needs an absolute path, like file:///data/site (got {v!r})")
        elif not url.netloc:
            raise ValueError(f"{url.scheme}:// URL needs a host (got {v!r})")
        return v.rstrip("/") if url.path not in ("", "/") else v

    @property
    def storage_path(self) -> Path | None:
        """The posix root for ``file://`` storage, else None."""
        url = urlparse(self.storage)
        return Path(url.path) if url.scheme == "file" else None

    def to_row(self) -> SiteRow:
        return SiteRow(self.name, self.role.value, self.share, self.storage, self.compute.backend)


class ReplicationConfig(BaseModel):
    """The replication back-end by registry name; other keys are its own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: str = Field(default="embedded", pattern=r"^[a-z][a-z0-9_]*$")

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LinkConfig(BaseModel):
    """The mover of a link (``*`` matches any site); other keys are the mover's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    source: str = Field(pattern=r"^(\*|[a-z][a-z0-9_-]{0,63})$")
    dest: str = Field(pattern=r"^(\*|[a-z][a-z0-9_-]{0,63})$")
    mover: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    max_active: int | None = Field(default=None, ge=1, le=10_000)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TransferConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    retries: int = Field(default=3, ge=0, le=100, description="re-tries of a failed transfer")
    backoff_s: float = Field(default=30.0, ge=0.0, description="first retry delay, doubled each time")
    backoff_max_s: float = Field(default=3600.0, ge=0.0)
    max_active: int = Field(default=16, ge=1, le=10_000, description="active transfers per link")
    link: list[LinkConfig] = Field(default_factory=list)


class SiteCatalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: list[SiteConfig] = Field(min_length=1)
    replication: ReplicationConfig = ReplicationConfig()
    transfer: TransferConfig = TransferConfig()
    _source: str = PrivateAttr(default="site catalogue")

    @property
    def source(self) -> str:
        """Where the catalogue was read from, for messages."""
        return self._source

    @model_validator(mode="after")
    def _consistent(self) -> SiteCatalogue:
        problem = consistency_problem(self)
        if problem is not None:
            key, reason = problem
            raise ValueError(f"{key}: {reason}" if key else reason)
        return self

    @property
    def sites(self) -> list[SiteConfig]:
        return list(self.site)

    @property
    def lead(self) -> SiteConfig:
        return next(s for s in self.site if s.role is SiteRole.LEAD)

    def get(self, name: str) -> SiteConfig:
        for s in self.site:
            if s.name == name:
                return s
        raise ConfigError("site catalogue", None, f"no site named {name!r}")

    def link(self, source: str, dest: str) -> LinkConfig:
        """The mover configuration of a link: the most specific ``[[transfer.link]]`` (exact names
        before ``*``), else the default mover for the two storage schemes."""
        best: tuple[int, LinkConfig] | None = None
        for link in self.transfer.link:
            if link.source in (source, "*") and link.dest in (dest, "*"):
                rank = (link.source == source) + (link.dest == dest)
                if best is None or rank > best[0]:
                    best = (rank, link)
        if best is not None:
            return best[1]
        schemes = (self.get(source).scheme, self.get(dest).scheme)
        mover = DEFAULT_MOVERS.get(schemes)
        if mover is None:
            raise ConfigError(
                "site catalogue",
                "transfer.link",
                f"no mover for {source} ({schemes[0]}://) → {dest} ({schemes[1]}://): add one",
            )
        return LinkConfig(source=source, dest=dest, mover=mover)


def consistency_problem(cat: SiteCatalogue) -> tuple[str | None, str] | None:
    """What makes a catalogue of individually valid sites unusable, as (key, reason), or None."""
    seen: dict[str, int] = {}
    for i, site in enumerate(cat.site, start=1):
        if site.name in seen:
            return f"site[{i}].name", f"duplicate site name {site.name!r} (also site[{seen[site.name]}])"
        seen[site.name] = i
    leads = [i for i, site in enumerate(cat.site, start=1) if site.role is SiteRole.LEAD]
    if len(leads) != 1:
        where = ", ".join(f"site[{i}]" for i in leads) or "none"
        return "site.role", f"exactly one site must have role = 'lead' (found {len(leads)}: {where})"
    for i, link in enumerate(cat.transfer.link, start=1):
        for end in ("source", "dest"):
            name = getattr(link, end)
            if name != "*" and name not in seen:
                return f"transfer.link[{i}].{end}", f"no site named {name!r}"
    total = sum(site.share for site in cat.site)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        return "site.share", f"shares must add up to 1 (they add up to {total:g})"
    return None


def parse_catalogue(data: dict[str, Any], source: str) -> SiteCatalogue:
    try:
        cat = SiteCatalogue.model_validate(data)
        cat._source = source
        return cat
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"]:  # a whole-catalogue problem: say it with its precise key
            cat = SiteCatalogue.model_construct(
                site=[SiteConfig.model_validate(s) for s in data["site"]],
                transfer=TransferConfig.model_validate(data.get("transfer", {})),
            )
            problem = consistency_problem(cat)
            if problem is not None:
                raise ConfigError(source, *problem) from err
        raise config_error(source, err) from err


def load_catalogue(path: str | os.PathLike[str] | None = None) -> SiteCatalogue:
    """Read and validate a site catalogue; ``None`` means ``$DRP_SITES`` or ``./sites.toml``."""
    p = Path(path or os.environ.get("DRP_SITES") or DEFAULT_SITES_FILE)
    return parse_catalogue(read_toml(p, "pass --sites PATH or set DRP_SITES"), str(p))


@dataclass(frozen=True)
class Requirement:
    """A back-end the catalogue uses: where it is configured (site, key), what it is, its settings and
    the storage roots it serves (for a storage mover)."""

    site: str | None
    key: str
    what: str
    plugin: Plugin
    settings: dict[str, Any] = field(default_factory=dict)
    roots: tuple[str, ...] = ()


def requirements(cat: SiteCatalogue, sites: set[str] | None = None) -> Iterator[Requirement]:
    """Every back-end the catalogue (or the named sites of it) uses: compute per site, the mover of
    each site's own storage and of each link between sites, and the replication back-end."""
    src = cat.source
    chosen = [(i, s) for i, s in enumerate(cat.site, start=1) if sites is None or s.name in sites]
    for i, site in chosen:
        name, key = site.compute.backend, f"site[{i}].compute.backend"
        found = plugin(Kind.COMPUTE, name, src, key)
        yield Requirement(
            site.name, key, f"site {site.name!r} compute {name!r}", found, site.compute.settings
        )
        own = DEFAULT_MOVERS.get((site.scheme, site.scheme))
        if own is not None:
            key = f"site[{i}].storage"
            what = f"site {site.name!r} storage ({site.scheme}://, mover {own!r})"
            yield Requirement(site.name, key, what, plugin(Kind.MOVER, own, src, key), roots=(site.storage,))
    for _, source in chosen:
        for j, dest in enumerate(cat.site, start=1):
            if source.name == dest.name:
                continue
            link = cat.link(source.name, dest.name)
            explicit = next((k for k, li in enumerate(cat.transfer.link, start=1) if li is link), None)
            key = f"transfer.link[{explicit}].mover" if explicit else f"site[{j}].storage"
            what = f"link {source.name} → {dest.name} mover {link.mover!r}"
            found = plugin(Kind.MOVER, link.mover, src, key)
            yield Requirement(source.name, key, what, found, link.settings)
    name, key = cat.replication.backend, "replication.backend"
    found = plugin(Kind.REPLICATION, name, src, key)
    yield Requirement(None, key, f"replication {name!r}", found, cat.replication.settings)


def require_clients(cat: SiteCatalogue, sites: set[str] | None = None) -> None:
    """Refuse, before any work, a catalogue whose back-ends need a client that is not installed:
    one :class:`common.plugins.MissingClientError` (exit 2) naming the site, the key and the fix; and a
    compute setting its back-end would refuse (:func:`check_compute_settings`)."""
    for req in requirements(cat, sites):
        require(req.plugin, cat.source, req.key, req.what)
    check_compute_settings(cat, sites)


def check_compute_settings(cat: SiteCatalogue, sites: set[str] | None = None) -> None:
    """Refuse a compute setting the site's back-end would refuse only when it runs (``max_workers =
    0`` once passed `campaign create` and stopped the campaign at processing): a ConfigError naming
    ``site[N].compute.KEY``. A back-end whose client is not installed here is left to
    :func:`require_clients` (`sites sync` runs on hosts without the production clients)."""
    for i, site in enumerate(cat.site, start=1):
        if sites is not None and site.name not in sites:
            continue
        key = f"site[{i}].compute.backend"
        try:
            require(plugin(Kind.COMPUTE, site.compute.backend, cat.source, key), cat.source, key)
        except MissingClientError:
            continue
        configure(
            Kind.COMPUTE,
            site.compute.backend,
            site.compute.settings,
            source=cat.source,
            prefix=f"site[{i}].compute",
            name_key=key,
        )

"""Sites in bookkeeping: created or updated from the catalogue, looked up by name, marked (un)available."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from common.errors import NotFoundError

from .models import Site


@dataclass(frozen=True)
class SiteRow:
    name: str
    role: str
    share: float
    storage_url: str
    compute_backend: str


def upsert_sites(session: Session, sites: Iterable[SiteRow]) -> dict[str, int]:
    """Create or update sites by name; returns name → id for every site given."""
    ids: dict[str, int] = {}
    for s in sites:
        row = session.scalars(select(Site).where(Site.name == s.name)).one_or_none()
        if row is None:
            row = Site(name=s.name, available=True)
            session.add(row)
        row.role, row.share, row.storage_url, row.compute_backend = (
            s.role,
            s.share,
            s.storage_url,
            s.compute_backend,
        )
        session.flush()
        ids[s.name] = row.id
    return ids


def site_ids(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Site.name, Site.id)).all())


def site_names(session: Session) -> dict[int, str]:
    """Site id → name."""
    return {i: n for n, i in site_ids(session).items()}


def availability(session: Session) -> dict[str, bool]:
    """Site name → available (False once failed over), by name."""
    return {
        str(n): bool(a) for n, a in session.execute(select(Site.name, Site.available).order_by(Site.name))
    }


def unavailable(session: Session) -> set[str]:
    """Names of the sites failed over (``drp dr failover``)."""
    return {n for n, a in availability(session).items() if not a}


def site_id(session: Session, name: str) -> int:
    """The site's id; NotFoundError (naming the command that records it) when bookkeeping has none."""
    found = session.scalar(select(Site.id).where(Site.name == name))
    if found is None:
        raise NotFoundError(f"site {name!r} is not in bookkeeping (run `drp sites sync`)")
    return int(found)


def set_available(session: Session, name: str, available: bool) -> None:
    session.execute(update(Site).where(Site.name == name).values(available=available))

"""Failovers: which site's tracts moved where, with the rules replaced, until the site fails back."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .models import Failover


@dataclass(frozen=True)
class FailoverRow:
    id: int
    campaign_id: int
    from_site_id: int
    to_site_id: int
    tracts: list[int]
    rules: dict[int, int]  # suspended rule id → the rule that replaced it
    plan_version: int | None


def record(
    session: Session,
    campaign: int,
    from_site: int,
    to_site: int,
    tracts: list[int],
    rules: dict[int, int],
    plan_version: int | None,
) -> None:
    session.add(
        Failover(
            campaign_id=campaign,
            from_site_id=from_site,
            to_site_id=to_site,
            tracts=json.dumps(tracts),
            rules=json.dumps({str(k): v for k, v in rules.items()}),
            plan_version=plan_version,
            created_at=time.time(),
        )
    )


def active(session: Session, campaign: int, from_site: int) -> FailoverRow | None:
    """The site's latest failover in the campaign that has not been failed back."""
    row = session.scalar(
        select(Failover)
        .where(
            Failover.campaign_id == campaign,
            Failover.from_site_id == from_site,
            Failover.failed_back_at.is_(None),
        )
        .order_by(Failover.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    return FailoverRow(
        row.id,
        row.campaign_id,
        row.from_site_id,
        row.to_site_id,
        [int(t) for t in json.loads(row.tracts)],
        {int(k): int(v) for k, v in json.loads(row.rules).items()},
        row.plan_version,
    )


def close(session: Session, failover_id: int) -> None:
    """Mark the failover as failed back."""
    session.execute(update(Failover).where(Failover.id == failover_id).values(failed_back_at=time.time()))

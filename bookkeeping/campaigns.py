"""Campaigns in bookkeeping: creation, lookup by name, their datasets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import InvalidInputError, NotFoundError

from .bulk import copy_rows
from .events import log_event
from .models import Campaign
from .states import CampaignState


def create_campaign(session: Session, name: str, release: str, config: dict[str, Any] | None = None) -> int:
    now = time.time()
    c = Campaign(
        name=name,
        release=release,
        state=CampaignState.CREATED,
        config=json.dumps(config or {}, sort_keys=True),
        created_at=now,
        updated_at=now,
    )
    session.add(c)
    try:
        session.flush()
    except IntegrityError as err:
        raise InvalidInputError(f"campaign {name!r} already exists") from err
    log_event(session, "campaign.created", subject=name, campaign_id=c.id)
    return c.id


def attach_datasets(
    session: Session, campaign_id: int, dataset_ids: Iterable[int], role: str = "input"
) -> None:
    copy_rows(
        session,
        "campaign_datasets",
        ("campaign_id", "dataset_id", "role"),
        ((campaign_id, d, role) for d in dataset_ids),
    )


def campaign_id(session: Session, name: str) -> int:
    """The campaign's id; NotFoundError (naming the command that creates it) when there is none."""
    found = session.scalar(select(Campaign.id).where(Campaign.name == name))
    if found is None:
        raise NotFoundError(f"campaign {name!r} does not exist (run `drp campaign create`)")
    return int(found)


def attach_input(session: Session, campaign: int, dataset_id: int) -> None:
    """Mark a dataset as an input of the campaign (once)."""
    session.execute(
        text(
            "INSERT INTO campaign_datasets (campaign_id, dataset_id, role) VALUES (:c, :d, 'input') "
            "ON CONFLICT DO NOTHING"
        ),
        {"c": campaign, "d": dataset_id},
    )

"""Campaigns in bookkeeping: creation, lookup by name, their datasets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import InvalidInputError

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

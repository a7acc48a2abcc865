"""The event log: one row per thing that happened (campaign moves, rules, registrations, faults)."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy.orm import Session

from .models import Event


def log_event(
    session: Session,
    kind: str,
    *,
    subject: str = "",
    message: str = "",
    campaign_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    session.add(
        Event(
            ts=time.time(),
            kind=kind,
            subject=subject,
            message=message,
            campaign_id=campaign_id,
            payload=json.dumps(payload or {}, sort_keys=True),
        )
    )

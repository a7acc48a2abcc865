"""What the campaign report plots: attempts' wall time and memory, transfer throughput, validations.

Each function answers for one campaign with one query; the report turns the rows into figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .models import Validation
from .states import TransferState


@dataclass(frozen=True)
class AttemptSample:
    site: str
    step: str
    wall_s: float
    peak_rss: int | None
    cpu_s: float | None


def attempt_samples(session: Session, campaign: int) -> list[AttemptSample]:
    """Every finished attempt of the campaign: site, step, wall time, peak RSS, CPU seconds."""
    stmt = text(
        "SELECT s.name, j.step, a.ended_at - a.started_at, a.peak_rss, a.cpu_user + a.cpu_sys "
        "FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN sites s ON s.id = j.site_id "
        "WHERE j.campaign_id = :c AND a.started_at IS NOT NULL AND a.ended_at IS NOT NULL"
    )
    return [AttemptSample(*row) for row in session.execute(stmt, {"c": campaign})]


@dataclass(frozen=True)
class TransferSample:
    source: str
    dest: str
    bytes: int
    seconds: float | None


def transfer_samples(session: Session, campaign: int) -> list[TransferSample]:
    """Every DONE transfer of the campaign with its link, size and duration."""
    stmt = text(
        "SELECT a.name, b.name, t.bytes, t.finished_at - t.started_at FROM transfers t "
        "JOIN sites a ON a.id = t.source_site_id JOIN sites b ON b.id = t.dest_site_id "
        "WHERE t.campaign_id = :c AND t.state = :done AND t.started_at IS NOT NULL"
    )
    return [
        TransferSample(*row)
        for row in session.execute(stmt, {"c": campaign, "done": int(TransferState.DONE)})
    ]


def validations(session: Session, campaign: int) -> list[dict[str, Any]]:
    """The campaign's validation results as the report shows them (details unpacked)."""
    stmt = (
        select(
            Validation.tract,
            Validation.sites,
            Validation.quantity,
            Validation.value,
            Validation.threshold,
            Validation.passed,
            Validation.details,
        )
        .where(Validation.campaign_id == campaign)
        .order_by(Validation.tract, Validation.sites, Validation.quantity)
    )
    return [
        {
            "tract": t,
            "sites": s,
            "quantity": q,
            "value": v,
            "limit": lim,
            "passed": bool(p),
            **json.loads(d or "{}"),
        }
        for t, s, q, v, lim, p, d in session.execute(stmt)
    ]

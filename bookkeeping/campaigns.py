"""Campaigns in bookkeeping: creation, lookup, their datasets, validations, and the state machine.

A campaign's state changes only through :func:`transition`, which checks the move against
:data:`TRANSITIONS`, closes the phase it leaves (ticks, failures, message), opens the one it enters,
and writes a ``campaign.<state>`` event with ``{"from", "to"}`` — all in the caller's transaction, so a
crash leaves either the whole move or none of it. Staying in a state (a tick that waits) is not a
move: it counts the tick and keeps the message, without an event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import InvalidInputError, NotFoundError

from .bulk import copy_rows
from .events import log_event
from .models import Campaign, CampaignPhase, Event, Validation
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


def set_data_path(session: Session, name: str, description: str) -> None:
    """Record who moves the campaign's data (`campaign status` shows it); an event when it changes, as
    when a site's catalogue switches Rucio from satdrp's copies to the conveyor mid-campaign."""
    cid, config = session.execute(select(Campaign.id, Campaign.config).where(Campaign.name == name)).one()
    values = json.loads(config or "{}")
    if values.get("data_path") == description:
        return
    values["data_path"] = description
    session.execute(
        update(Campaign).where(Campaign.id == cid).values(config=json.dumps(values, sort_keys=True))
    )
    log_event(session, "campaign.data_path", subject=name, campaign_id=cid, message=description)


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


# --- the state machine ------------------------------------------------------------------------------
S = CampaignState
ACTIVE = (
    S.CREATED,
    S.PLANNED,
    S.REGISTERED,
    S.REPLICATING,
    S.PROCESSING,
    S.COLLECTING,
    S.VALIDATING,
    S.CONSOLIDATING,
)
TERMINAL = (S.DONE, S.FAILED, S.CANCELLED, S.PAUSED)  # a tick does nothing in these
_NEXT = dict(zip(ACTIVE, (*ACTIVE[1:], S.DONE), strict=True))
_BACK_TO_REPLICATING = (S.PROCESSING, S.COLLECTING)  # a failover gives a site tracts to fetch inputs for
TRANSITIONS: dict[CampaignState, frozenset[CampaignState]] = {
    **{
        s: frozenset(
            {_NEXT[s], S.FAILED, S.CANCELLED} | ({S.REPLICATING} if s in _BACK_TO_REPLICATING else set())
        )
        for s in ACTIVE
    },
    S.FAILED: frozenset({*ACTIVE, S.CANCELLED}),  # retry (the phase it failed in) or failover
    S.PAUSED: frozenset({S.CANCELLED}),
    S.DONE: frozenset(),
    S.CANCELLED: frozenset(),
}


class TransitionError(InvalidInputError):
    """A move the campaign state machine does not allow."""


@dataclass(frozen=True)
class CampaignRow:
    id: int
    name: str
    release: str
    state: CampaignState
    message: str | None
    config: str
    created_at: float
    updated_at: float


def get(session: Session, name: str) -> CampaignRow:
    """The campaign; NotFoundError (naming the command that creates it) when there is none."""
    row = session.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()
    if row is None:
        raise NotFoundError(f"campaign {name!r} does not exist (run `drp campaign create`)")
    return CampaignRow(
        row.id, row.name, row.release, row.state, row.message, row.config, row.created_at, row.updated_at
    )


def exists(session: Session, name: str) -> bool:
    return session.scalar(select(Campaign.id).where(Campaign.name == name)) is not None


def _phase(session: Session, campaign: int, phase: CampaignState, now: float) -> CampaignPhase:
    row = session.get(CampaignPhase, (campaign, phase))
    if row is None:
        row = CampaignPhase(campaign_id=campaign, phase=phase, started_at=now, ticks=0, failures=0)
        session.add(row)
    return row


def enter_first_state(session: Session, campaign: int) -> None:
    """Open the CREATED phase of a new campaign (the state it is created in)."""
    _phase(session, campaign, S.CREATED, time.time())


def transition(
    session: Session, campaign: int, to: CampaignState, reason: str, *, tick: bool = True
) -> CampaignState:
    """Move the campaign to ``to`` (or stay, when it is there already) and say why; ``tick`` counts a
    driver tick in the phase being left. Raises :class:`TransitionError` for a move not in
    :data:`TRANSITIONS`. Returns the state it was in."""
    camp = session.get(Campaign, campaign, with_for_update=True)
    if camp is None:
        raise NotFoundError(f"campaign id {campaign} does not exist")
    before, now = camp.state, time.time()
    if to is not before and to not in TRANSITIONS[before]:
        raise TransitionError(f"campaign {camp.name}: {before.name} cannot go to {to.name} ({reason})")
    left = _phase(session, campaign, before, now)
    left.ticks = (left.ticks or 0) + (1 if tick else 0)
    left.message = reason
    if to is not before:
        if to is S.FAILED:
            left.failures = (left.failures or 0) + 1
        left.finished_at = now
        _phase(session, campaign, to, now).finished_at = None
        log_event(
            session,
            f"campaign.{to.name.lower()}",
            subject=camp.name,
            campaign_id=campaign,
            message=reason,
            payload={"from": before.name, "to": to.name},
        )
    camp.state, camp.message, camp.updated_at = to, reason, now
    return before


def failed_phase(session: Session, campaign: int) -> CampaignState | None:
    """The phase a FAILED campaign failed in: where its last move to FAILED came from (or, for a
    campaign older than those events, the last phase it entered before FAILED)."""
    payload = session.scalar(
        select(Event.payload)
        .where(Event.campaign_id == campaign, Event.kind == "campaign.failed")
        .order_by(Event.id.desc())
        .limit(1)
    )
    came_from = json.loads(payload or "{}").get("from")
    if came_from in CampaignState.__members__:
        return CampaignState[came_from]
    return session.scalar(
        select(CampaignPhase.phase)
        .where(CampaignPhase.campaign_id == campaign, CampaignPhase.phase != S.FAILED)
        .order_by(CampaignPhase.started_at.desc())
        .limit(1)
    )


def phase_started(session: Session, campaign: int, phase: CampaignState) -> float:
    started = session.scalar(
        select(CampaignPhase.started_at).where(
            CampaignPhase.campaign_id == campaign, CampaignPhase.phase == phase
        )
    )
    return float(started or 0.0)


def has_phase(session: Session, campaign: int, phase: CampaignState) -> bool:
    return session.get(CampaignPhase, (campaign, phase)) is not None


def moves(session: Session, campaign: int) -> list[tuple[str, str]]:
    """Every recorded move of the campaign as (from, to), oldest first."""
    rows = session.scalars(
        select(Event.payload)
        .where(Event.campaign_id == campaign, Event.kind.like("campaign.%"))
        .order_by(Event.id)
    )
    out = []
    for payload in rows:
        p = json.loads(payload or "{}")
        if "from" in p and "to" in p:
            out.append((str(p["from"]), str(p["to"])))
    return out


# --- driver restarts (a site's run is restarted once per processing phase) ---------------------------
def note_restart(session: Session, campaign: int, site: str) -> None:
    log_event(session, "campaign.restart", subject=site, campaign_id=campaign, message=f"restart:{site}")


def restarts(session: Session, campaign: int, site: str, since: float) -> int:
    stmt = select(func.count()).where(
        Event.campaign_id == campaign,
        Event.kind == "campaign.restart",
        Event.message == f"restart:{site}",
        Event.ts >= since,
    )
    return int(session.execute(stmt).scalar_one())


def reset_restarts(session: Session, campaign: int) -> None:
    """A fresh budget of driver restarts (after a failover gives sites more to process)."""
    session.execute(delete(Event).where(Event.campaign_id == campaign, Event.kind == "campaign.restart"))


# --- waits on services (a tick that finds a service unreachable backs off) -------------------------
@dataclass(frozen=True)
class Wait:
    """The campaign's current wait: how many ticks in a row found a service away, when to try again."""

    count: int
    retry_at: float
    message: str


def current_wait(session: Session, campaign: int, state: CampaignState) -> Wait | None:
    """The wait in progress in ``state``: the campaign's latest event is a wait in this state (a tick
    that found the services back wrote ``campaign.resumed``; a move wrote ``campaign.<state>``)."""
    row = session.execute(
        select(Event.kind, Event.message, Event.payload)
        .where(
            Event.campaign_id == campaign,
            Event.kind.like("campaign.%"),
            Event.kind != "campaign.restart",
        )
        .order_by(Event.ts.desc(), Event.id.desc())
        .limit(1)
    ).first()
    if row is None or row.kind != "campaign.waiting":
        return None
    p = json.loads(row.payload or "{}")
    if p.get("state") != state.name:
        return None
    return Wait(int(p.get("count", 1)), float(p.get("retry_at", 0.0)), row.message)


def note_wait(
    session: Session, campaign: int, name: str, state: CampaignState, message: str, wait: Wait
) -> None:
    """One event per wait: what was away, the how-manieth wait in a row, and when the next try is."""
    log_event(
        session,
        "campaign.waiting",
        subject=name,
        campaign_id=campaign,
        message=message,
        payload={"state": state.name, "count": wait.count, "retry_at": wait.retry_at},
    )


def note_resumed(session: Session, campaign: int, name: str, state: CampaignState, after: Wait) -> None:
    log_event(
        session,
        "campaign.resumed",
        subject=name,
        campaign_id=campaign,
        message=f"{state.name.lower()}: the services answer again after {after.count} wait(s)",
        payload={"state": state.name, "waits": after.count},
    )


# --- validations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationRow:
    tract: int
    sites: str
    quantity: str
    value: float | None
    threshold: float | None
    passed: bool
    details: str


def replace_validations(session: Session, campaign: int, rows: Iterable[ValidationRow]) -> None:
    """The campaign's validation results, replacing any earlier ones."""
    session.execute(delete(Validation).where(Validation.campaign_id == campaign))
    now = time.time()
    session.add_all(
        Validation(
            campaign_id=campaign,
            tract=r.tract,
            sites=r.sites,
            quantity=r.quantity,
            value=r.value,
            threshold=r.threshold,
            passed=r.passed,
            details=r.details,
            created_at=now,
        )
        for r in rows
    )


def validation_totals(session: Session, campaign: int) -> tuple[int, int]:
    """(checks, checks passed) of the campaign's latest validation."""
    n, passed = session.execute(
        select(func.count(), func.coalesce(func.sum(case((Validation.passed, 1), else_=0)), 0)).where(
            Validation.campaign_id == campaign
        )
    ).one()
    return int(n), int(passed)

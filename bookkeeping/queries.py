"""Read-side questions operators ask every minute, answered from the aggregate tables.

Files, replicas and transfers are read only through their exact aggregates, so the cost depends on the
number of datasets, sites and steps, not on the number of files. The per-step attempt spans of
``campaign_status`` scan the campaign's attempts (one grouped query).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from common.errors import NotFoundError

from .models import Campaign, CampaignDataset, CampaignPhase, JobCount, ReplicaCount, Site, TransferCount
from .states import CampaignState, JobState, ReplicaState, TransferState


@dataclass(frozen=True)
class ReplicaSummary:
    site: str
    state: str
    files: int
    bytes: int


@dataclass(frozen=True)
class JobSummary:
    site: str
    step: str
    state: str
    jobs: int


@dataclass(frozen=True)
class TransferSummary:
    source: str
    dest: str
    state: str
    transfers: int
    bytes: int


@dataclass(frozen=True)
class PhaseSummary:
    phase: str
    started_at: float
    finished_at: float | None
    seconds: float  # so far, for the current phase
    ticks: int
    failures: int
    message: str | None


@dataclass(frozen=True)
class StepSummary:
    """One site and step: attempts, failed attempts, and the span of its attempts."""

    site: str
    step: str
    attempts: int
    failed_attempts: int
    started_at: float | None
    ended_at: float | None

    @property
    def seconds(self) -> float | None:
        return None if self.started_at is None or self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True)
class ValidationSummary:
    tract: int
    sites: str
    checks: int
    failed: int


@dataclass(frozen=True)
class CampaignStatus:
    campaign: str
    state: str
    replicas: list[ReplicaSummary] = field(default_factory=list)
    jobs: list[JobSummary] = field(default_factory=list)
    transfers: list[TransferSummary] = field(default_factory=list)
    message: str | None = None
    phases: list[PhaseSummary] = field(default_factory=list)
    steps: list[StepSummary] = field(default_factory=list)
    validations: list[ValidationSummary] = field(default_factory=list)
    data_path: str | None = None  # who moves the data (satdrp's engine, or Rucio's conveyor and FTS3)

    def bytes_transferred(self) -> int:
        return sum(t.bytes for t in self.transfers if t.state == TransferState.DONE.name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_transferred"] = self.bytes_transferred()
        for step, src in zip(d["steps"], self.steps, strict=True):
            step["seconds"] = src.seconds
        return d


def campaign_status(session: Session, campaign: str | int) -> CampaignStatus:
    """Files by replica state per site, jobs by state per site and step, transfers per link."""
    where = Campaign.id == campaign if isinstance(campaign, int) else Campaign.name == campaign
    camp = session.execute(
        select(Campaign.id, Campaign.name, Campaign.state, Campaign.message, Campaign.config).where(where)
    ).one_or_none()
    if camp is None:
        raise NotFoundError(f"campaign {campaign!r} does not exist")
    cid = camp.id
    site_name = dict(session.execute(select(Site.id, Site.name)).all())

    replicas = _replica_summaries(session, site_name, cid)
    jobs = session.execute(
        select(JobCount.site_id, JobCount.step, JobCount.state, JobCount.n_jobs)
        .where(JobCount.campaign_id == cid)
        .order_by(JobCount.site_id, JobCount.step, JobCount.state)
    ).all()
    xfers = session.execute(
        select(
            TransferCount.source_site_id,
            TransferCount.dest_site_id,
            TransferCount.state,
            TransferCount.n_transfers,
            TransferCount.n_bytes,
        )
        .where(TransferCount.campaign_id == cid)
        .order_by(TransferCount.source_site_id, TransferCount.dest_site_id, TransferCount.state)
    ).all()
    now = time.time()
    phases = [
        PhaseSummary(CampaignState(ph).name, start, end, (end or now) - start, int(ticks), int(fails), msg)
        for ph, start, end, ticks, fails, msg in session.execute(
            select(
                CampaignPhase.phase,
                CampaignPhase.started_at,
                CampaignPhase.finished_at,
                CampaignPhase.ticks,
                CampaignPhase.failures,
                CampaignPhase.message,
            )
            .where(CampaignPhase.campaign_id == cid)
            .order_by(CampaignPhase.started_at)
        )
    ]
    steps = [
        StepSummary(site_name[s], step, int(n), int(nf or 0), start, end)
        for s, step, n, nf, start, end in session.execute(
            text(
                "SELECT site_id, step, n_attempts, n_attempts - n_succeeded, first_started, last_ended "
                "FROM attempt_counts WHERE campaign_id = :c ORDER BY site_id, step"
            ),
            {"c": cid},
        )
    ]
    validations = [
        ValidationSummary(int(t), sites, int(n), int(nf or 0))
        for t, sites, n, nf in session.execute(
            text(
                "SELECT tract, sites, count(*), sum(CASE WHEN passed THEN 0 ELSE 1 END) FROM validations "
                "WHERE campaign_id = :c GROUP BY tract, sites ORDER BY tract, sites"
            ),
            {"c": cid},
        )
    ]
    return CampaignStatus(
        campaign=camp.name,
        state=camp.state.name,
        message=camp.message,
        data_path=json.loads(camp.config or "{}").get("data_path"),
        phases=phases,
        steps=steps,
        validations=validations,
        replicas=replicas,
        jobs=[JobSummary(site_name[s], step, JobState(st).name, int(n)) for s, step, st, n in jobs],
        transfers=[
            TransferSummary(site_name[a], site_name[b], TransferState(st).name, int(n), int(nb))
            for a, b, st, n, nb in xfers
        ],
    )


def _replica_summaries(
    session: Session, site_name: dict[int, str], campaign_id: int | None
) -> list[ReplicaSummary]:
    """Files and bytes per site and replica state, over one campaign's datasets or the whole database."""
    query = select(
        ReplicaCount.site_id,
        ReplicaCount.state,
        func.sum(ReplicaCount.n_files),
        func.sum(ReplicaCount.n_bytes),
    )
    if campaign_id is not None:
        query = query.join(CampaignDataset, CampaignDataset.dataset_id == ReplicaCount.dataset_id).where(
            CampaignDataset.campaign_id == campaign_id
        )
    rows = session.execute(
        query.group_by(ReplicaCount.site_id, ReplicaCount.state).order_by(
            ReplicaCount.site_id, ReplicaCount.state
        )
    ).all()
    return [ReplicaSummary(site_name[s], ReplicaState(st).name, int(n), int(b)) for s, st, n, b in rows]


def replica_totals(session: Session) -> list[ReplicaSummary]:
    """Whole-database files and bytes per site and replica state (for `drp data` and metrics)."""
    site_name = dict(session.execute(select(Site.id, Site.name)).all())
    return _replica_summaries(session, site_name, None)

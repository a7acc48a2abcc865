"""Read-side questions operators ask every minute, answered from the aggregate tables only.

None of these functions touches ``files``, ``replicas``, ``jobs`` or ``transfers``: their cost depends on
the number of datasets, sites and steps, not on the number of files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from drp.errors import NotFoundError

from .models import Campaign, CampaignDataset, JobCount, ReplicaCount, Site, TransferCount
from .states import JobState, ReplicaState, TransferState


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
class CampaignStatus:
    campaign: str
    state: str
    replicas: list[ReplicaSummary] = field(default_factory=list)
    jobs: list[JobSummary] = field(default_factory=list)
    transfers: list[TransferSummary] = field(default_factory=list)

    def bytes_transferred(self) -> int:
        return sum(t.bytes for t in self.transfers if t.state == TransferState.DONE.name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_transferred"] = self.bytes_transferred()
        return d


def campaign_status(session: Session, campaign: str | int) -> CampaignStatus:
    """Files by replica state per site, jobs by state per site and step, transfers per link."""
    where = Campaign.id == campaign if isinstance(campaign, int) else Campaign.name == campaign
    camp = session.execute(select(Campaign.id, Campaign.name, Campaign.state).where(where)).one_or_none()
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
    return CampaignStatus(
        campaign=camp.name,
        state=camp.state.name,
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

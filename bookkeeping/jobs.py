"""Per-job questions (`drp jobs ls|show|profile|logs`): these read ``jobs`` and ``attempts`` directly,
through the (campaign, site, step, data_id) unique index and the attempts' (job_id, number) index,
and always with a limit or an aggregate, never returning a whole table."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import case, func, select, text, update
from sqlalchemy.orm import Session

from common.errors import NotFoundError

from .bulk import bump_counts, copy_rows, load_temp, transitions
from .models import Attempt, Campaign, Job, Site
from .states import JobState

NameOf = Callable[[str, dict[str, Any]], str]  # (step, data id) -> the job's name (the pipeline's scheme)


@dataclass(frozen=True)
class JobInfo:
    name: str
    site: str
    step: str
    data_id: dict[str, Any]
    state: str
    attempts: int
    request_memory_mb: int | None


@dataclass(frozen=True)
class AttemptInfo:
    number: int
    exit_code: int | None
    signal: int | None
    started_at: float | None
    wall_seconds: float | None
    cpu_user: float | None
    cpu_sys: float | None
    peak_rss: int | None
    read_bytes: int | None
    write_bytes: int | None
    host: str | None
    error: str | None
    report_path: str | None


@dataclass(frozen=True)
class JobDetail:
    job: JobInfo
    attempts: list[AttemptInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepProfile:
    """Resource use of a step's attempts at a site (what operators size batch requests from)."""

    site: str
    step: str
    attempts: int
    failed: int
    wall_mean_s: float
    wall_max_s: float
    cpu_s: float
    cpu_efficiency: float  # CPU seconds / wall seconds
    peak_rss_max: int
    peak_rss_mean: int
    read_bytes: int
    write_bytes: int


def _campaign_id(session: Session, campaign: str) -> int:
    cid = session.scalar(select(Campaign.id).where(Campaign.name == campaign))
    if cid is None:
        raise NotFoundError(f"no campaign named {campaign!r}")
    return int(cid)


def _info(job: Job, site: str, name_of: NameOf) -> JobInfo:
    data_id = json.loads(job.data_id)
    return JobInfo(
        name_of(job.step, data_id),
        site,
        job.step,
        data_id,
        job.state.name,
        job.n_attempts,
        job.request_memory_mb,
    )


def list_jobs(
    session: Session,
    campaign: str,
    *,
    site: str | None = None,
    step: str | None = None,
    state: JobState | None = None,
    limit: int = 1000,
    name_of: NameOf,
) -> list[JobInfo]:
    q = (
        select(Job, Site.name)
        .join(Site, Site.id == Job.site_id)
        .where(Job.campaign_id == _campaign_id(session, campaign))
    )
    if site:
        q = q.where(Site.name == site)
    if step:
        q = q.where(Job.step == step)
    if state is not None:
        q = q.where(Job.state == state)
    return [_info(j, s, name_of) for j, s in session.execute(q.order_by(Job.id).limit(limit))]


def job_detail(
    session: Session,
    campaign: str,
    step: str,
    data_id: dict[str, Any],
    *,
    site: str | None = None,
    name_of: NameOf,
) -> list[JobDetail]:
    """A job and all its attempts, at every site that runs it (or one)."""
    q = (
        select(Job, Site.name)
        .join(Site, Site.id == Job.site_id)
        .where(
            Job.campaign_id == _campaign_id(session, campaign),
            Job.step == step,
            Job.data_id == data_id_key(data_id),
        )
    )
    if site:
        q = q.where(Site.name == site)
    out = []
    for row, site_name in session.execute(q.order_by(Site.name)):
        attempts = [
            AttemptInfo(
                a.number,
                a.exit_code,
                a.signal,
                a.started_at,
                None if a.started_at is None or a.ended_at is None else round(a.ended_at - a.started_at, 3),
                a.cpu_user,
                a.cpu_sys,
                a.peak_rss,
                a.read_bytes,
                a.write_bytes,
                a.host,
                a.stderr_tail,
                a.report_path,
            )
            for a in session.scalars(select(Attempt).where(Attempt.job_id == row.id).order_by(Attempt.number))
        ]
        out.append(JobDetail(_info(row, site_name, name_of), attempts))
    if not out:
        raise NotFoundError(
            f"no job {name_of(step, data_id)!r} in campaign {campaign!r}"
            + (f" at site {site!r}" if site else "")
        )
    return out


def step_profiles(session: Session, campaign: str, *, site: str | None = None) -> list[StepProfile]:
    wall = Attempt.ended_at - Attempt.started_at
    cpu = func.coalesce(Attempt.cpu_user, 0) + func.coalesce(Attempt.cpu_sys, 0)
    failed = func.sum(case((func.coalesce(Attempt.exit_code, -1) != 0, 1), else_=0))
    q = (
        select(
            Site.name,
            Job.step,
            func.count(),
            failed,
            func.avg(wall),
            func.max(wall),
            func.sum(cpu),
            func.sum(wall),
            func.max(Attempt.peak_rss),
            func.avg(Attempt.peak_rss),
            func.sum(Attempt.read_bytes),
            func.sum(Attempt.write_bytes),
        )
        .select_from(Attempt)
        .join(Job, Job.id == Attempt.job_id)
        .join(Site, Site.id == Job.site_id)
        .where(Job.campaign_id == _campaign_id(session, campaign))
        .group_by(Site.name, Job.step)
    )
    if site:
        q = q.where(Site.name == site)
    out = []
    for s, step, n, nfail, wmean, wmax, cpu_s, wall_s, rmax, rmean, rb, wb in session.execute(q):
        out.append(
            StepProfile(
                s,
                step,
                int(n),
                int(nfail or 0),
                float(wmean or 0),
                float(wmax or 0),
                float(cpu_s or 0),
                float(cpu_s or 0) / float(wall_s) if wall_s else 0.0,
                int(rmax or 0),
                int(rmean or 0),
                int(rb or 0),
                int(wb or 0),
            )
        )
    order = {s: i for i, s in enumerate(("calibrate", "warp", "coadd", "measure", "merge"))}
    return sorted(out, key=lambda p: (p.site, order.get(p.step, 99), p.step))


# --- writes -----------------------------------------------------------------------------------------
class JobRow(NamedTuple):
    site_id: int
    step: str
    data_id: str
    state: JobState = JobState.PENDING


class AttemptRow(NamedTuple):
    job_id: int
    number: int
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    cpu_user: float | None = None
    cpu_sys: float | None = None
    peak_rss: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    host: str | None = None
    stderr_tail: str | None = None
    report_path: str | None = None


def add_jobs(session: Session, campaign_id: int, jobs: Iterable[tuple[int, str, str, JobState]]) -> int:
    """Insert jobs of a campaign; ``data_id`` must already be canonical (see :func:`data_id_key`)."""
    now = time.time()
    counts: Counter[tuple[Any, ...]] = Counter()

    def rows() -> Iterator[tuple[Any, ...]]:
        for site_id, step, data_id, state in jobs:
            counts[(campaign_id, site_id, step, int(state))] += 1
            yield (campaign_id, site_id, step, data_id, int(state), 0, now, now)

    columns = ("campaign_id", "site_id", "step", "data_id", "state", "n_attempts", "created_at", "updated_at")
    copy_rows(session, "jobs", columns, rows(), what=f"adding jobs to campaign {campaign_id}")
    bump_counts(
        session,
        "job_counts",
        ("campaign_id", "site_id", "step", "state"),
        ("n_jobs",),
        {k: (v,) for k, v in counts.items()},
    )
    return sum(counts.values())


def data_id_key(data_id: dict[str, Any]) -> str:
    """Canonical text form of a data id: the same dict always gives the same key."""
    return json.dumps(data_id, sort_keys=True, separators=(",", ":"))


def set_job_states(session: Session, updates: Iterable[tuple[int, JobState]]) -> int:
    """Set job id → state in bulk and keep ``job_counts`` exact; returns the number of jobs given."""
    loaded = load_temp(
        session,
        "tmp_job_update",
        "job_id BIGINT PRIMARY KEY, state SMALLINT NOT NULL",
        ("job_id", "state"),
        ((j, int(s)) for j, s in updates),
    )
    trans = transitions(
        session,
        "SELECT j.campaign_id, j.site_id, j.step, j.state, t.state, count(*), 0 "
        "FROM tmp_job_update t JOIN jobs j ON j.id = t.job_id "
        "GROUP BY j.campaign_id, j.site_id, j.step, j.state, t.state",
        loaded,
        "jobs",
    )
    session.execute(
        text(
            "UPDATE jobs SET state = t.state, updated_at = :now FROM tmp_job_update t "
            "WHERE jobs.id = t.job_id AND jobs.state <> t.state"
        ),
        {"now": time.time()},
    )
    deltas: Counter[tuple[Any, ...]] = Counter()
    for camp, site, step, old, new, n, _ in trans:
        if old != new:
            deltas[(camp, site, step, old)] -= n
            deltas[(camp, site, step, new)] += n
    bump_counts(
        session,
        "job_counts",
        ("campaign_id", "site_id", "step", "state"),
        ("n_jobs",),
        {k: (v,) for k, v in deltas.items() if v},
    )
    session.execute(text("DROP TABLE tmp_job_update"))
    return loaded


ATTEMPT_COLUMNS = AttemptRow._fields


def add_attempts(session: Session, attempts: Iterable[AttemptRow]) -> int:
    """Insert job attempts (profiles) and raise each job's ``n_attempts`` to its highest number."""
    max_before = session.execute(text("SELECT coalesce(max(id), 0) FROM attempts")).scalar_one()
    n = [0]

    def rows() -> Iterator[AttemptRow]:
        for a in attempts:
            n[0] += 1
            yield a

    copy_rows(session, "attempts", ATTEMPT_COLUMNS, rows(), what="adding attempts")
    session.execute(
        text(
            "UPDATE jobs SET n_attempts = a.m FROM "
            "(SELECT job_id, max(number) AS m FROM attempts WHERE id > :after GROUP BY job_id) a "
            "WHERE jobs.id = a.job_id AND jobs.n_attempts < a.m"
        ),
        {"after": max_before},
    )
    return n[0]


def tract_job_states(session: Session, campaign: int, site_id: int) -> dict[int, set[JobState]]:
    """Tract → the states of the site's jobs on that tract (visit-level jobs have no tract: left out)."""
    out: dict[int, set[JobState]] = {}
    stmt = select(Job.data_id, Job.state).where(Job.campaign_id == campaign, Job.site_id == site_id)
    for data_id, state in session.execute(stmt):
        tract = json.loads(data_id).get("tract")
        if tract is not None:
            out.setdefault(int(tract), set()).add(JobState(state))
    return out


def unfinished(session: Session, campaign: int, site_id: int) -> list[tuple[int, dict[str, Any]]]:
    """(job id, data id) of the site's jobs in the campaign that have not SUCCEEDED."""
    stmt = select(Job.id, Job.data_id).where(
        Job.campaign_id == campaign, Job.site_id == site_id, Job.state != JobState.SUCCEEDED
    )
    return [(int(i), json.loads(d)) for i, d in session.execute(stmt)]


# --- what processing asks --------------------------------------------------------------------------------
def site_jobs(session: Session, campaign: int, site_id: int) -> dict[tuple[str, str], tuple[int, JobState]]:
    """(step, canonical data id) → (job id, state) of the site's jobs in the campaign."""
    stmt = select(Job.id, Job.step, Job.data_id, Job.state).where(
        Job.campaign_id == campaign, Job.site_id == site_id
    )
    return {(step, d): (int(i), JobState(st)) for i, step, d, st in session.execute(stmt)}


def recorded_attempts(session: Session, campaign: int, site_id: int) -> set[tuple[int, int]]:
    """(job id, attempt number) of every attempt recorded for the site's jobs."""
    stmt = (
        select(Attempt.job_id, Attempt.number)
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.campaign_id == campaign, Job.site_id == site_id)
    )
    return {(int(j), int(n)) for j, n in session.execute(stmt)}


def set_default_memory(session: Session, campaign: int, site_id: int, by_step: dict[str, int]) -> None:
    """Give the site's jobs without a memory request their step's default."""
    for step, mb in by_step.items():
        session.execute(
            update(Job)
            .where(
                Job.campaign_id == campaign,
                Job.site_id == site_id,
                Job.step == step,
                Job.request_memory_mb.is_(None),
            )
            .values(request_memory_mb=mb)
        )


def memory_requests(session: Session, campaign: int, site_id: int) -> list[tuple[str, dict[str, Any], int]]:
    """(step, data id, MB) of the site's jobs that carry a memory request."""
    stmt = select(Job.step, Job.data_id, Job.request_memory_mb).where(
        Job.campaign_id == campaign, Job.site_id == site_id, Job.request_memory_mb.is_not(None)
    )
    return [(str(s), json.loads(d), int(mb or 0)) for s, d, mb in session.execute(stmt)]


def raise_memory(
    session: Session, campaign: int, site_id: int, requests: Iterable[tuple[str, dict[str, Any], int]]
) -> int:
    """Raise (never lower) the memory request of (step, data id) jobs to MB; returns jobs changed."""
    changed = 0
    for step, data_id, mb in requests:
        res = session.execute(
            update(Job)
            .where(
                Job.campaign_id == campaign,
                Job.site_id == site_id,
                Job.step == step,
                Job.data_id == data_id_key(data_id),
                (Job.request_memory_mb.is_(None)) | (Job.request_memory_mb < mb),
            )
            .values(request_memory_mb=mb)
        )
        changed += res.rowcount  # type: ignore[attr-defined]
    return changed


def totals(session: Session, campaign: int) -> tuple[int, int]:
    """(jobs, attempts) of the campaign."""
    n_jobs = session.scalar(select(func.count()).select_from(Job).where(Job.campaign_id == campaign))
    n_attempts = session.scalar(
        select(func.count())
        .select_from(Attempt)
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.campaign_id == campaign)
    )
    return int(n_jobs or 0), int(n_attempts or 0)

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

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import InvalidInputError, NotFoundError

from .bulk import bump_counts, copy_rows, load_temp, transitions
from .models import Attempt, AttemptCount, Campaign, Job, JobCount, Site
from .states import DURATION_BUCKETS, JobState

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
    """Per site and step, from the ``attempt_counts`` aggregate (cost independent of the attempts)."""
    c = AttemptCount
    q = (
        select(
            Site.name,
            c.step,
            c.n_attempts,
            c.n_succeeded,
            c.n_wall,
            c.wall_s,
            c.wall_max,
            c.cpu_s,
            c.rss_max,
            c.n_rss,
            c.rss_sum,
            c.read_bytes,
            c.write_bytes,
        )
        .join(Site, Site.id == c.site_id)
        .where(c.campaign_id == _campaign_id(session, campaign))
    )
    if site:
        q = q.where(Site.name == site)
    out = []
    for s, step, n, ok, n_wall, wall_s, wmax, cpu_s, rmax, n_rss, rss_sum, rb, wb in session.execute(q):
        out.append(
            StepProfile(
                s,
                step,
                int(n),
                int(n) - int(ok),
                float(wall_s) / n_wall if n_wall else 0.0,
                float(wmax or 0),
                float(cpu_s),
                float(cpu_s) / float(wall_s) if wall_s else 0.0,
                int(rmax or 0),
                int(rss_sum) // n_rss if n_rss else 0,
                int(rb),
                int(wb),
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


_ATTEMPT_DDL = (
    "job_id BIGINT NOT NULL, number SMALLINT NOT NULL, exit_code SMALLINT, signal SMALLINT, "
    "started_at DOUBLE PRECISION, ended_at DOUBLE PRECISION, cpu_user DOUBLE PRECISION, "
    "cpu_sys DOUBLE PRECISION, peak_rss BIGINT, read_bytes BIGINT, write_bytes BIGINT, host VARCHAR(255), "
    "stderr_tail TEXT, report_path TEXT"
)


def _newer(column: str, op: str) -> str:
    """``SET`` clause keeping the larger (``op`` '>') or smaller ('<') of the row's and the new value."""
    t = f"attempt_counts.{column}"
    return (
        f"{column} = CASE WHEN {t} IS NULL OR excluded.{column} {op} {t} THEN excluded.{column} ELSE {t} END"
    )


_SUMS = (
    "n_attempts",
    "n_succeeded",
    "n_wall",
    "wall_s",
    "cpu_s",
    "n_rss",
    "rss_sum",
    "read_bytes",
    "write_bytes",
)
_ATTEMPT_COUNTS = (
    "INSERT INTO attempt_counts (campaign_id, site_id, step, n_attempts, n_succeeded, n_wall, wall_s, "
    "wall_max, cpu_s, n_rss, rss_sum, rss_max, read_bytes, write_bytes, first_started, last_ended) "
    "SELECT j.campaign_id, j.site_id, j.step, count(*), sum(CASE WHEN a.exit_code = 0 THEN 1 ELSE 0 END), "
    "count(a.ended_at - a.started_at), coalesce(sum(a.ended_at - a.started_at), 0), "
    "max(a.ended_at - a.started_at), coalesce(sum(coalesce(a.cpu_user, 0) + coalesce(a.cpu_sys, 0)), 0), "
    "count(a.peak_rss), coalesce(sum(a.peak_rss), 0), max(a.peak_rss), coalesce(sum(a.read_bytes), 0), "
    "coalesce(sum(a.write_bytes), 0), min(a.started_at), max(a.ended_at) "
    "FROM tmp_attempts a JOIN jobs j ON j.id = a.job_id WHERE true GROUP BY j.campaign_id, j.site_id, j.step "
    "ON CONFLICT (campaign_id, site_id, step) DO UPDATE SET "
    + ", ".join(f"{c} = attempt_counts.{c} + excluded.{c}" for c in _SUMS)
    + ", "
    + ", ".join(
        (
            _newer("wall_max", ">"),
            _newer("rss_max", ">"),
            _newer("first_started", "<"),
            _newer("last_ended", ">"),
        )
    )
)


def _bucket_case(column: str) -> str:
    """The :class:`AttemptDuration` bucket of ``column`` (bounds as bound parameters :b0, :b1, …)."""
    whens = " ".join(f"WHEN {column} <= :b{i} THEN {i}" for i in range(len(DURATION_BUCKETS)))
    return f"CASE {whens} ELSE {len(DURATION_BUCKETS)} END"


_ATTEMPT_DURATIONS = (
    "INSERT INTO attempt_durations (campaign_id, site_id, step, bucket, n_attempts) "
    f"SELECT j.campaign_id, j.site_id, j.step, {_bucket_case('a.ended_at - a.started_at')}, count(*) "
    "FROM tmp_attempts a JOIN jobs j ON j.id = a.job_id WHERE a.ended_at - a.started_at IS NOT NULL "
    "GROUP BY 1, 2, 3, 4 "
    "ON CONFLICT (campaign_id, site_id, step, bucket) DO UPDATE SET "
    "n_attempts = attempt_durations.n_attempts + excluded.n_attempts"
)


def add_attempts(session: Session, attempts: Iterable[AttemptRow]) -> int:
    """Insert job attempts (profiles), raise each job's ``n_attempts`` to its highest number and add
    them to the attempt aggregates. The rows go through a temporary table first, so the aggregates
    count exactly these rows whatever else commits meanwhile."""
    loaded = load_temp(session, "tmp_attempts", _ATTEMPT_DDL, ATTEMPT_COLUMNS, attempts)
    if not loaded:
        return 0
    cols = ", ".join(ATTEMPT_COLUMNS)
    try:
        session.execute(text(f"INSERT INTO attempts ({cols}) SELECT {cols} FROM tmp_attempts"))
    except IntegrityError as err:
        first = str(err.orig).splitlines()[0]
        raise InvalidInputError(f"adding attempts: rejected by the database: {first}") from err
    session.execute(text(_ATTEMPT_COUNTS))
    session.execute(text(_ATTEMPT_DURATIONS), {f"b{i}": b for i, b in enumerate(DURATION_BUCKETS)})
    session.execute(
        text(
            "UPDATE jobs SET n_attempts = a.m FROM "
            "(SELECT job_id, max(number) AS m FROM tmp_attempts GROUP BY job_id) a "
            "WHERE jobs.id = a.job_id AND jobs.n_attempts < a.m"
        )
    )
    return loaded


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
    n_jobs = session.scalar(select(func.sum(JobCount.n_jobs)).where(JobCount.campaign_id == campaign))
    n_attempts = session.scalar(
        select(func.sum(AttemptCount.n_attempts)).where(AttemptCount.campaign_id == campaign)
    )
    return int(n_jobs or 0), int(n_attempts or 0)

"""What `drp jobs` asks: a campaign's jobs by their pipeline names, their attempts, profiles and logs.

Bookkeeping stores a job as (step, data id); the pipeline names it (``warp_v001012_t2_p3``). These
functions join the two, so the CLI takes and shows names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bookkeeping import jobs
from bookkeeping.database import Database
from bookkeeping.jobs import JobDetail, JobInfo, StepProfile
from bookkeeping.states import JobState
from common.errors import InvalidInputError
from science.pipeline.jobs import Job, job_name


def list_jobs(
    db: Database,
    campaign: str,
    *,
    site: str | None = None,
    step: str | None = None,
    state: JobState | None = None,
    limit: int = 1000,
) -> list[JobInfo]:
    with db.session() as session:
        return jobs.list_jobs(
            session, campaign, site=site, step=step, state=state, limit=limit, name_of=job_name
        )


def job_detail(db: Database, campaign: str, name: str, *, site: str | None = None) -> list[JobDetail]:
    """The named job and its attempts at every site that runs it (or one)."""
    job = Job.from_name(name)
    with db.session() as session:
        return jobs.job_detail(session, campaign, job.step, job.data_id, site=site, name_of=job_name)


def step_profiles(db: Database, campaign: str, *, site: str | None = None) -> list[StepProfile]:
    with db.session() as session:
        return jobs.step_profiles(session, campaign, site=site)


def job_logs(
    db: Database, campaign: str, name: str, *, site: str | None, attempt: int | None, stream: str
) -> dict[str, Any]:
    """The stdout/stderr of one attempt (the latest by default), read from the paths its job report
    gives; an unreadable log falls back to the tail the report kept."""
    from instrumentation.profiler import read_report

    details = job_detail(db, campaign, name, site=site)
    if len(details) > 1:
        raise InvalidInputError(f"{name} runs at {', '.join(d.job.site for d in details)}: pass --site")
    chosen = [a for a in details[0].attempts if attempt is None or a.number == attempt]
    if not chosen or chosen[-1].report_path is None:
        raise InvalidInputError(f"{name}: no recorded attempt {attempt or ''}".rstrip())
    report = read_report(Path(str(chosen[-1].report_path)))
    out: dict[str, Any] = {"job": name, "attempt": report.attempt}
    for which, path in (("stdout", report.stdout_path), ("stderr", report.stderr_path)):
        if stream in (which, "both"):
            try:
                text = Path(path).read_text(errors="replace")
            except OSError as err:
                tail = getattr(report, f"{which}_tail")
                text = f"(log not readable: {err.strerror}; tail from the report follows)\n" + tail
            out[which] = {"path": path, "text": text}
    return out

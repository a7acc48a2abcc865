"""Processing at one site: the site's share as a workflow, its jobs in bookkeeping, reports ingested.

The driver's side of the compute back-ends: it builds the DAG from the campaign's split plan, records
every job (bulk, idempotent), hands the workflow to the site's back-end (by name, through the
registry) and ingests the job reports the profiler left on storage into ``attempts``. Workers never
write to the database; everything here can be re-run after a crash and converges to the same books.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bookkeeping.campaigns import create_campaign
from bookkeeping.database import Database
from bookkeeping.events import log_event
from bookkeeping.jobs import AttemptRow, add_attempts, add_jobs, data_id_key, set_job_states
from bookkeeping.models import Campaign
from bookkeeping.plans import StoredPlan, load_plan, site_tracts, store_plan
from bookkeeping.sites import upsert_sites
from bookkeeping.states import JobState
from common.atomic import write_json_atomic
from common.errors import ConfigError, NotFoundError
from drp.split import plan_split, replication_rules
from instrumentation.profiler import JobReport, read_report
from science.layout import Layout
from science.pipeline.jobs import STEPS, Job, ReleaseContext
from science.workflow import WorkflowSpec, write_workflow
from sites.catalogue import SiteCatalogue, SiteConfig
from sites.compute import ComputeBackend, RunReport, get_backend


@dataclass(frozen=True)
class IngestResult:
    attempts: int  # new attempts recorded
    unreadable: tuple[str, ...]  # report files that could not be parsed (left in place, reported)
    states: dict[str, int]  # job state name -> jobs changed to it

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "unreadable": list(self.unreadable), "states": self.states}


def workflow_dir(workdir: Path, campaign: str, site: str) -> Path:
    return workdir / "workflows" / campaign / site


def _ids(session: Session, campaign: str, site: str) -> tuple[int, int]:
    camp = session.scalar(select(Campaign.id).where(Campaign.name == campaign))
    if camp is None:
        raise NotFoundError(f"no campaign named {campaign!r}")
    site_id = session.scalar(text("SELECT id FROM sites WHERE name = :n"), {"n": site})
    if site_id is None:
        raise NotFoundError(f"no site named {site!r} in bookkeeping (run `drp sites sync`)")
    return int(camp), int(site_id)


def backend_for(site: SiteConfig) -> ComputeBackend:
    return get_backend(
        site.compute.backend, site.compute.settings, source=f"site catalogue: site {site.name}"
    )


def prepare(
    session: Session, campaign: str, site: SiteConfig, root: Path, workdir: Path, backend: ComputeBackend
) -> WorkflowSpec:
    """Write the site's workflow for its assigned tracts and record its jobs (once) in bookkeeping."""
    camp_id, site_id = _ids(session, campaign, site.name)
    release = session.scalar(select(Campaign.release).where(Campaign.id == camp_id))
    ctx = ReleaseContext(root, str(release))
    tracts = site_tracts(session, campaign, site.name)
    spec = write_workflow(ctx, site.name, tracts, workflow_dir(workdir, campaign, site.name))
    known = set(
        session.execute(
            text("SELECT step, data_id FROM jobs WHERE campaign_id = :c AND site_id = :s"),
            {"c": camp_id, "s": site_id},
        )
    )
    new = (
        (site_id, n.step, key, JobState.PENDING)
        for n in spec.nodes()
        if (n.step, key := data_id_key(n.data_id)) not in known
    )
    added = add_jobs(session, camp_id, new)
    if added:
        session.execute(
            text(
                "UPDATE jobs SET request_memory_mb = CASE step "
                + " ".join(f"WHEN '{s}' THEN {backend.settings.memory_for(s)}" for s in STEPS)
                + " END WHERE campaign_id = :c AND site_id = :s AND request_memory_mb IS NULL"
            ),
            {"c": camp_id, "s": site_id},
        )
    raised = {
        Job(step, json.loads(data_id)).name: mb
        for step, data_id, mb in session.execute(
            text(
                "SELECT step, data_id, request_memory_mb FROM jobs "
                "WHERE campaign_id = :c AND site_id = :s AND request_memory_mb IS NOT NULL"
            ),
            {"c": camp_id, "s": site_id},
        )
        if mb > backend.settings.memory_for(step)
    }
    write_json_atomic(spec.directory / "memory.json", raised)  # kept across restarts by every back-end
    log_event(
        session,
        "workflow.prepared",
        subject=f"{campaign}/{site.name}",
        campaign_id=camp_id,
        message=f"{spec.summary['n_jobs']} jobs ({added} new) for {len(tracts)} tracts",
        payload=spec.summary,
    )
    return spec


def _report_files(spec: WorkflowSpec) -> Iterator[tuple[str, int, Path]]:
    layout = Layout(spec.release)
    for step in STEPS:
        d = spec.root / layout.job_dir(step)
        if d.is_dir():
            for p in d.glob("*.json"):
                name, _, num = p.stem.rpartition(".")
                if num.isdigit():
                    yield name, int(num), p


def _attempt_row(jid: int, number: int, report: JobReport, path: Path) -> AttemptRow:
    u = report.usage
    return AttemptRow(
        job_id=jid,
        number=number,
        exit_code=report.exit_code,
        signal=report.signal,
        started_at=report.started_at,
        ended_at=report.ended_at,
        cpu_user=u.cpu_user,
        cpu_sys=u.cpu_sys,
        peak_rss=u.peak_rss_bytes,
        read_bytes=u.rchar,  # what the job read and wrote, page cache included (storage-only: report)
        write_bytes=u.wchar,
        host=report.host,
        stderr_tail=None if report.succeeded else report.error,
        report_path=str(path),
    )


def ingest(session: Session, campaign: str, site: str, spec: WorkflowSpec) -> IngestResult:
    """Record new job reports as attempts and bring job states in line with the latest reports."""
    camp_id, site_id = _ids(session, campaign, site)
    jobs = {
        (step, data_id): (jid, JobState(state))
        for jid, step, data_id, state in session.execute(
            text("SELECT id, step, data_id, state FROM jobs WHERE campaign_id = :c AND site_id = :s"),
            {"c": camp_id, "s": site_id},
        )
    }
    seen = set(
        session.execute(
            text(
                "SELECT a.job_id, a.number FROM attempts a JOIN jobs j ON j.id = a.job_id "
                "WHERE j.campaign_id = :c AND j.site_id = :s"
            ),
            {"c": camp_id, "s": site_id},
        )
    )
    files: dict[int, dict[int, Path]] = {}
    unreadable: list[str] = []
    for name, number, path in _report_files(spec):
        try:
            job = Job.from_name(name)
        except ValueError:
            unreadable.append(str(path))
            continue
        entry = jobs.get((job.step, data_id_key(job.data_id)))
        if entry is not None:  # else: a job this campaign/site does not own
            files.setdefault(entry[0], {})[number] = path
    rows: list[AttemptRow] = []
    latest: dict[int, JobState] = {}
    current = {jid: st for jid, st in jobs.values()}
    for jid, by_number in files.items():
        top = max(by_number)
        for number, path in sorted(by_number.items()):
            is_top = number == top and current[jid] is not JobState.SUCCEEDED
            if (jid, number) in seen and not is_top:
                continue  # only new attempts and the deciding one are read: ingest stays cheap
            try:
                report = read_report(path)
            except ValueError:
                unreadable.append(str(path))
                continue
            if number == top:
                latest[jid] = (
                    JobState.SUCCEEDED
                    if report.succeeded
                    else JobState.PENDING
                    if report.will_retry
                    else JobState.FAILED
                )
            if (jid, number) not in seen:
                rows.append(_attempt_row(jid, number, report, path))
    added = add_attempts(session, rows) if rows else 0
    changes = [(jid, st) for jid, st in latest.items() if current.get(jid) is not st]
    if changes:
        set_job_states(session, changes)
    summary: dict[str, int] = {}
    for _, st in changes:
        summary[st.name] = summary.get(st.name, 0) + 1
    if added or unreadable:
        log_event(
            session,
            "reports.ingested",
            subject=f"{campaign}/{site}",
            campaign_id=camp_id,
            message=f"{added} attempts, {len(unreadable)} unreadable reports",
            payload={"states": summary, "unreadable": unreadable[:20]},
        )
    return IngestResult(added, tuple(unreadable), summary)


def run(
    db: Database,
    campaign: str,
    site: SiteConfig,
    root: Path,
    workdir: Path,
    *,
    wait: bool = True,
    restart: bool = False,
) -> tuple[RunReport, IngestResult]:
    """Prepare, submit (or restart) through the site's back-end, and ingest what has been reported."""
    backend = backend_for(site)
    with db.session() as session:
        spec = prepare(session, campaign, site, root, workdir, backend)
    report = backend.restart(spec, wait=wait) if restart else backend.submit(spec, wait=wait)
    with db.session() as session:
        ingested = ingest(session, campaign, site.name, spec)
        record_memory(session, campaign, site.name, backend.memory_requests(spec))
    return report, ingested


def record_memory(session: Session, campaign: str, site: str, memory: dict[str, int]) -> int:
    """Raise bookkeeping's memory requests to the back-end's (never lower them); returns jobs changed."""
    if not memory:
        return 0
    camp_id, site_id = _ids(session, campaign, site)
    changed = 0
    for name, mb in memory.items():
        job = Job.from_name(name)
        res = session.execute(
            text(
                "UPDATE jobs SET request_memory_mb = :mb WHERE campaign_id = :c AND site_id = :s "
                "AND step = :step AND data_id = :d AND (request_memory_mb IS NULL OR request_memory_mb < :mb)"
            ),
            {"mb": mb, "c": camp_id, "s": site_id, "step": job.step, "d": data_id_key(job.data_id)},
        )
        changed += res.rowcount  # type: ignore[attr-defined]
    return changed


def status(db: Database, campaign: str, site: SiteConfig, workdir: Path) -> tuple[RunReport, IngestResult]:
    """The back-end's view of the site's run, after ingesting any new reports."""
    spec = WorkflowSpec.load(workflow_dir(workdir, campaign, site.name))
    backend = backend_for(site)
    report = backend.poll(spec)
    with db.session() as session:
        ingested = ingest(session, campaign, site.name, spec)
        record_memory(session, campaign, site.name, backend.memory_requests(spec))
    return report, ingested


def cancel(campaign: str, site: SiteConfig, workdir: Path) -> RunReport:
    spec = WorkflowSpec.load(workflow_dir(workdir, campaign, site.name))
    return backend_for(site).cancel(spec)


def report_summary(report: RunReport) -> str:
    return json.dumps(report.to_dict(), sort_keys=True)


def site_root(site: SiteConfig) -> Path:
    """The posix root a site's jobs read and write (compute needs POSIX storage)."""
    root = site.storage_path
    if root is None:
        raise ConfigError(
            "site catalogue", f"site {site.name}.storage", "processing needs a file:// storage root"
        )
    return root


def plan_campaign(
    db: Database, campaign: str, release: str, catalogue: SiteCatalogue, overlap: Iterable[int]
) -> StoredPlan:
    """Create the campaign if needed, sync the sites, and store a split plan (a new version if one
    exists, moving as few tracts as possible from the previous one)."""
    lead_root = site_root(catalogue.lead)
    ctx = ReleaseContext(lead_root, release)
    shares = {s.name: s.share for s in catalogue.sites}
    with db.session() as session:
        upsert_sites(session, [s.to_row() for s in catalogue.sites])
        if session.scalar(select(Campaign.id).where(Campaign.name == campaign)) is None:
            create_campaign(session, campaign, release)
        previous = load_plan(session, campaign)
        plan = plan_split(
            (t.id for t in ctx.skymap.tracts),
            shares,
            overlap,
            previous.plan if previous is not None else None,
        )
        store_plan(session, campaign, plan, shares, replication_rules)
    with db.session() as session:
        stored = load_plan(session, campaign)
    assert stored is not None
    return stored

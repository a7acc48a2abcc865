"""Processing at one site: the site's share as a workflow, its jobs in bookkeeping, reports ingested.

The driver's side of the compute back-ends: it builds the DAG from the campaign's split plan, records
every job (bulk, idempotent), hands the workflow to the site's back-end (by name, through the
registry) and ingests the job reports the profiler left on storage into ``attempts``. Workers never
write to the database; everything here can be re-run after a crash and converges to the same books.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bookkeeping import campaigns, jobs
from bookkeeping.campaigns import create_campaign
from bookkeeping.database import Database
from bookkeeping.events import log_event
from bookkeeping.files import available_at
from bookkeeping.jobs import AttemptRow, add_attempts, add_jobs, data_id_key, set_job_states
from bookkeeping.plans import StoredPlan, load_plan, site_tracts, store_plan
from bookkeeping.sites import site_id, upsert_sites
from bookkeeping.states import JobState
from common.atomic import write_json_atomic
from common.errors import ConfigError
from common.temporaries import sweep
from drp.split import plan_split, replication_rules
from instrumentation.profiler import JobReport, read_report
from science.layout import Layout
from science.pipeline.jobs import STEPS, Job, ReleaseContext
from science.workflow import WorkflowSpec, write_workflow
from sites.catalogue import SiteCatalogue, SiteConfig
from sites.compute import ComputeBackend, RunReport, RunState, get_backend
from sites.compute.base import INPUTS_FILE


@dataclass(frozen=True)
class IngestResult:
    attempts: int  # new attempts recorded
    unreadable: tuple[str, ...]  # report files that could not be parsed (left in place, reported)
    states: dict[str, int]  # job state name -> jobs changed to it

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "unreadable": list(self.unreadable), "states": self.states}


def workflow_dir(workdir: Path, campaign: str, site: str) -> Path:
    return workdir / "workflows" / campaign / site


def has_workflow(workdir: Path, campaign: str, site: str) -> bool:
    """Whether the site's workflow has been prepared (a site can be cancelled only once it has one)."""
    return (workflow_dir(workdir, campaign, site) / "workflow.json").is_file()


def _ids(session: Session, campaign: str, site: str) -> tuple[int, int]:
    return campaigns.get(session, campaign).id, site_id(session, site)


def backend_for(site: SiteConfig) -> ComputeBackend:
    return get_backend(
        site.compute.backend, site.compute.settings, source=f"site catalogue: site {site.name}"
    )


def prepare(
    session: Session, campaign: str, site: SiteConfig, root: Path, workdir: Path, backend: ComputeBackend
) -> WorkflowSpec:
    """Write the site's workflow for its assigned tracts and record its jobs (once) in bookkeeping."""
    camp = campaigns.get(session, campaign)
    sid = site_id(session, site.name)
    ctx = ReleaseContext(root, camp.release)
    tracts = site_tracts(session, campaign, site.name)
    spec = write_workflow(ctx, site.name, tracts, workflow_dir(workdir, campaign, site.name))
    known = jobs.site_jobs(session, camp.id, sid)
    new = (
        (sid, n.step, key, JobState.PENDING)
        for n in spec.nodes()
        if (n.step, key := data_id_key(n.data_id)) not in known
    )
    added = add_jobs(session, camp.id, new)
    if added:
        jobs.set_default_memory(session, camp.id, sid, {s: backend.settings.memory_for(s) for s in STEPS})
    raised = {
        Job(step, data_id).name: mb
        for step, data_id, mb in jobs.memory_requests(session, camp.id, sid)
        if mb > backend.settings.memory_for(step)
    }
    write_json_atomic(spec.directory / "memory.json", raised)  # kept across restarts by every back-end
    # the inputs no job of the workflow produces, as the books know them at the site (a planner's
    # replica catalogue: Pegasus)
    produced = {o for n in spec.nodes() for o in n.outputs}
    external = sorted({i for n in spec.nodes() for i in n.inputs} - produced)
    here = available_at(session, sid, external)
    write_json_atomic(
        spec.directory / INPUTS_FILE,
        {name: {"size": r.size, "adler32": r.adler32} for name, r in here.items()},
    )
    log_event(
        session,
        "workflow.prepared",
        subject=f"{campaign}/{site.name}",
        campaign_id=camp.id,
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
    camp_id, sid = _ids(session, campaign, site)
    owned = jobs.site_jobs(session, camp_id, sid)
    seen = jobs.recorded_attempts(session, camp_id, sid)
    files: dict[int, dict[int, Path]] = {}
    unreadable: list[str] = []
    for name, number, path in _report_files(spec):
        try:
            job = Job.from_name(name)
        except ValueError:
            unreadable.append(str(path))
            continue
        entry = owned.get((job.step, data_id_key(job.data_id)))
        if entry is not None:  # else: a job this campaign/site does not own
            files.setdefault(entry[0], {})[number] = path
    rows: list[AttemptRow] = []
    latest: dict[int, JobState] = {}
    current = {jid: st for jid, st in owned.values()}
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
    sweep_temporaries(db, campaign, site.name, spec.root / spec.release)
    report = backend.restart(spec, wait=wait) if restart else backend.submit(spec, wait=wait)
    with db.session() as session:
        ingested = ingest(session, campaign, site.name, spec)
        record_memory(session, campaign, site.name, backend.memory_requests(spec))
    return report, ingested


def sweep_temporaries(db: Database, campaign: str, site: str, tree: Path) -> int:
    """Remove the temporaries that dead writers (a job or driver killed -9) left in a site's release
    tree, before jobs run again and once processing is over; recorded as an event. Returns how many."""
    removed = [t for t in sweep(tree) if t.removed]
    if removed:
        with db.session() as session:
            log_event(
                session,
                "storage.temporaries_removed",
                subject=f"{campaign}/{site}",
                message=f"{len(removed)} temporary file(s) of dead writers removed, e.g. {removed[0].name}",
                payload={"files": len(removed), "bytes": sum(t.size for t in removed)},
            )
    return len(removed)


def record_memory(session: Session, campaign: str, site: str, memory: dict[str, int]) -> int:
    """Raise bookkeeping's memory requests to the back-end's (never lower them); returns jobs changed."""
    if not memory:
        return 0
    camp_id, sid = _ids(session, campaign, site)
    parsed = [(Job.from_name(name), mb) for name, mb in memory.items()]
    return jobs.raise_memory(session, camp_id, sid, [(j.step, j.data_id, mb) for j, mb in parsed])


def status(db: Database, campaign: str, site: SiteConfig, workdir: Path) -> tuple[RunReport, IngestResult]:
    """The back-end's view of the site's run, after ingesting any new reports. A run the back-end calls
    succeeded while a job's report cannot be read is FAILED: the books cannot show that job ran, and a
    restart runs it again (back-ends count a job with no readable report as not run)."""
    spec = WorkflowSpec.load(workflow_dir(workdir, campaign, site.name))
    backend = backend_for(site)
    report = backend.poll(spec)
    with db.session() as session:
        ingested = ingest(session, campaign, site.name, spec)
        record_memory(session, campaign, site.name, backend.memory_requests(spec))
        behind = []
        if report.state is RunState.SUCCEEDED:
            owned = jobs.site_jobs(session, *_ids(session, campaign, site.name))
            behind = [k for k, (_, st) in owned.items() if st is not JobState.SUCCEEDED]
    if behind:
        step, data_id = behind[0]
        why = f"; unreadable: {ingested.unreadable[0]}" if ingested.unreadable else ""
        report = dataclasses.replace(
            report,
            state=RunState.FAILED,
            message=f"{len(behind)} job(s) with no readable report of success (e.g. {step} {data_id}{why}): "
            "they run again",
        )
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
        if not campaigns.exists(session, campaign):
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

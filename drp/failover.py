"""Moving a site's unfinished processing to another site (``drp dr failover``) and back (``failback``).

Failover from S to T, under the campaign lock:

1. S's run is cancelled (if anything of it still runs) and its job reports are ingested, so that
   bookkeeping knows which of S's tracts are finished (every job of the tract SUCCEEDED).
2. A new split-plan version gives S's unfinished tracts to T. S leaves the plan's sites, so it no
   longer takes part in the overlap. S keeps its finished tracts, whose outputs stay on its storage.
3. The rules that feed S are replaced: each unsatisfied rule placed at S is SUSPENDED, with the reason
   recorded, and replaced by the same rule with S swapped for T (``site=S|site=X`` → ``site=T|site=X``)
   or excluded (``*`` → ``*\\site=S``). Copies still queued to S are cancelled. Nothing is deleted.
4. S is marked unavailable: no processing there and no new copies to it. Its existing replicas remain
   sources while its storage answers.
5. S's jobs that had not succeeded are CANCELLED. T's workflow is re-prepared with its new tracts on the
   next tick; the local executor resumes T's finished jobs from their reports. A campaign that was
   processing (or FAILED while replicating or processing) goes back to REPLICATING, so T receives the
   inputs of its new tracts first.

Failback of S reverses this for the work not yet done. The moved tracts that T has not finished go back
to S, S becomes available, the original rules are restored, and the replacements are suspended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from bookkeeping import campaigns, failovers, jobs
from bookkeeping import rules as ruledb
from bookkeeping.campaigns import CampaignRow, transition
from bookkeeping.events import log_event
from bookkeeping.files import drop_pending_replicas
from bookkeeping.plans import load_plan, store_plan
from bookkeeping.sites import set_available, site_ids, site_names, unavailable
from bookkeeping.states import CampaignState, JobState, RuleState, TransferState
from bookkeeping.transfers import active_to, set_transfer_states
from common.errors import InvalidInputError, NotFoundError
from drp.campaign import CampaignDriver
from drp.split import SplitPlan, replication_rules, site_expression
from transfer.expressions import check, evaluate

_REPLICATE_AGAIN = (CampaignState.PROCESSING, CampaignState.COLLECTING)


@dataclass
class FailoverReport:
    campaign: str
    action: str  # failover | failback
    from_site: str
    to_site: str
    dry_run: bool
    tracts_moved: list[int] = field(default_factory=list)
    tracts_kept: list[int] = field(default_factory=list)  # finished where they were
    rules_replaced: dict[int, int] = field(default_factory=dict)  # old rule id → new rule id
    transfers_cancelled: int = 0
    jobs_cancelled: int = 0
    plan_version: int | None = None
    state_before: str = ""
    state_after: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finished(states: dict[int, set[JobState]], tract: int) -> bool:
    return states.get(tract, set()) == {JobState.SUCCEEDED}


def _swap(expression: str, old: str, new: str | None) -> str:
    """``site=a|site=old`` → ``site=a|site=new``; anything else → ``(expression)\\site=old``."""
    parts = expression.split("|")
    if all(p.startswith("site=") for p in parts):
        sites = {p.removeprefix("site=") for p in parts} - {old}
        if new is not None:
            sites.add(new)
        if sites:
            return site_expression(sites)
    return f"{expression}\\site={old}" if expression == "*" else f"({expression})\\site={old}"


def _cancel_run(driver: CampaignDriver, site: str, *, forget: bool) -> None:
    """Stop the site's run if any; ``forget`` removes its workflow so the next tick re-prepares it."""
    from drp import processing

    cfg = driver.catalogue.get(site)
    if not processing.has_workflow(driver.cfg.workdir, driver.name, site):
        return
    try:
        processing.cancel(driver.name, cfg, driver.cfg.workdir)
    except (NotFoundError, OSError, ValueError):
        pass
    try:
        processing.status(driver.db, driver.name, cfg, driver.cfg.workdir)  # ingest what it reported
    except (NotFoundError, OSError, ValueError):
        pass
    if forget:
        (processing.workflow_dir(driver.cfg.workdir, driver.name, site) / "workflow.json").unlink(
            missing_ok=True
        )


def _replace_rules(
    driver: CampaignDriver, session: Session, camp_id: int, old: str, new: str | None, reason: str
) -> dict[int, int]:
    """Suspend the campaign's unsatisfied rules placed at ``old``; add their equivalents without it."""
    old_id = site_ids(session)[old]
    replaced: dict[int, int] = {}
    todo = ruledb.listed(session, campaign_id=camp_id, states=[RuleState.REPLICATING, RuleState.STUCK])
    placed = ruledb.placements(session, [r.id for r in todo])
    for rule in todo:
        if old_id not in placed.get(rule.id, []) and f"site={old}" not in rule.expression.split("|"):
            continue
        expression = _swap(rule.expression, old, new)
        check(expression)
        ruledb.set_state(session, rule, RuleState.SUSPENDED, reason)
        copies = max(1, min(rule.copies, len(evaluate(expression, driver.replication.site_attributes()))))
        info = driver.replication.add_rule(session, rule.dataset, expression, copies, campaign=driver.name)
        replaced[rule.id] = info.id
    return replaced


def _cancel_transfers_to(session: Session, site_id: int, rule_ids: list[int]) -> int:
    """Cancel queued copies of suspended rules to a site and drop their COPYING replicas there."""
    rows = active_to(session, site_id, rule_ids)
    if rows:
        set_transfer_states(
            session, ((t, TransferState.CANCELED, "cancelled: site failed over") for t, _ in rows)
        )
        drop_pending_replicas(session, ((f, site_id) for _, f in rows))
    return len(rows)


def _campaign_back(session: Session, camp: CampaignRow, message: str) -> CampaignState:
    """A processing (or processing/replication-FAILED) campaign goes back to REPLICATING; any other
    keeps its state with the message. Returns the state it is in now."""
    back = camp.state in _REPLICATE_AGAIN or (
        camp.state is CampaignState.FAILED
        and campaigns.failed_phase(session, camp.id) in (CampaignState.REPLICATING, *_REPLICATE_AGAIN)
    )
    to = CampaignState.REPLICATING if back else camp.state
    transition(session, camp.id, to, message, tick=False)
    if back and campaigns.has_phase(session, camp.id, CampaignState.PROCESSING):
        campaigns.reset_restarts(session, camp.id)  # a fresh budget for the sites that now process more
    return to


def failover(
    driver: CampaignDriver, source: str, target: str, *, include_finished: bool = False, dry_run: bool = False
) -> FailoverReport:
    """Move ``source``'s unfinished processing (and the rules that feed it) to ``target``."""
    if source == target:
        raise InvalidInputError("--from and --to must be different sites")
    driver.catalogue.get(source)
    driver.catalogue.get(target)
    with driver.lock():
        with driver.db.session() as session:
            _check_failover(session, driver.name, source, target)
        if not dry_run:
            _cancel_run(driver, source, forget=False)
        with driver.db.session() as session:
            camp = campaigns.get(session, driver.name)
            stored = load_plan(session, driver.name)
            assert stored is not None
            ids = site_ids(session)
            report = FailoverReport(
                driver.name, "failover", source, target, dry_run, state_before=camp.state.name
            )
            states = jobs.tract_job_states(session, camp.id, ids[source])
            mine = sorted(t for t, s in stored.plan.assignment.items() if s == source)
            report.tracts_kept = [t for t in mine if _finished(states, t) and not include_finished]
            report.tracts_moved = [t for t in mine if t not in report.tracts_kept]
            if dry_run:
                report.state_after = camp.state.name
                return report
            assignment = {
                t: (target if t in report.tracts_moved else s) for t, s in stored.plan.assignment.items()
            }
            sites = tuple(s for s in stored.plan.sites if s != source)
            shares = {s: stored.shares.get(s, 0.0) for s in sites}
            shares[target] = shares.get(target, 0.0) + stored.shares.get(source, 0.0)
            plan = SplitPlan(assignment, stored.plan.overlap, sites)
            report.plan_version = store_plan(session, driver.name, plan, shares, replication_rules)
            set_available(session, source, False)
            reason = f"failover of {source} to {target} (plan v{report.plan_version})"
            report.rules_replaced = _replace_rules(driver, session, camp.id, source, target, reason)
            report.transfers_cancelled = _cancel_transfers_to(
                session, ids[source], list(report.rules_replaced)
            )
            report.jobs_cancelled = _cancel_jobs(session, camp.id, ids[source], None)
            failovers.record(
                session,
                camp.id,
                ids[source],
                ids[target],
                report.tracts_moved,
                report.rules_replaced,
                report.plan_version,
            )
            message = f"{reason}: {len(report.tracts_moved)} tract(s) moved, {len(report.tracts_kept)} kept"
            report.state_after = _campaign_back(session, camp, message).name
            log_event(session, "dr.failover", subject=source, campaign_id=camp.id, message=message)
        _cancel_run(driver, target, forget=True)  # re-prepared with its new tracts at the next tick
        return report


def _check_failover(session: Session, campaign: str, source: str, target: str) -> None:
    camp = campaigns.get(session, campaign)
    if camp.state in (CampaignState.DONE, CampaignState.CANCELLED):
        raise InvalidInputError(f"campaign {campaign} is {camp.state.name}: nothing to fail over")
    stored = load_plan(session, campaign)
    if stored is None:
        raise InvalidInputError(f"campaign {campaign} has no split plan yet: nothing to move")
    if source not in stored.plan.sites:
        raise InvalidInputError(f"site {source} does not process in campaign {campaign} (failed over?)")
    if target in unavailable(session):
        raise InvalidInputError(f"site {target} is itself failed over (`drp dr failback` it first)")
    if target not in stored.plan.sites:
        raise InvalidInputError(f"site {target} does not process in campaign {campaign}")


def _cancel_jobs(session: Session, campaign: int, site_id: int, tracts: list[int] | None) -> int:
    """CANCEL the site's jobs that have not succeeded (only those of ``tracts`` when given)."""
    todo = [
        (job, JobState.CANCELLED)
        for job, data_id in jobs.unfinished(session, campaign, site_id)
        if tracts is None or data_id.get("tract") in tracts
    ]
    if todo:
        jobs.set_job_states(session, todo)
    return len(todo)


def failback(driver: CampaignDriver, site: str, *, dry_run: bool = False) -> FailoverReport:
    """Give ``site`` back the moved tracts its replacement has not finished; restore its rules."""
    driver.catalogue.get(site)
    with driver.lock():
        with driver.db.session() as session:
            camp = campaigns.get(session, driver.name)
            row = failovers.active(session, camp.id, site_ids(session).get(site, -1))
            if row is None:
                raise NotFoundError(f"site {site} has no active failover in campaign {driver.name}")
            target = site_names(session)[row.to_site_id]
            report = FailoverReport(
                driver.name, "failback", target, site, dry_run, state_before=camp.state.name
            )
            _split_moved(session, report, camp.id, row)
            if dry_run:
                report.state_after = camp.state.name
                return report
        _cancel_run(driver, target, forget=False)
        with driver.db.session() as session:
            camp = campaigns.get(session, driver.name)
            stored = load_plan(session, driver.name)
            assert stored is not None
            _split_moved(session, report, camp.id, row)  # again: the cancelled run may have finished more
            assignment = {
                t: (site if t in report.tracts_moved else s) for t, s in stored.plan.assignment.items()
            }
            order = [s.name for s in driver.catalogue.sites]
            sites = tuple(sorted({*stored.plan.sites, site}, key=order.index))
            shares = {s.name: s.share for s in driver.catalogue.sites if s.name in sites}
            plan = SplitPlan(assignment, stored.plan.overlap, sites)
            report.plan_version = store_plan(session, driver.name, plan, shares, replication_rules)
            set_available(session, site, True)
            reason = f"failback of {site} from {target} (plan v{report.plan_version})"
            report.rules_replaced = _restore_rules(driver, session, row.rules, reason)
            report.jobs_cancelled = _cancel_jobs(session, camp.id, row.to_site_id, report.tracts_moved)
            failovers.close(session, row.id)
            message = f"{reason}: {len(report.tracts_moved)} tract(s) back, {len(report.tracts_kept)} stay"
            report.state_after = _campaign_back(session, camp, message).name
            log_event(session, "dr.failback", subject=site, campaign_id=camp.id, message=message)
        _cancel_run(driver, target, forget=True)
        _cancel_run(driver, site, forget=True)
        return report


def _split_moved(session: Session, report: FailoverReport, camp_id: int, row: failovers.FailoverRow) -> None:
    """The moved tracts the replacement site finished (they stay) and the others (they go back)."""
    states = jobs.tract_job_states(session, camp_id, row.to_site_id)
    report.tracts_kept = [t for t in row.tracts if _finished(states, t)]
    report.tracts_moved = [t for t in row.tracts if t not in report.tracts_kept]


def _restore_rules(
    driver: CampaignDriver, session: Session, replaced: dict[int, int], reason: str
) -> dict[int, int]:
    """Suspend the replacement rules not yet satisfied and add the originals again."""
    restored: dict[int, int] = {}
    for old_id, new_id in replaced.items():
        old, new = ruledb.get(session, old_id), ruledb.get(session, new_id)
        if new.state is not RuleState.OK:
            ruledb.set_state(session, new, RuleState.SUSPENDED, reason)
        info = driver.replication.add_rule(
            session, old.dataset, old.expression, old.copies, campaign=driver.name
        )
        restored[new.id] = info.id
    return restored

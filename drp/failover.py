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

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bookkeeping.events import log_event
from bookkeeping.files import drop_pending_replicas
from bookkeeping.jobs import set_job_states
from bookkeeping.models import Campaign, CampaignPhase, Failover, Rule
from bookkeeping.plans import load_plan, store_plan
from bookkeeping.sites import site_ids
from bookkeeping.states import CampaignState, JobState, RuleState, TransferState
from bookkeeping.transfers import set_transfer_states
from common.errors import InvalidInputError, NotFoundError
from drp.campaign import CampaignDriver, failed_phase
from drp.locking import campaign_lock
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


def _tract_states(session: Session, camp_id: int, site_id: int) -> dict[int, set[int]]:
    """Tract → the states of the site's jobs on that tract."""
    out: dict[int, set[int]] = {}
    for data_id, state in session.execute(
        text("SELECT data_id, state FROM jobs WHERE campaign_id = :c AND site_id = :s"),
        {"c": camp_id, "s": site_id},
    ):
        tract = json.loads(data_id).get("tract")
        if tract is not None:
            out.setdefault(int(tract), set()).add(int(state))
    return out


def _finished(states: dict[int, set[int]], tract: int) -> bool:
    return states.get(tract, set()) == {int(JobState.SUCCEEDED)}


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
    spec_dir = processing.workflow_dir(driver.cfg.workdir, driver.name, site)
    if not (spec_dir / "workflow.json").is_file():
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
        (spec_dir / "workflow.json").unlink(missing_ok=True)


def _replace_rules(
    driver: CampaignDriver, session: Session, camp_id: int, old: str, new: str | None, reason: str
) -> dict[int, int]:
    """Suspend the campaign's unsatisfied rules placed at ``old``; add their equivalents without it."""
    by_name = site_ids(session)
    replaced: dict[int, int] = {}
    rules = list(
        session.scalars(
            select(Rule)
            .where(Rule.campaign_id == camp_id, Rule.state.in_([RuleState.REPLICATING, RuleState.STUCK]))
            .order_by(Rule.id)
        )
    )
    for rule in rules:
        placed = {
            int(s)
            for (s,) in session.execute(
                text("SELECT site_id FROM rule_sites WHERE rule_id = :r"), {"r": rule.id}
            )
        }
        if by_name[old] not in placed and f"site={old}" not in rule.site_expression.split("|"):
            continue
        expression = _swap(rule.site_expression, old, new)
        check(expression)
        ds = session.execute(
            text("SELECT scope, name FROM datasets WHERE id = :d"), {"d": rule.dataset_id}
        ).one()
        rule.state, rule.stuck_reason, rule.updated_at = RuleState.SUSPENDED, reason, time.time()
        session.flush()
        copies = max(1, min(rule.copies, len(evaluate(expression, driver.replication.site_attributes()))))
        info = driver.replication.add_rule(
            session, f"{ds.scope}:{ds.name}", expression, copies, campaign=driver.name
        )
        replaced[rule.id] = info.id
    return replaced


def _cancel_transfers_to(session: Session, site_id: int, rule_ids: list[int]) -> int:
    """Cancel queued copies of suspended rules to a site and drop their COPYING replicas there."""
    if not rule_ids:
        return 0
    rows = session.execute(
        text(
            "SELECT id, file_id FROM transfers WHERE dest_site_id = :s AND state IN (1, 2, 3) "
            "AND rule_id IN (" + ", ".join(str(int(r)) for r in rule_ids) + ")"
        ),
        {"s": site_id},
    ).all()
    if rows:
        set_transfer_states(
            session, ((t, TransferState.CANCELED, "cancelled: site failed over") for t, _ in rows)
        )
        drop_pending_replicas(session, ((f, site_id) for _, f in rows))
    return len(rows)


def _campaign_back(session: Session, camp: Campaign, message: str) -> None:
    """A processing (or processing/replication-FAILED) campaign goes back to REPLICATING."""
    state = camp.state
    if state is CampaignState.FAILED:
        if failed_phase(session, camp.id) not in (CampaignState.REPLICATING, *_REPLICATE_AGAIN):
            camp.message = message
            return
    elif state not in _REPLICATE_AGAIN:
        camp.message = message
        return
    camp.state, camp.message, camp.updated_at = CampaignState.REPLICATING, message, time.time()
    row = session.get(CampaignPhase, (camp.id, CampaignState.REPLICATING))
    if row is not None:
        row.finished_at = None
    if session.get(CampaignPhase, (camp.id, CampaignState.PROCESSING)) is not None:
        # a fresh budget of driver restarts for the sites that now process more
        session.execute(
            text("DELETE FROM events WHERE campaign_id = :c AND kind = 'campaign.restart'"), {"c": camp.id}
        )


def failover(
    driver: CampaignDriver, source: str, target: str, *, include_finished: bool = False, dry_run: bool = False
) -> FailoverReport:
    """Move ``source``'s unfinished processing (and the rules that feed it) to ``target``."""
    if source == target:
        raise InvalidInputError("--from and --to must be different sites")
    driver.catalogue.get(source)
    driver.catalogue.get(target)
    with campaign_lock(driver.cfg.workdir, driver.name):
        with driver.db.session() as session:
            camp = driver._campaign(session)
            if camp.state in (CampaignState.DONE, CampaignState.CANCELLED):
                raise InvalidInputError(f"campaign {driver.name} is {camp.state.name}: nothing to fail over")
            stored = load_plan(session, driver.name)
            if stored is None:
                raise InvalidInputError(f"campaign {driver.name} has no split plan yet: nothing to move")
            if source not in stored.plan.sites:
                raise InvalidInputError(
                    f"site {source} does not process in campaign {driver.name} (failed over?)"
                )
            if target in driver._unavailable(session):
                raise InvalidInputError(f"site {target} is itself failed over (`drp dr failback` it first)")
            if target not in stored.plan.sites:
                raise InvalidInputError(f"site {target} does not process in campaign {driver.name}")
        if not dry_run:
            _cancel_run(driver, source, forget=False)
        with driver.db.session() as session:
            camp = driver._campaign(session)
            ids = site_ids(session)
            report = FailoverReport(
                driver.name, "failover", source, target, dry_run, state_before=camp.state.name
            )
            states = _tract_states(session, camp.id, ids[source])
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
            report.plan_version = store_plan(
                session,
                driver.name,
                SplitPlan(assignment, stored.plan.overlap, sites),
                shares,
                replication_rules,
            )
            session.execute(text("UPDATE sites SET available = false WHERE name = :n"), {"n": source})
            reason = f"failover of {source} to {target} (plan v{report.plan_version})"
            report.rules_replaced = _replace_rules(driver, session, camp.id, source, target, reason)
            report.transfers_cancelled = _cancel_transfers_to(
                session, ids[source], list(report.rules_replaced)
            )
            pending = [
                (int(j), JobState.CANCELLED)
                for (j,) in session.execute(
                    text("SELECT id FROM jobs WHERE campaign_id = :c AND site_id = :s AND state <> :ok"),
                    {"c": camp.id, "s": ids[source], "ok": int(JobState.SUCCEEDED)},
                )
            ]
            if pending:
                set_job_states(session, pending)
            report.jobs_cancelled = len(pending)
            session.add(
                Failover(
                    campaign_id=camp.id,
                    from_site_id=ids[source],
                    to_site_id=ids[target],
                    tracts=json.dumps(report.tracts_moved),
                    rules=json.dumps({str(k): v for k, v in report.rules_replaced.items()}),
                    plan_version=report.plan_version,
                    created_at=time.time(),
                )
            )
            message = f"{reason}: {len(report.tracts_moved)} tract(s) moved, {len(report.tracts_kept)} kept"
            _campaign_back(session, camp, message)
            log_event(session, "dr.failover", subject=source, campaign_id=camp.id, message=message)
            report.state_after = camp.state.name
        _cancel_run(driver, target, forget=True)  # re-prepared with its new tracts at the next tick
        return report


def failback(driver: CampaignDriver, site: str, *, dry_run: bool = False) -> FailoverReport:
    """Give ``site`` back the moved tracts its replacement has not finished; restore its rules."""
    driver.catalogue.get(site)
    with campaign_lock(driver.cfg.workdir, driver.name):
        with driver.db.session() as session:
            camp = driver._campaign(session)
            ids = site_ids(session)
            names = {v: k for k, v in ids.items()}
            row = session.scalar(
                select(Failover)
                .where(
                    Failover.campaign_id == camp.id,
                    Failover.from_site_id == ids.get(site, -1),
                    Failover.failed_back_at.is_(None),
                )
                .order_by(Failover.id.desc())
                .limit(1)
            )
            if row is None:
                raise NotFoundError(f"site {site} has no active failover in campaign {driver.name}")
            target = names[row.to_site_id]
            stored = load_plan(session, driver.name)
            assert stored is not None
            report = FailoverReport(
                driver.name, "failback", target, site, dry_run, state_before=camp.state.name
            )
            states = _tract_states(session, camp.id, row.to_site_id)
            moved = [int(t) for t in json.loads(row.tracts)]
            report.tracts_kept = [t for t in moved if _finished(states, t)]
            report.tracts_moved = [t for t in moved if t not in report.tracts_kept]
            if dry_run:
                report.state_after = camp.state.name
                return report
        _cancel_run(driver, target, forget=False)
        with driver.db.session() as session:
            camp = driver._campaign(session)
            row = session.get(Failover, row.id)
            assert row is not None
            states = _tract_states(session, camp.id, row.to_site_id)
            report.tracts_kept = [t for t in moved if _finished(states, t)]
            report.tracts_moved = [t for t in moved if t not in report.tracts_kept]
            assignment = {
                t: (site if t in report.tracts_moved else s) for t, s in stored.plan.assignment.items()
            }
            order = [s.name for s in driver.catalogue.sites]
            sites = tuple(sorted({*stored.plan.sites, site}, key=order.index))
            shares = {s.name: s.share for s in driver.catalogue.sites if s.name in sites}
            report.plan_version = store_plan(
                session,
                driver.name,
                SplitPlan(assignment, stored.plan.overlap, sites),
                shares,
                replication_rules,
            )
            session.execute(text("UPDATE sites SET available = true WHERE name = :n"), {"n": site})
            reason = f"failback of {site} from {target} (plan v{report.plan_version})"
            restored: dict[int, int] = {}
            for old_id, new_id in json.loads(row.rules).items():
                old, new = session.get(Rule, int(old_id)), session.get(Rule, int(new_id))
                if old is None or new is None:
                    continue
                ds = session.execute(
                    text("SELECT scope, name FROM datasets WHERE id = :d"), {"d": old.dataset_id}
                ).one()
                if new.state is not RuleState.OK:
                    new.state, new.stuck_reason, new.updated_at = RuleState.SUSPENDED, reason, time.time()
                    session.flush()
                info = driver.replication.add_rule(
                    session, f"{ds.scope}:{ds.name}", old.site_expression, old.copies, campaign=driver.name
                )
                restored[new.id] = info.id
            report.rules_replaced = restored
            back = [
                (int(j), JobState.CANCELLED)
                for (j, data_id) in session.execute(
                    text(
                        "SELECT id, data_id FROM jobs "
                        "WHERE campaign_id = :c AND site_id = :s AND state <> :ok"
                    ),
                    {"c": camp.id, "s": row.to_site_id, "ok": int(JobState.SUCCEEDED)},
                )
                if json.loads(data_id).get("tract") in report.tracts_moved
            ]
            if back:
                set_job_states(session, back)
            report.jobs_cancelled = len(back)
            row.failed_back_at = time.time()
            message = f"{reason}: {len(report.tracts_moved)} tract(s) back, {len(report.tracts_kept)} stay"
            _campaign_back(session, camp, message)
            log_event(session, "dr.failback", subject=site, campaign_id=camp.id, message=message)
            report.state_after = camp.state.name
        _cancel_run(driver, target, forget=True)
        _cancel_run(driver, site, forget=True)
        return report

"""Split plans in bookkeeping: versions, processing assignments and the replication rules they imply.

A re-plan never edits history: it adds a version, and rules whose expression changed are
``SUSPENDED`` with the reason recorded (Rucio rules are likewise replaced, not edited).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.errors import NotFoundError

from .bulk import copy_rows
from .events import log_event
from .files import get_or_create_dataset
from .models import Assignment, Campaign, Dataset, Rule
from .models import SplitPlan as SplitPlanRow
from .sites import site_ids
from .states import RuleState


@dataclass(frozen=True)
class SplitPlan:
    assignment: dict[int, str]  # non-overlap tract -> its one processing site
    overlap: frozenset[int]  # tracts processed at every site
    sites: tuple[str, ...]

    def tracts_of(self, site: str) -> set[int]:
        """Every tract the site processes: its share plus the overlap region (if it still takes part:
        a failed-over site keeps only the tracts it had finished)."""
        own = {t for t, s in self.assignment.items() if s == site}
        return own | set(self.overlap) if site in self.sites else own

    def moved_from(self, previous: SplitPlan) -> dict[int, tuple[str, str]]:
        """Tracts whose site changed: tract -> (old site, new site)."""
        return {
            t: (previous.assignment[t], s)
            for t, s in self.assignment.items()
            if t in previous.assignment and previous.assignment[t] != s
        }


@dataclass(frozen=True)
class RuleSpec:
    """A replication rule of the plan: keep ``copies`` of ``dataset`` on sites matching ``expression``."""

    dataset: str
    expression: str
    copies: int
    tract: int


RulesOf = Callable[[SplitPlan], list[RuleSpec]]


@dataclass(frozen=True)
class StoredPlan:
    campaign: str
    version: int
    created_at: float
    shares: dict[str, float]
    plan: SplitPlan
    rules: list[tuple[str, str, int, str]]  # dataset, expression, copies, state


def _campaign(session: Session, campaign: str) -> Campaign:
    row = session.scalars(select(Campaign).where(Campaign.name == campaign)).one_or_none()
    if row is None:
        raise NotFoundError(f"no campaign named {campaign!r}")
    return row


def store_plan(
    session: Session, campaign: str, plan: SplitPlan, shares: dict[str, float], rules_of: RulesOf
) -> int:
    """Record ``plan`` as the campaign's next version with its assignments and the rules ``rules_of``
    derives from it (the split policy's, passed in: bookkeeping records plans, it does not make them);
    rules the previous version produced and this one does not are SUSPENDED. Returns the version."""
    camp = _campaign(session, campaign)
    ids = site_ids(session)
    unknown = sorted(set(plan.sites) - set(ids))
    if unknown:
        raise NotFoundError(f"sites {unknown} are not in bookkeeping (run `drp sites sync`)")
    last = session.scalar(
        select(SplitPlanRow.version)
        .where(SplitPlanRow.campaign_id == camp.id)
        .order_by(SplitPlanRow.version.desc())
        .limit(1)
    )
    version = (last or 0) + 1
    now = time.time()
    row = SplitPlanRow(
        campaign_id=camp.id,
        version=version,
        shares=json.dumps(shares, sort_keys=True),
        overlap=json.dumps(sorted(plan.overlap)),
        created_at=now,
    )
    session.add(row)
    session.flush()
    assignments = [(row.id, t, ids[s], False) for t, s in plan.assignment.items()]
    assignments += [(row.id, t, ids[s], True) for t in sorted(plan.overlap) for s in plan.sites]
    copy_rows(session, "assignments", ("plan_id", "tract", "site_id", "overlap"), assignments)

    # Only rules that the previous plan produced may be superseded: the campaign's other rules (inputs
    # by visit, metadata, outputs) are not the split's to suspend.
    previous = load_plan(session, campaign, last) if last else None
    produced = set()
    if previous is not None:
        for spec in rules_of(previous.plan):
            ds_id = session.scalar(
                select(Dataset.id).where(Dataset.scope == camp.release, Dataset.name == spec.dataset)
            )
            produced.add((ds_id, spec.expression))
    current = {
        (r.dataset_id, r.site_expression): r
        for r in session.scalars(
            select(Rule).where(Rule.campaign_id == camp.id, Rule.state != RuleState.SUSPENDED)
        )
        if (r.dataset_id, r.site_expression) in produced
    }
    wanted = set()
    for spec in rules_of(plan):
        ds = get_or_create_dataset(session, camp.release, spec.dataset, kind="inputs")
        wanted.add((ds, spec.expression))
        if (ds, spec.expression) not in current:
            session.add(
                Rule(
                    campaign_id=camp.id,
                    dataset_id=ds,
                    site_expression=spec.expression,
                    copies=spec.copies,
                    state=RuleState.REPLICATING,
                    created_at=now,
                    updated_at=now,
                )
            )
    for key, rule in current.items():
        if key not in wanted:
            rule.state = RuleState.SUSPENDED
            rule.stuck_reason = f"superseded by split plan version {version}"
            rule.updated_at = now
    log_event(
        session,
        "plan.stored",
        subject=campaign,
        campaign_id=camp.id,
        message=f"split plan version {version}: {len(plan.assignment)} tracts, {len(plan.overlap)} overlap",
        payload={"version": version, "shares": shares},
    )
    return version


def load_plan(session: Session, campaign: str, version: int | None = None) -> StoredPlan | None:
    """The campaign's plan (latest version unless one is given), or None if it has none."""
    camp = _campaign(session, campaign)
    q = select(SplitPlanRow).where(SplitPlanRow.campaign_id == camp.id)
    q = q.where(SplitPlanRow.version == version) if version else q.order_by(SplitPlanRow.version.desc())
    row = session.scalars(q.limit(1)).one_or_none()
    if row is None:
        if version:
            raise NotFoundError(f"campaign {campaign!r} has no split plan version {version}")
        return None
    names = {i: n for n, i in site_ids(session).items()}
    assignment: dict[int, str] = {}
    for a in session.scalars(select(Assignment).where(Assignment.plan_id == row.id, ~Assignment.overlap)):
        assignment[a.tract] = names[a.site_id]
    shares: dict[str, float] = json.loads(row.shares)
    plan = SplitPlan(dict(sorted(assignment.items())), frozenset(json.loads(row.overlap)), tuple(shares))
    rules = [
        (f"{d.scope}:{d.name}", r.site_expression, r.copies, r.state.name)
        for r, d in session.execute(
            select(Rule, Dataset)
            .join(Dataset, Dataset.id == Rule.dataset_id)
            .where(Rule.campaign_id == camp.id)
            .order_by(Dataset.name, Rule.id)
        )
    ]
    return StoredPlan(campaign, row.version, row.created_at, shares, plan, rules)


def site_tracts(session: Session, campaign: str, site: str) -> list[int]:
    """Tracts the site processes under the campaign's latest plan (its share plus the overlap)."""
    stored = load_plan(session, campaign)
    if stored is None:
        raise NotFoundError(f"campaign {campaign!r} has no split plan (run `drp plan create`)")
    if site not in stored.plan.sites:
        raise NotFoundError(f"site {site!r} has no share in campaign {campaign!r}")
    return sorted(stored.plan.tracts_of(site))

"""Replication rules in bookkeeping: rows, their placement (``rule_sites``), their lock counts from the
exact ``replica_counts`` aggregate, and the reasons a STUCK rule gives.

The embedded back-end (Rucio's rule semantics) and the rucio back-end (which mirrors Rucio's rules)
read and write rules only through these functions.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from common.errors import NotFoundError

from .events import log_event
from .models import Dataset, Rule, RuleSite, Site
from .states import ReplicaState, RuleState

STUCK_STATES = (ReplicaState.BAD, ReplicaState.LOST, ReplicaState.UNAVAILABLE)  # locks that make a rule STUCK


@dataclass(frozen=True)
class RuleRow:
    id: int
    campaign_id: int | None
    dataset_id: int
    dataset: str  # scope:name
    expression: str
    copies: int
    state: RuleState
    stuck_reason: str | None
    external_id: str | None
    created_at: float
    updated_at: float


def _rows(session: Session, where: Iterable[object], order: object = Rule.id) -> list[RuleRow]:
    q = select(Rule, Dataset.scope, Dataset.name).join(Dataset, Dataset.id == Rule.dataset_id)
    for clause in where:
        q = q.where(clause)  # type: ignore[arg-type]
    return [
        RuleRow(
            r.id,
            r.campaign_id,
            r.dataset_id,
            f"{scope}:{name}",
            r.site_expression,
            r.copies,
            r.state,
            r.stuck_reason,
            r.external_id,
            r.created_at,
            r.updated_at,
        )
        for r, scope, name in session.execute(q.order_by(order))  # type: ignore[arg-type]
    ]


def get(session: Session, rule_id: int) -> RuleRow:
    found = _rows(session, [Rule.id == rule_id])
    if not found:
        raise NotFoundError(f"rule {rule_id} does not exist")
    return found[0]


def find(session: Session, dataset_id: int, expression: str, copies: int) -> RuleRow | None:
    """The rule that is not SUSPENDED with this dataset, expression and copies, if there is one."""
    found = _rows(
        session,
        [
            Rule.dataset_id == dataset_id,
            Rule.site_expression == expression,
            Rule.copies == copies,
            Rule.state != RuleState.SUSPENDED,
        ],
    )
    return found[0] if found else None


def listed(
    session: Session,
    *,
    dataset_id: int | None = None,
    states: Sequence[RuleState] | None = None,
    campaign_id: int | None = None,
    external: bool | None = None,
) -> list[RuleRow]:
    """Rules by id, filtered by dataset, states, campaign, or whether Rucio holds them (external id)."""
    where: list[object] = []
    if dataset_id is not None:
        where.append(Rule.dataset_id == dataset_id)
    if states is not None:
        where.append(Rule.state.in_(list(states)))
    if campaign_id is not None:
        where.append(Rule.campaign_id == campaign_id)
    if external is not None:
        where.append(Rule.external_id.is_not(None) if external else Rule.external_id.is_(None))
    return _rows(session, where)


def add(
    session: Session, campaign_id: int | None, dataset_id: int, dataset: str, expression: str, copies: int
) -> RuleRow:
    """A new REPLICATING rule (and its ``rule.added`` event)."""
    now = time.time()
    row = Rule(
        campaign_id=campaign_id,
        dataset_id=dataset_id,
        site_expression=expression,
        copies=copies,
        state=RuleState.REPLICATING,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    log_event(
        session,
        "rule.added",
        subject=f"rule:{row.id}",
        message=f"{dataset} → {expression} ×{copies}",
        campaign_id=campaign_id,
    )
    return get(session, row.id)


def set_state(session: Session, rule: RuleRow, state: RuleState, reason: str | None) -> RuleState:
    """Move the rule to ``state`` with ``reason`` (an event when anything changed); returns ``state``."""
    if rule.state == state and rule.stuck_reason == reason:
        return state
    session.execute(
        update(Rule)
        .where(Rule.id == rule.id)
        .values(state=state, stuck_reason=reason, updated_at=time.time())
    )
    log_event(
        session,
        f"rule.{state.name.lower()}",
        subject=f"rule:{rule.id}",
        message=reason or "",
        campaign_id=rule.campaign_id,
    )
    return state


def set_external_id(session: Session, rule_id: int, external_id: str) -> None:
    session.execute(update(Rule).where(Rule.id == rule_id).values(external_id=external_id))


def campaign_of(session: Session, rule_id: int) -> int | None:
    return session.scalar(select(Rule.campaign_id).where(Rule.id == rule_id))


def count(session: Session) -> int:
    return int(session.execute(text("SELECT count(*) FROM rules")).scalar_one())


# --- placement ----------------------------------------------------------------------------------------
def placements(session: Session, rule_ids: Sequence[int]) -> dict[int, list[int]]:
    """Rule id → the site ids it is placed at (rules not placed yet are absent)."""
    placed: dict[int, list[int]] = defaultdict(list)
    if rule_ids:
        stmt = text("SELECT rule_id, site_id FROM rule_sites WHERE rule_id IN :ids ORDER BY site_id")
        for rule_id, site_id in session.execute(
            stmt.bindparams(bindparam("ids", expanding=True)), {"ids": list(rule_ids)}
        ):
            placed[int(rule_id)].append(int(site_id))
    return dict(placed)


def place(session: Session, rule_id: int, site_ids: Sequence[int]) -> None:
    session.add_all(RuleSite(rule_id=rule_id, site_id=s) for s in site_ids)
    session.flush()


def placed_site_names(session: Session, rule_id: int) -> list[tuple[int, str]]:
    stmt = (
        select(Site.id, Site.name)
        .join(RuleSite, RuleSite.site_id == Site.id)
        .where(RuleSite.rule_id == rule_id)
    )
    return [(int(i), str(n)) for i, n in session.execute(stmt)]


def placing(session: Session, file_id: int, site_id: int) -> int | None:
    """The first rule (not SUSPENDED) that places the file's dataset at the site, if any."""
    return session.execute(
        text(
            "SELECT r.id FROM files fl JOIN rules r ON r.dataset_id = fl.dataset_id "
            "JOIN rule_sites rs ON rs.rule_id = r.id "
            "WHERE fl.id = :f AND rs.site_id = :s AND r.state <> :suspended ORDER BY r.id LIMIT 1"
        ),
        {"f": file_id, "s": site_id, "suspended": int(RuleState.SUSPENDED)},
    ).scalar()


# --- locks and reasons ----------------------------------------------------------------------------------
def lock_counts(session: Session, dataset_id: int, sites: Sequence[int]) -> tuple[int, Counter[int]]:
    """The dataset's file count and, over the given sites, replicas per state (from the aggregate)."""
    n_files = session.scalar(select(Dataset.n_files).where(Dataset.id == dataset_id)) or 0
    by_state: Counter[int] = Counter()
    for site_id, state, n in session.execute(
        text("SELECT site_id, state, n_files FROM replica_counts WHERE dataset_id = :d"), {"d": dataset_id}
    ):
        if site_id in sites:
            by_state[state] += n
    return int(n_files), by_state


def stuck_replicas(
    session: Session, dataset_id: int, sites: Sequence[int]
) -> list[tuple[str, int, ReplicaState, str | None]]:
    """(file name, site id, state, latest declared reason) of the dataset's BAD/LOST/UNAVAILABLE
    replicas at the given sites, by file name."""
    rows = session.execute(
        text(
            "SELECT f.name, r.site_id, r.state, "
            "(SELECT b.reason FROM bad_replicas b "
            " WHERE b.file_id = r.file_id AND b.site_id = r.site_id ORDER BY b.id DESC LIMIT 1) "
            "FROM replicas r JOIN files f ON f.id = r.file_id "
            "WHERE f.dataset_id = :ds AND r.state IN :bad ORDER BY f.name"
        ).bindparams(bindparam("bad", expanding=True)),
        {"ds": dataset_id, "bad": [int(s) for s in STUCK_STATES]},
    ).all()
    return [(str(n), int(s), ReplicaState(st), why) for n, s, st, why in rows if s in sites]


def unreplicable_example(session: Session, dataset_id: int) -> str | None:
    """A file of the dataset with no AVAILABLE replica anywhere (first by name), or None."""
    return session.execute(
        text(
            "SELECT f.name FROM files f WHERE f.dataset_id = :ds AND NOT EXISTS "
            "(SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.state = :a) "
            "ORDER BY f.name LIMIT 1"
        ),
        {"ds": dataset_id, "a": int(ReplicaState.AVAILABLE)},
    ).scalar()

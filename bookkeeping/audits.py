"""Disaster-recovery questions and records: coverage of a release per site, what the catalogue expects
on a site's storage, dark files, the audits and their findings, and what a recovery must copy."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from .bulk import copy_rows
from .events import log_event
from .models import Audit
from .states import ReplicaState, TransferState

_AVAILABLE = int(ReplicaState.AVAILABLE)


# --- coverage -------------------------------------------------------------------------------------------
def dataset_sizes(session: Session, scope: str | None) -> list[tuple[str, str, int, int]]:
    """(scope, dataset name, files, bytes) of every dataset (of one scope)."""
    where, params = ("WHERE d.scope = :scope", {"scope": scope}) if scope else ("", {})
    stmt = text(f"SELECT d.scope, d.name, d.n_files, d.n_bytes FROM datasets d {where}")
    return [(str(s), str(n), int(f), int(b)) for s, n, f, b in session.execute(stmt, params)]


def available_by_dataset(session: Session, scope: str | None) -> list[tuple[str, str, int, int, int]]:
    """(scope, dataset name, site id, files, bytes) verified (AVAILABLE) per dataset and site."""
    where = "AND d.scope = :scope" if scope else ""
    stmt = text(
        "SELECT d.scope, d.name, c.site_id, c.n_files, c.n_bytes FROM replica_counts c "
        f"JOIN datasets d ON d.id = c.dataset_id WHERE c.state = :a {where}"
    )
    params = {"a": _AVAILABLE, **({"scope": scope} if scope else {})}
    return [(str(s), str(n), int(i), int(f), int(b)) for s, n, i, f, b in session.execute(stmt, params)]


def under_replicated(session: Session, scope: str | None) -> list[tuple[str, int, int | None]]:
    """(file name, verified copies, the one site holding it) of files with fewer than two verified
    copies (one scan of ``replicas``)."""
    scope_join = "JOIN datasets d ON d.id = f.dataset_id AND d.scope = :scope" if scope else ""
    stmt = text(
        "SELECT f.name, count(r.site_id), min(r.site_id) FROM files f "
        f"{scope_join} LEFT JOIN replicas r ON r.file_id = f.id AND r.state = :a "
        "GROUP BY f.id, f.name HAVING count(r.site_id) < 2"
    )
    params = {"a": _AVAILABLE, **({"scope": scope} if scope else {})}
    return [(str(n), int(c), None if s is None else int(s)) for n, c, s in session.execute(stmt, params)]


Declared = tuple[int, ReplicaState, str | None]  # (site id, replica state, last declared reason)


def unrecoverable(session: Session, scope: str | None) -> list[tuple[str, list[Declared]]]:
    """Files with no verified replica anywhere and at least one declared BAD or LOST, with each replica's
    (site id, state, last declared reason): what `drp dr status` lists until an operator acts."""
    scope_join = "JOIN datasets d ON d.id = f.dataset_id AND d.scope = :scope" if scope else ""
    stmt = text(
        "SELECT f.name, r.site_id, r.state, (SELECT b.reason FROM bad_replicas b WHERE b.file_id = f.id "
        " AND b.site_id = r.site_id ORDER BY b.id DESC LIMIT 1) "
        f"FROM files f {scope_join} JOIN replicas r ON r.file_id = f.id "
        "WHERE NOT EXISTS (SELECT 1 FROM replicas a WHERE a.file_id = f.id AND a.state = :a) "
        "AND EXISTS (SELECT 1 FROM replicas x WHERE x.file_id = f.id AND x.state IN (:bad, :lost)) "
        "ORDER BY f.name, r.site_id"
    )
    params = {
        "a": _AVAILABLE,
        "bad": int(ReplicaState.BAD),
        "lost": int(ReplicaState.LOST),
        **({"scope": scope} if scope else {}),
    }
    out: dict[str, list[Declared]] = {}
    for name, site, state, reason in session.execute(stmt, params):
        out.setdefault(str(name), []).append((int(site), ReplicaState(state), reason))
    return list(out.items())


def missing_by_dataset(session: Session, site_id: int, scope: str) -> list[tuple[str, int, int]]:
    """(dataset, files, bytes) of the release's non-empty datasets that are not (all) verified at the site;
    datasets complete there are listed with zeros."""
    stmt = text(
        "SELECT d.name, d.n_files - coalesce(c.n_files, 0), d.n_bytes - coalesce(c.n_bytes, 0) "
        "FROM datasets d LEFT JOIN replica_counts c ON c.dataset_id = d.id AND c.site_id = :s "
        "AND c.state = :a WHERE d.scope = :scope AND d.n_files > 0 ORDER BY d.name"
    )
    rows = session.execute(stmt, {"s": site_id, "a": _AVAILABLE, "scope": scope})
    return [(str(n), int(f), int(b)) for n, f, b in rows]


# --- audits ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    file_id: int
    name: str
    size: int
    adler32: str
    state: ReplicaState


def replicas_at(session: Session, site_id: int, prefix: str = "") -> list[Expected]:
    """Every replica the catalogue has at the site (names under ``prefix``), in any state."""
    stmt = text(
        "SELECT f.id, f.name, f.size, f.adler32, r.state FROM replicas r "
        "JOIN files f ON f.id = r.file_id WHERE r.site_id = :s AND f.name LIKE :p"
    )
    rows = session.execute(stmt, {"s": site_id, "p": f"{prefix}/%" if prefix else "%"})
    return [Expected(int(i), str(n), int(s), str(a), ReplicaState(st)) for i, n, s, a, st in rows]


def verified_elsewhere(session: Session, names: Sequence[str], site_id: int) -> dict[str, tuple[int, int]]:
    """For catalogued names: file id and how many verified replicas it has at other sites."""
    if not names:
        return {}
    stmt = text(
        "SELECT f.name, f.id, (SELECT count(*) FROM replicas r WHERE r.file_id = f.id AND r.state = :a "
        "AND r.site_id <> :s) FROM files f WHERE f.name IN :n"
    ).bindparams(bindparam("n", expanding=True))
    rows = session.execute(stmt, {"n": list(names), "a": _AVAILABLE, "s": site_id})
    return {str(n): (int(i), int(c)) for n, i, c in rows}


@dataclass(frozen=True)
class AuditSummary:
    site: str
    site_id: int
    prefix: str
    checksums: bool
    sample: float | None
    dry_run: bool
    seconds: float
    checked: int
    bytes_read: int
    lost: int
    corrupt: int
    dark: int


def record_audit(
    session: Session,
    summary: AuditSummary,
    findings: Iterable[tuple[str, str, int | None, int | None, str, str | None]],
) -> int:
    """Store an audit and its findings ((kind, name, file id, size, reason, action)); returns its id."""
    now = time.time()
    row = Audit(
        site_id=summary.site_id,
        prefix=summary.prefix,
        checksums=summary.checksums,
        sample=summary.sample,
        dry_run=summary.dry_run,
        started_at=now - summary.seconds,
        finished_at=now,
        n_checked=summary.checked,
        n_bytes_read=summary.bytes_read,
        n_lost=summary.lost,
        n_corrupt=summary.corrupt,
        n_dark=summary.dark,
    )
    session.add(row)
    session.flush()
    copy_rows(
        session,
        "audit_findings",
        ("audit_id", "site_id", "kind", "name", "file_id", "size", "reason", "action", "created_at"),
        ((row.id, summary.site_id, k, n, f, s, r, a, now) for k, n, f, s, r, a in findings),
    )
    log_event(
        session,
        "dr.audit",
        subject=summary.site,
        message=f"{summary.lost} lost, {summary.corrupt} corrupt, {summary.dark} dark "
        f"of {summary.checked} checked",
        payload={"audit": row.id},
    )
    return int(row.id)


# --- recovery -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Damaged:
    """A replica at the site that is BAD, LOST or being copied, with what a recovery needs to know."""

    file_id: int
    name: str
    size: int
    state: ReplicaState
    source: int | None  # a site with a verified replica (lowest id), None if there is none
    active_copies: int  # transfers to the site not finished yet
    reason: str | None  # the latest declared reason


def damaged_at(session: Session, site_id: int) -> list[Damaged]:
    stmt = text(
        "SELECT f.id, f.name, f.size, r.state, "
        "(SELECT min(o.site_id) FROM replicas o "
        " WHERE o.file_id = f.id AND o.state = :a AND o.site_id <> :s), "
        "(SELECT count(*) FROM transfers t WHERE t.file_id = f.id AND t.dest_site_id = :s "
        " AND t.state IN :active), "
        "(SELECT b.reason FROM bad_replicas b WHERE b.file_id = f.id AND b.site_id = :s "
        " ORDER BY b.id DESC LIMIT 1) "
        "FROM replicas r JOIN files f ON f.id = r.file_id WHERE r.site_id = :s AND r.state IN :damaged "
        "ORDER BY f.name"
    ).bindparams(bindparam("active", expanding=True), bindparam("damaged", expanding=True))
    active = [TransferState.QUEUED, TransferState.SUBMITTED, TransferState.ACTIVE]
    damaged = [ReplicaState.BAD, ReplicaState.LOST, ReplicaState.COPYING]
    params = {
        "s": site_id,
        "a": _AVAILABLE,
        "active": [int(s) for s in active],
        "damaged": [int(s) for s in damaged],
    }
    return [
        Damaged(int(i), str(n), int(size), ReplicaState(st), None if src is None else int(src), int(k), why)
        for i, n, size, st, src, k, why in session.execute(stmt, params)
    ]


def outcomes_at(
    session: Session, site_id: int, file_ids: Sequence[int]
) -> list[tuple[int, ReplicaState, int, str | None]]:
    """(file id, replica state at the site, size, the last transfer error to the site) of the files."""
    if not file_ids:
        return []
    stmt = text(
        "SELECT f.id, r.state, f.size, (SELECT t.error FROM transfers t WHERE t.file_id = f.id "
        " AND t.dest_site_id = :s ORDER BY t.id DESC LIMIT 1) "
        "FROM files f JOIN replicas r ON r.file_id = f.id AND r.site_id = :s WHERE f.id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    rows = session.execute(stmt, {"s": site_id, "ids": list(file_ids)})
    return [(int(i), ReplicaState(st), int(size), err) for i, st, size, err in rows]

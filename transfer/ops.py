"""Data-management operations behind ``drp data``, ``drp rules`` and ``drp transfer``.

Each function takes what it needs explicitly (database, catalogue, back-end) and returns typed rows,
so the CLI only parses options and prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from bookkeeping.database import Database
from bookkeeping.events import log_event
from bookkeeping.files import FileRow, RegisterResult, check_name, set_replica_states
from bookkeeping.sites import site_ids
from bookkeeping.states import ReplicaState, TransferState
from bookkeeping.transfers import set_transfer_states
from common.errors import InvalidInputError, NotFoundError
from instrumentation.progress import ProgressFactory, no_progress
from sites.catalogue import SiteCatalogue

from .checksum import adler32_file
from .replication.base import ReplicationBackend, split_did


def scan(root: Path, subdir: str, progress: ProgressFactory = no_progress) -> list[FileRow]:
    """Files under ``root/subdir`` as catalogue rows (logical names relative to ``root``), with
    adler32 and size read from storage. Hidden files (temporary copies) are skipped."""
    if subdir not in ("", "."):
        check_name(subdir)
    base = (root / subdir).resolve()
    if not base.is_relative_to(root.resolve()):
        raise InvalidInputError(f"{subdir!r} is outside the site root {root}")
    if not base.is_dir():
        raise NotFoundError(f"no directory {base} to register")
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        paths.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    rows = []
    with progress(f"checksumming {len(paths)} files", len(paths)) as advance:
        for p in paths:
            adler, size = adler32_file(p)
            rows.append(FileRow(p.relative_to(root.resolve()).as_posix(), size, adler))
            advance(1)
    return rows


def register_from_storage(
    db: Database,
    catalogue: SiteCatalogue,
    backend: ReplicationBackend,
    site: str,
    dataset: str,
    subdir: str,
    *,
    campaign: str | None = None,
    progress: ProgressFactory = no_progress,
) -> RegisterResult:
    """Register the files under ``subdir`` of a posix site as dataset ``scope:name``, AVAILABLE there."""
    split_did(dataset)
    root = catalogue.get(site).storage_path
    if root is None:
        raise InvalidInputError(f"site {site}: registering from storage needs a file:// site")
    rows = scan(root, subdir, progress)
    if not rows:
        raise InvalidInputError(f"no files under {root / subdir}")
    with db.session() as session:
        return backend.register(session, dataset, rows, site, campaign=campaign)


@dataclass(frozen=True)
class DatasetRow:
    dataset: str
    files: int
    bytes: int
    available: dict[str, int]  # site → files AVAILABLE there
    other: dict[str, dict[str, int]]  # site → state → files (not AVAILABLE)


def datasets(session: Session, scope: str | None = None) -> list[DatasetRow]:
    names = {v: k for k, v in site_ids(session).items()}
    where = "WHERE d.scope = :scope" if scope else ""
    rows = session.execute(
        text(
            f"SELECT d.id, d.scope, d.name, d.n_files, d.n_bytes FROM datasets d {where} "
            "ORDER BY d.scope, d.name"
        ),
        {"scope": scope} if scope else {},
    ).all()
    counts: dict[int, list[tuple[int, int, int]]] = {}
    for ds, site, state, n in session.execute(
        text("SELECT dataset_id, site_id, state, n_files FROM replica_counts")
    ):
        counts.setdefault(ds, []).append((site, state, n))
    out = []
    for ds, sc, name, n, b in rows:
        avail: dict[str, int] = {}
        other: dict[str, dict[str, int]] = {}
        for site, state, k in counts.get(ds, []):
            if state == ReplicaState.AVAILABLE:
                avail[names[site]] = k
            else:
                other.setdefault(names[site], {})[ReplicaState(state).name] = k
        out.append(DatasetRow(f"{sc}:{name}", n, b, avail, other))
    return out


@dataclass(frozen=True)
class TransferInfo:
    id: int
    file: str
    source: str
    dest: str
    state: str
    attempts: int
    bytes: int
    mover: str
    rule_id: int | None
    failure: str | None
    error: str | None
    seconds: float | None
    next_attempt_in: float | None


def transfers(
    session: Session, *, state: TransferState | None = None, rule: int | None = None, limit: int = 1000
) -> list[TransferInfo]:
    names = {v: k for k, v in site_ids(session).items()}
    clauses, params = [], {"limit": limit}
    if state is not None:
        clauses.append("t.state = :state")
        params["state"] = int(state)
    if rule is not None:
        clauses.append("t.rule_id = :rule")
        params["rule"] = rule
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    now = time.time()
    out = []
    for row in session.execute(
        text(
            "SELECT t.id, f.name, t.source_site_id, t.dest_site_id, t.state, t.attempts, t.bytes, t.mover, "
            "t.rule_id, t.failure, t.error, t.started_at, t.finished_at, t.next_attempt_at "
            f"FROM transfers t JOIN files f ON f.id = t.file_id {where} ORDER BY t.id DESC LIMIT :limit"
        ),
        params,
    ):
        tid, name, src, dst, st, att, nbytes, mover, rid, failure, error, started, finished, nxt = row
        out.append(
            TransferInfo(
                tid,
                name,
                names[src],
                names[dst],
                TransferState(st).name,
                att,
                nbytes,
                mover,
                rid,
                failure,
                error,
                (finished - started) if started and finished else None,
                max(0.0, nxt - now) if nxt and st == TransferState.QUEUED else None,
            )
        )
    return out


def retry_failed(session: Session, *, ids: list[int] | None = None, rule: int | None = None) -> int:
    """Queue FAILED transfers again with a fresh retry budget (all of them, a rule's, or by id): the
    destination replica goes back to COPYING; a source that is no longer AVAILABLE is replaced."""
    clauses, params = ["t.state = :failed"], {"failed": int(TransferState.FAILED)}
    if ids:
        clauses.append("t.id IN (" + ", ".join(str(int(i)) for i in ids) + ")")
    if rule is not None:
        clauses.append("t.rule_id = :rule")
        params["rule"] = rule
    rows = session.execute(
        text(
            "SELECT t.id, t.file_id, t.dest_site_id, "
            "(SELECT min(r.site_id) FROM replicas r WHERE r.file_id = t.file_id AND r.state = 1 "
            " AND r.site_id <> t.dest_site_id) "
            f"FROM transfers t WHERE {' AND '.join(clauses)}"
        ),
        params,
    ).all()
    usable = [(t, f, d, s) for t, f, d, s in rows if s is not None]
    if not usable:
        return 0
    set_transfer_states(session, ((t, TransferState.QUEUED, None) for t, _, _, _ in usable))
    session.execute(
        text(
            "UPDATE transfers SET attempts = 0, failure = NULL, next_attempt_at = NULL, source_site_id = :s, "
            "finished_at = NULL WHERE id = :t"
        ),
        [{"t": t, "s": s} for t, _, _, s in usable],
    )
    set_replica_states(session, ((f, d, ReplicaState.COPYING) for _, f, d, _ in usable))
    log_event(session, "transfers.retried", payload={"transfers": len(usable)})
    return len(usable)


def iter_replicas(
    session: Session, backend: ReplicationBackend, dataset: str, *, site: str | None = None
) -> Iterator[tuple[str, str, str, int, str]]:
    for r in backend.replicas(session, dataset):
        if site is None or r.site == site:
            yield r.name, r.site, r.state.name, r.size, r.adler32

"""Bulk writes: the only way the rest of satdrp writes files, replicas, jobs, attempts and transfers.

Every function takes the session as keyword ``session`` and runs inside the caller's transaction.
Rows go through the driver's fastest path (PostgreSQL ``COPY``, SQLite ``executemany`` with tuples);
derived data (replicas of newly registered files, aggregate counts) is written set-based in SQL, so
the cost per row stays close to the raw driver's. The aggregate tables are updated in the same
transaction, so they are exact whenever a transaction commits.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from common.errors import InvalidInputError, NotFoundError

from .models import Campaign, Dataset, Event, Site
from .states import CampaignState, JobState, ReplicaState, TransferState


class FileRow(NamedTuple):
    """A file to register: logical name (relative, no ``..``), size in bytes, adler32 as 8 hex digits."""

    name: str
    size: int
    adler32: str


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


class TransferRow(NamedTuple):
    file_id: int
    source_site_id: int
    dest_site_id: int
    bytes: int
    rule_id: int | None = None
    mover: str = "local"


@dataclass(frozen=True)
class RegisterResult:
    dataset_id: int
    n_files: int
    n_bytes: int
    n_replicas: int


_ADLER_OK = frozenset("0123456789abcdef")


def check_name(name: str) -> str:
    """Reject logical names that could escape a site root once joined to it."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise InvalidInputError(f"file name {name!r}: must be a non-empty relative path")
    if name == ".." or name.startswith("../") or "/../" in name or name.endswith("/.."):
        raise InvalidInputError(f"file name {name!r}: must not contain '..' components")
    return name


def _checked_files(rows: Iterable[tuple[str, int, str]], totals: list[int]) -> Iterator[tuple[str, int, str]]:
    """Validate rows while streaming them to the driver; ``totals`` gets [n_files, n_bytes]."""
    n = nbytes = 0
    for row in rows:
        name, size, adler = row
        if name.startswith("/") or ".." in name:  # cheap test first; check_name says why
            check_name(name)
        if size < 0:
            raise InvalidInputError(f"file {name!r}: negative size {size}")
        if len(adler) != 8 or not _ADLER_OK.issuperset(adler):
            raise InvalidInputError(f"file {name!r}: adler32 {adler!r} is not 8 lower-case hex digits")
        n += 1
        nbytes += size
        yield row
    totals[0] = n
    totals[1] = nbytes


def _driver(session: Session) -> tuple[str, Any]:
    conn = session.connection()
    return conn.dialect.name, conn.connection.driver_connection


def copy_rows(
    session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, what: str = ""
) -> None:
    """Append rows to ``table`` through the driver's bulk path, inside the session's transaction.

    A constraint violation (duplicate name, unknown foreign key, failed check) becomes an
    :class:`InvalidInputError` naming ``what``; the caller's transaction then rolls back whole.
    """
    dialect, raw = _driver(session)
    cols = ", ".join(columns)
    integrity: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    if dialect == "postgresql":
        import psycopg  # the [postgres] extra; only a PostgreSQL session gets here

        integrity = (psycopg.IntegrityError,)
    try:
        if dialect == "postgresql":
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            cur = raw.cursor()
            try:
                cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
            finally:
                cur.close()
    except integrity as err:
        first = str(err).splitlines()[0]
        raise InvalidInputError(f"{what or table}: rejected by the database: {first}") from err


# --- sites, datasets, campaigns ------------------------------------------------------------------
@dataclass(frozen=True)
class SiteRow:
    name: str
    role: str
    share: float
    storage_url: str
    compute_backend: str


def upsert_sites(session: Session, sites: Iterable[SiteRow]) -> dict[str, int]:
    """Create or update sites by name; returns name → id for every site given."""
    ids: dict[str, int] = {}
    for s in sites:
        row = session.scalars(select(Site).where(Site.name == s.name)).one_or_none()
        if row is None:
            row = Site(name=s.name, available=True)
            session.add(row)
        row.role, row.share, row.storage_url, row.compute_backend = (
            s.role,
            s.share,
            s.storage_url,
            s.compute_backend,
        )
        session.flush()
        ids[s.name] = row.id
    return ids


def site_ids(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Site.name, Site.id)).all())


def get_or_create_dataset(session: Session, scope: str, name: str, kind: str = "raw") -> int:
    found = session.scalar(select(Dataset.id).where(Dataset.scope == scope, Dataset.name == name))
    if found is not None:
        return found
    ds = Dataset(scope=scope, name=name, kind=kind, n_files=0, n_bytes=0, created_at=time.time())
    session.add(ds)
    session.flush()
    return ds.id


def create_campaign(session: Session, name: str, release: str, config: dict[str, Any] | None = None) -> int:
    now = time.time()
    c = Campaign(
        name=name,
        release=release,
        state=CampaignState.CREATED,
        config=json.dumps(config or {}, sort_keys=True),
        created_at=now,
        updated_at=now,
    )
    session.add(c)
    try:
        session.flush()
    except IntegrityError as err:
        raise InvalidInputError(f"campaign {name!r} already exists") from err
    log_event(session, "campaign.created", subject=name, campaign_id=c.id)
    return c.id


def attach_datasets(
    session: Session, campaign_id: int, dataset_ids: Iterable[int], role: str = "input"
) -> None:
    copy_rows(
        session,
        "campaign_datasets",
        ("campaign_id", "dataset_id", "role"),
        ((campaign_id, d, role) for d in dataset_ids),
    )


def log_event(
    session: Session,
    kind: str,
    *,
    subject: str = "",
    message: str = "",
    campaign_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    session.add(
        Event(
            ts=time.time(),
            kind=kind,
            subject=subject,
            message=message,
            campaign_id=campaign_id,
            payload=json.dumps(payload or {}, sort_keys=True),
        )
    )


# --- files and replicas ---------------------------------------------------------------------------
def register_files(
    session: Session,
    dataset_id: int,
    rows: Iterable[tuple[str, int, str]],
    *,
    replicas_at: Sequence[tuple[int, ReplicaState]] = (),
) -> RegisterResult:
    """Register new files of a dataset, optionally with a replica at each given (site id, state).

    Files stream to the driver (no list is built); the replicas of the new files are then created by
    one ``INSERT … SELECT`` per site, and the dataset and replica aggregates are bumped once.
    """
    # Updating the dataset row first takes its lock (a row lock on PostgreSQL, the write lock on
    # SQLite): registrations into one dataset are serialised, so "ids above max_before in this
    # dataset" are exactly the files inserted here.
    locked = session.execute(update(Dataset).where(Dataset.id == dataset_id).values(n_files=Dataset.n_files))
    if locked.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFoundError(f"dataset id {dataset_id} does not exist")
    max_before = session.execute(text("SELECT coalesce(max(id), 0) FROM files")).scalar_one()
    totals = [0, 0]
    copy_rows(
        session,
        "files",
        ("dataset_id", "name", "size", "adler32"),
        ((dataset_id, *r) for r in _checked_files(rows, totals)),
        what=f"registering files in dataset {dataset_id}",
    )
    n_files, n_bytes = totals
    session.execute(
        update(Dataset)
        .where(Dataset.id == dataset_id)
        .values(n_files=Dataset.n_files + n_files, n_bytes=Dataset.n_bytes + n_bytes)
    )
    n_replicas = 0
    for site_id, state in replicas_at:
        session.execute(
            text(
                "INSERT INTO replicas (file_id, site_id, state) "
                "SELECT id, :site, :state FROM files WHERE dataset_id = :ds AND id > :after"
            ),
            {"site": site_id, "state": int(state), "ds": dataset_id, "after": max_before},
        )
        _bump_counts(
            session,
            "replica_counts",
            ("dataset_id", "site_id", "state"),
            ("n_files", "n_bytes"),
            {(dataset_id, site_id, int(state)): (n_files, n_bytes)},
        )
        n_replicas += n_files
    log_event(
        session,
        "files.registered",
        subject=f"dataset:{dataset_id}",
        payload={"files": n_files, "bytes": n_bytes, "replicas": n_replicas},
    )
    return RegisterResult(dataset_id, n_files, n_bytes, n_replicas)


def _bump_counts(
    session: Session,
    table: str,
    key_cols: Sequence[str],
    value_cols: Sequence[str],
    deltas: dict[tuple[Any, ...], tuple[int, ...]],
) -> None:
    """Add ``deltas`` (key → values) to an aggregate table with one upsert per key; drop zero rows."""
    if not deltas:
        return
    cols = [*key_cols, *value_cols]
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in value_cols)
    stmt = text(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        f"ON CONFLICT ({', '.join(key_cols)}) DO UPDATE SET {sets}"
    )
    session.execute(stmt, [dict(zip(cols, (*k, *v), strict=True)) for k, v in deltas.items()])
    session.execute(text(f"DELETE FROM {table} WHERE {value_cols[0]} = 0"))


def _load_temp(
    session: Session, name: str, ddl: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))
    session.execute(text(f"CREATE TEMPORARY TABLE {name} ({ddl})"))
    copy_rows(session, name, columns, rows, what="bulk update (is a key given twice?)")
    return int(session.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())


def _transitions(session: Session, sql: str, loaded: int, what: str) -> list[tuple[Any, ...]]:
    rows = [tuple(r) for r in session.execute(text(sql))]
    matched = sum(int(r[-2]) for r in rows)
    if matched != loaded:
        raise NotFoundError(f"{loaded - matched} of {loaded} {what} in the update do not exist")
    return rows


def set_replica_states(session: Session, updates: Iterable[tuple[int, int, ReplicaState]]) -> int:
    """Set (file id, site id) → state, creating replicas that do not exist yet; returns the count."""
    loaded = _load_temp(
        session,
        "tmp_replica_update",
        "file_id BIGINT NOT NULL, site_id SMALLINT NOT NULL, state SMALLINT NOT NULL, "
        "PRIMARY KEY (file_id, site_id)",
        ("file_id", "site_id", "state"),
        ((f, s, int(st)) for f, s, st in updates),
    )
    trans = _transitions(
        session,
        "SELECT f.dataset_id, t.site_id, r.state, t.state, count(*), coalesce(sum(f.size), 0) "
        "FROM tmp_replica_update t JOIN files f ON f.id = t.file_id "
        "LEFT JOIN replicas r ON r.file_id = t.file_id AND r.site_id = t.site_id "
        "GROUP BY f.dataset_id, t.site_id, r.state, t.state",
        loaded,
        "files",
    )
    session.execute(
        text(
            "INSERT INTO replicas (file_id, site_id, state) SELECT file_id, site_id, state "
            "FROM tmp_replica_update WHERE true "
            "ON CONFLICT (file_id, site_id) DO UPDATE SET state = excluded.state"
        )
    )
    deltas: Counter[tuple[Any, ...]] = Counter()
    sizes: Counter[tuple[Any, ...]] = Counter()
    for ds, site, old, new, n, nbytes in trans:
        if old == new:
            continue
        if old is not None:
            deltas[(ds, site, old)] -= n
            sizes[(ds, site, old)] -= nbytes
        deltas[(ds, site, new)] += n
        sizes[(ds, site, new)] += nbytes
    _bump_counts(
        session,
        "replica_counts",
        ("dataset_id", "site_id", "state"),
        ("n_files", "n_bytes"),
        {k: (deltas[k], sizes[k]) for k in deltas},
    )
    session.execute(text("DROP TABLE tmp_replica_update"))
    return loaded


def drop_pending_replicas(session: Session, pairs: Iterable[tuple[int, int]]) -> int:
    """Remove (file id, site id) replicas that are still COPYING (a copy that will not be made, e.g. to a
    failed-over site), keeping ``replica_counts`` exact. Replicas in any other state are left alone."""
    loaded = _load_temp(
        session,
        "tmp_replica_drop",
        "file_id BIGINT NOT NULL, site_id SMALLINT NOT NULL, PRIMARY KEY (file_id, site_id)",
        ("file_id", "site_id"),
        pairs,
    )
    if not loaded:
        session.execute(text("DROP TABLE tmp_replica_drop"))
        return 0
    copying = int(ReplicaState.COPYING)
    rows = session.execute(
        text(
            "SELECT f.dataset_id, t.site_id, count(*), coalesce(sum(f.size), 0) FROM tmp_replica_drop t "
            "JOIN replicas r ON r.file_id = t.file_id AND r.site_id = t.site_id AND r.state = :c "
            "JOIN files f ON f.id = t.file_id GROUP BY f.dataset_id, t.site_id"
        ),
        {"c": copying},
    ).all()
    session.execute(
        text(
            "DELETE FROM replicas WHERE state = :c AND EXISTS (SELECT 1 FROM tmp_replica_drop t "
            "WHERE t.file_id = replicas.file_id AND t.site_id = replicas.site_id)"
        ),
        {"c": copying},
    )
    _bump_counts(
        session,
        "replica_counts",
        ("dataset_id", "site_id", "state"),
        ("n_files", "n_bytes"),
        {(ds, site, copying): (-int(n), -int(b)) for ds, site, n, b in rows},
    )
    session.execute(text("DROP TABLE tmp_replica_drop"))
    return sum(int(n) for _, _, n, _ in rows)


# --- jobs and attempts ----------------------------------------------------------------------------
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
    _bump_counts(
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
    loaded = _load_temp(
        session,
        "tmp_job_update",
        "job_id BIGINT PRIMARY KEY, state SMALLINT NOT NULL",
        ("job_id", "state"),
        ((j, int(s)) for j, s in updates),
    )
    trans = _transitions(
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
    _bump_counts(
        session,
        "job_counts",
        ("campaign_id", "site_id", "step", "state"),
        ("n_jobs",),
        {k: (v,) for k, v in deltas.items() if v},
    )
    session.execute(text("DROP TABLE tmp_job_update"))
    return loaded


ATTEMPT_COLUMNS = AttemptRow._fields


def add_attempts(session: Session, attempts: Iterable[AttemptRow]) -> int:
    """Insert job attempts (profiles) and raise each job's ``n_attempts`` to its highest number."""
    max_before = session.execute(text("SELECT coalesce(max(id), 0) FROM attempts")).scalar_one()
    n = [0]

    def rows() -> Iterator[AttemptRow]:
        for a in attempts:
            n[0] += 1
            yield a

    copy_rows(session, "attempts", ATTEMPT_COLUMNS, rows(), what="adding attempts")
    session.execute(
        text(
            "UPDATE jobs SET n_attempts = a.m FROM "
            "(SELECT job_id, max(number) AS m FROM attempts WHERE id > :after GROUP BY job_id) a "
            "WHERE jobs.id = a.job_id AND jobs.n_attempts < a.m"
        ),
        {"after": max_before},
    )
    return n[0]


# --- transfers ------------------------------------------------------------------------------------
def add_transfers(session: Session, campaign_id: int | None, transfers: Iterable[TransferRow]) -> int:
    """Queue transfers; the aggregate counts them as QUEUED with their expected bytes."""
    now = time.time()
    camp = campaign_id or 0
    counts: Counter[tuple[Any, ...]] = Counter()
    nbytes: Counter[tuple[Any, ...]] = Counter()

    def rows() -> Iterator[tuple[Any, ...]]:
        for t in transfers:
            key = (camp, t.source_site_id, t.dest_site_id, int(TransferState.QUEUED))
            counts[key] += 1
            nbytes[key] += t.bytes
            yield (
                campaign_id,
                t.rule_id,
                t.file_id,
                t.source_site_id,
                t.dest_site_id,
                int(TransferState.QUEUED),
                0,
                t.bytes,
                t.mover,
                now,
            )

    copy_rows(
        session,
        "transfers",
        (
            "campaign_id",
            "rule_id",
            "file_id",
            "source_site_id",
            "dest_site_id",
            "state",
            "attempts",
            "bytes",
            "mover",
            "created_at",
        ),
        rows(),
        what="queueing transfers",
    )
    _bump_counts(
        session,
        "transfer_counts",
        ("campaign_id", "source_site_id", "dest_site_id", "state"),
        ("n_transfers", "n_bytes"),
        {k: (counts[k], nbytes[k]) for k in counts},
    )
    return sum(counts.values())


def set_transfer_states(session: Session, updates: Iterable[tuple[int, TransferState, str | None]]) -> int:
    """Set transfer id → (state, error) in bulk; stamps start/finish times and keeps counts exact."""
    loaded = _load_temp(
        session,
        "tmp_transfer_update",
        "transfer_id BIGINT PRIMARY KEY, state SMALLINT NOT NULL, error TEXT",
        ("transfer_id", "state", "error"),
        ((t, int(s), e) for t, s, e in updates),
    )
    trans = _transitions(
        session,
        "SELECT coalesce(x.campaign_id, 0), x.source_site_id, x.dest_site_id, x.state, t.state, "
        "count(*), coalesce(sum(x.bytes), 0) "
        "FROM tmp_transfer_update t JOIN transfers x ON x.id = t.transfer_id "
        "GROUP BY coalesce(x.campaign_id, 0), x.source_site_id, x.dest_site_id, x.state, t.state",
        loaded,
        "transfers",
    )
    final = ", ".join(str(int(s)) for s in (TransferState.DONE, TransferState.FAILED, TransferState.CANCELED))
    active = int(TransferState.ACTIVE)
    session.execute(
        text(
            "UPDATE transfers SET state = t.state, error = t.error, "
            f"attempts = transfers.attempts + CASE WHEN t.state = {active} THEN 1 ELSE 0 END, "
            f"started_at = CASE WHEN t.state = {active} THEN :now ELSE transfers.started_at END, "
            f"finished_at = CASE WHEN t.state IN ({final}) THEN :now ELSE transfers.finished_at END "
            "FROM tmp_transfer_update t WHERE transfers.id = t.transfer_id AND "
            "(transfers.state <> t.state OR coalesce(transfers.error, '') <> coalesce(t.error, ''))"
        ),
        {"now": time.time()},
    )
    deltas: Counter[tuple[Any, ...]] = Counter()
    sizes: Counter[tuple[Any, ...]] = Counter()
    for camp, src, dst, old, new, n, b in trans:
        if old != new:
            deltas[(camp, src, dst, old)] -= n
            sizes[(camp, src, dst, old)] -= b
            deltas[(camp, src, dst, new)] += n
            sizes[(camp, src, dst, new)] += b
    _bump_counts(
        session,
        "transfer_counts",
        ("campaign_id", "source_site_id", "dest_site_id", "state"),
        ("n_transfers", "n_bytes"),
        {k: (deltas[k], sizes[k]) for k in deltas if deltas[k]},
    )
    session.execute(text("DROP TABLE tmp_transfer_update"))
    return loaded


__all__ = [
    "AttemptRow",
    "FileRow",
    "JobRow",
    "RegisterResult",
    "SiteRow",
    "TransferRow",
    "add_attempts",
    "add_jobs",
    "add_transfers",
    "attach_datasets",
    "check_name",
    "copy_rows",
    "create_campaign",
    "data_id_key",
    "get_or_create_dataset",
    "log_event",
    "register_files",
    "set_job_states",
    "set_replica_states",
    "set_transfer_states",
    "site_ids",
    "upsert_sites",
]

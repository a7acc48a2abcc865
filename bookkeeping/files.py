"""Datasets, files and replicas: registration and replica states in bulk, with exact aggregates."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from common.errors import InvalidInputError, NotFoundError

from .bulk import bump_counts, copy_rows, load_temp, transitions
from .events import log_event
from .models import BadReplica, Dataset, Site
from .sites import site_names
from .states import ReplicaState


class FileRow(NamedTuple):
    """A file to register: logical name (relative, no ``..``), size in bytes, adler32 as 8 hex digits."""

    name: str
    size: int
    adler32: str


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


_SCOPE = re.compile(r"[A-Za-z0-9_.\-]{1,25}")
_DID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9/._\-]{0,249}")


def check_did(scope: str, name: str) -> tuple[str, str]:
    """Rucio's DID rules (its generic schema: scope of at most 25 letters, digits, ``_.-``; name of at
    most 250 letters, digits, ``/._-``), and, since satdrp maps names to paths, no name starting with
    ``/`` and no ``..`` component."""
    if not _SCOPE.fullmatch(scope):
        raise InvalidInputError(
            f"dataset scope {scope!r}: 1 to 25 characters, letters, digits, '_', '.' or '-' (Rucio's rule)"
        )
    if not _DID_NAME.fullmatch(name):
        raise InvalidInputError(
            f"dataset name {name!r}: 1 to 250 characters, letters, digits, '/', '.', '_' or '-', starting "
            "with a letter or digit (Rucio's rule)"
        )
    if ".." in name.split("/") or "//" in name:
        raise InvalidInputError(f"dataset name {name!r}: no '..' or empty path components")
    return scope, name


def get_or_create_dataset(session: Session, scope: str, name: str, kind: str = "raw") -> int:
    check_did(scope, name)
    found = session.scalar(select(Dataset.id).where(Dataset.scope == scope, Dataset.name == name))
    if found is not None:
        return found
    ds = Dataset(scope=scope, name=name, kind=kind, n_files=0, n_bytes=0, created_at=time.time())
    session.add(ds)
    session.flush()
    return ds.id


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
    _check_sites(session, {site for site, _ in replicas_at})
    max_before = session.execute(text("SELECT coalesce(max(id), 0) FROM files")).scalar_one()
    totals = [0, 0]
    copy_rows(
        session,
        "files",
        ("name", "size", "adler32"),
        _checked_files(rows, totals),
        what=f"registering files in dataset {dataset_id}",
        constants={"dataset_id": dataset_id},
    )
    n_files, n_bytes = totals
    session.execute(
        update(Dataset)
        .where(Dataset.id == dataset_id)
        .values(n_files=Dataset.n_files + n_files, n_bytes=Dataset.n_bytes + n_bytes)
    )
    n_replicas = 0
    if replicas_at and n_files:
        # One statement for every site, in (file, site) order: the replicas' primary key only ever grows
        # at its end. Site by site, the second site's rows went between the first's, splitting pages.
        sites = " UNION ALL ".join(
            f"SELECT CAST(:s{i} AS SMALLINT) AS site_id, CAST(:t{i} AS SMALLINT) AS state"
            for i in range(len(replicas_at))
        )
        params: dict[str, int] = {"ds": dataset_id, "after": max_before}
        for i, (site_id, state) in enumerate(replicas_at):
            params[f"s{i}"], params[f"t{i}"] = site_id, int(state)
        session.execute(
            text(
                "INSERT INTO replicas (file_id, site_id, state) SELECT f.id, r.site_id, r.state "
                f"FROM files f CROSS JOIN ({sites}) r WHERE f.dataset_id = :ds AND f.id > :after "
                "ORDER BY f.id, r.site_id"
            ),
            params,
        )
        bump_counts(
            session,
            "replica_counts",
            ("dataset_id", "site_id", "state"),
            ("n_files", "n_bytes"),
            {(dataset_id, site_id, int(state)): (n_files, n_bytes) for site_id, state in replicas_at},
        )
        n_replicas = n_files * len(replicas_at)
    log_event(
        session,
        "files.registered",
        subject=f"dataset:{dataset_id}",
        payload={"files": n_files, "bytes": n_bytes, "replicas": n_replicas},
    )
    return RegisterResult(dataset_id, n_files, n_bytes, n_replicas)


def _check_sites(session: Session, site_ids: set[int]) -> None:
    """Site ids a replica is about to name must exist (the replicas table has no foreign keys)."""
    if site_ids:
        unknown = site_ids - set(session.scalars(select(Site.id)))
        if unknown:
            raise NotFoundError(f"site ids {sorted(unknown)} do not exist")


def set_replica_states(session: Session, updates: Iterable[tuple[int, int, ReplicaState]]) -> int:
    """Set (file id, site id) → state, creating replicas that do not exist yet; returns the count."""
    loaded = load_temp(
        session,
        "tmp_replica_update",
        "file_id BIGINT NOT NULL, site_id SMALLINT NOT NULL, state SMALLINT NOT NULL, "
        "PRIMARY KEY (file_id, site_id)",
        ("file_id", "site_id", "state"),
        ((f, s, int(st)) for f, s, st in updates),
    )
    _check_sites(session, set(session.scalars(text("SELECT DISTINCT site_id FROM tmp_replica_update"))))
    trans = transitions(
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
    bump_counts(
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
    loaded = load_temp(
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
    bump_counts(
        session,
        "replica_counts",
        ("dataset_id", "site_id", "state"),
        ("n_files", "n_bytes"),
        {(ds, site, copying): (-int(n), -int(b)) for ds, site, n, b in rows},
    )
    session.execute(text("DROP TABLE tmp_replica_drop"))
    return sum(int(n) for _, _, n, _ in rows)


def healthy_source(session: Session, file_id: int, exclude: Sequence[int]) -> int | None:
    """Another site with an AVAILABLE replica of the file (lowest id: deterministic), or None."""
    return session.execute(
        text(
            "SELECT min(site_id) FROM replicas WHERE file_id = :f AND state = :a AND site_id NOT IN :x"
        ).bindparams(bindparam("x", expanding=True)),
        {"f": file_id, "a": int(ReplicaState.AVAILABLE), "x": list(exclude)},
    ).scalar()


@dataclass(frozen=True)
class DatasetRow:
    dataset: str
    files: int
    bytes: int
    available: dict[str, int]  # site → files AVAILABLE there
    other: dict[str, dict[str, int]]  # site → state → files (not AVAILABLE)


def dataset_summaries(session: Session, scope: str | None = None) -> list[DatasetRow]:
    """Datasets with files, bytes and replicas per site and state (from the aggregates)."""
    names = site_names(session)
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


# --- datasets and replicas, as the replication back-ends ask ----------------------------------------
@dataclass(frozen=True)
class DatasetRef:
    id: int
    scope: str
    name: str
    n_files: int

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"


def dataset(session: Session, scope: str, name: str) -> DatasetRef | None:
    row = session.execute(
        select(Dataset.id, Dataset.scope, Dataset.name, Dataset.n_files).where(
            Dataset.scope == scope, Dataset.name == name
        )
    ).first()
    return DatasetRef(*row) if row is not None else None


def dataset_by_id(session: Session, dataset_id: int) -> DatasetRef:
    row = session.execute(
        select(Dataset.id, Dataset.scope, Dataset.name, Dataset.n_files).where(Dataset.id == dataset_id)
    ).first()
    if row is None:
        raise NotFoundError(f"dataset id {dataset_id} does not exist")
    return DatasetRef(*row)


def replicas_of(session: Session, dataset_id: int) -> list[tuple[str, str, ReplicaState, int, str]]:
    """(file name, site name, state, size, adler32) of every replica of the dataset's files."""
    rows = session.execute(
        text(
            "SELECT f.name, s.name, r.state, f.size, f.adler32 FROM files f "
            "JOIN replicas r ON r.file_id = f.id JOIN sites s ON s.id = r.site_id "
            "WHERE f.dataset_id = :ds ORDER BY f.name, s.name"
        ),
        {"ds": dataset_id},
    )
    return [(n, s, ReplicaState(st), size, a) for n, s, st, size, a in rows]


def file_ids(session: Session, names: Sequence[str]) -> dict[str, int]:
    """Catalogued file name → id for the names given (absent names are left out)."""
    if not names:
        return {}
    stmt = text("SELECT name, id FROM files WHERE name IN :n").bindparams(bindparam("n", expanding=True))
    return {str(n): int(i) for n, i in session.execute(stmt, {"n": list(names)})}


def file_names(session: Session, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    stmt = text("SELECT id, name FROM files WHERE id IN :i").bindparams(bindparam("i", expanding=True))
    return {int(i): str(n) for i, n in session.execute(stmt, {"i": [int(x) for x in ids]})}


def file_rows(session: Session, ids: Sequence[int]) -> dict[int, FileRow]:
    """File id → (name, size, adler32) for the ids given."""
    if not ids:
        return {}
    stmt = text("SELECT id, name, size, adler32 FROM files WHERE id IN :i").bindparams(
        bindparam("i", expanding=True)
    )
    rows = session.execute(stmt, {"i": [int(x) for x in ids]})
    return {int(i): FileRow(str(n), int(sz), str(a)) for i, n, sz, a in rows}


def available_per_site(session: Session, dataset_id: int) -> dict[int, int]:
    """Site id → files of the dataset AVAILABLE there (from the aggregate)."""
    return {
        int(site): int(n)
        for site, n in session.execute(
            text("SELECT site_id, n_files FROM replica_counts WHERE dataset_id = :d AND state = :a"),
            {"d": dataset_id, "a": int(ReplicaState.AVAILABLE)},
        )
    }


def available_replicas(session: Session, dataset_id: int) -> set[tuple[str, int]]:
    """(file name, site id) of the dataset's AVAILABLE replicas."""
    return {
        (str(n), int(s))
        for n, s in session.execute(
            text(
                "SELECT f.name, r.site_id FROM files f JOIN replicas r ON r.file_id = f.id "
                "WHERE f.dataset_id = :d AND r.state = :a"
            ),
            {"d": dataset_id, "a": int(ReplicaState.AVAILABLE)},
        )
    }


def copy_sources(
    session: Session, dataset_id: int, site_id: int, only: Sequence[int] | None = None
) -> list[tuple[int, int, int]]:
    """(file id, size, source site id) for the dataset's files absent at ``site_id`` (or, with
    ``only``, those files whatever their replica state there), each from an AVAILABLE replica
    elsewhere (the lowest site id: deterministic). Files with no such replica are left out."""
    which = (
        "f.id IN :only"
        if only is not None
        else "NOT EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.site_id = :site)"
    )
    stmt = text(
        "SELECT f.id, f.size, min(src.site_id) FROM files f "
        "JOIN replicas src ON src.file_id = f.id AND src.state = :available AND src.site_id <> :site "
        f"WHERE f.dataset_id = :ds AND {which} GROUP BY f.id, f.size"
    )
    params: dict[str, Any] = {"available": int(ReplicaState.AVAILABLE), "site": site_id, "ds": dataset_id}
    if only is not None:
        stmt = stmt.bindparams(bindparam("only", expanding=True))
        params["only"] = list(only)
    return [(int(f), int(size), int(src)) for f, size, src in session.execute(stmt, params)]


def replica_states(session: Session, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], ReplicaState]:
    """(file id, site id) → state of those replicas that exist."""
    stmt = text("SELECT file_id, site_id, state FROM replicas WHERE file_id IN :f").bindparams(
        bindparam("f", expanding=True)
    )
    wanted = set(pairs)
    files = sorted({f for f, _ in wanted})
    out: dict[tuple[int, int], ReplicaState] = {}
    for i in range(0, len(files), 500):
        for f, s, st in session.execute(stmt, {"f": files[i : i + 500]}):
            if (int(f), int(s)) in wanted:
                out[(int(f), int(s))] = ReplicaState(st)
    return out


def record_bad(session: Session, replicas: Sequence[tuple[int, int, ReplicaState, str]], source: str) -> None:
    """Set (file id, site id) replicas to BAD/LOST/UNAVAILABLE and record who declared it and why."""
    if not replicas:
        return
    set_replica_states(session, ((f, s, st) for f, s, st, _ in replicas))
    now = time.time()
    session.add_all(
        BadReplica(file_id=f, site_id=s, state=st, reason=why, source=source, created_at=now)
        for f, s, st, why in replicas
    )
    log_event(
        session,
        "replicas.declared_bad",
        subject=source,
        message=replicas[0][3],
        payload={"replicas": len(replicas)},
    )


def known_names(session: Session, names: Iterable[str], chunk: int = 500) -> set[str]:
    """Which of ``names`` are catalogued (an index lookup per chunk, not a scan of every name)."""
    wanted = list(dict.fromkeys(names))
    found: set[str] = set()
    stmt = text("SELECT name FROM files WHERE name IN :n").bindparams(bindparam("n", expanding=True))
    for i in range(0, len(wanted), chunk):
        found.update(str(n) for (n,) in session.execute(stmt, {"n": wanted[i : i + chunk]}))
    return found


def catalogued(session: Session) -> list[tuple[str, int, str]]:
    """(name, size, adler32) of every catalogued file, by name (for a full audit of a small release)."""
    return [
        (str(n), int(s), str(a))
        for n, s, a in session.execute(text("SELECT name, size, adler32 FROM files ORDER BY name"))
    ]


def available_at(
    session: Session, site_id: int, names: Iterable[str], chunk: int = 500
) -> dict[str, FileRow]:
    """Which of ``names`` have an AVAILABLE replica at the site, with their size and adler32 (a
    workflow's replica catalogue comes from here, not from a listing of the storage)."""
    wanted = list(dict.fromkeys(names))
    out: dict[str, FileRow] = {}
    stmt = text(
        "SELECT f.name, f.size, f.adler32 FROM files f JOIN replicas r ON r.file_id = f.id "
        "WHERE r.site_id = :s AND r.state = :a AND f.name IN :n"
    ).bindparams(bindparam("n", expanding=True))
    for i in range(0, len(wanted), chunk):
        params = {"s": site_id, "a": int(ReplicaState.AVAILABLE), "n": wanted[i : i + chunk]}
        for n, sz, a in session.execute(stmt, params):
            out[str(n)] = FileRow(str(n), int(sz), str(a))
    return out

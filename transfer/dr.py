"""Disaster recovery of data (``drp dr status|audit|recover|replicate``).

- **status**: per site and dataset type, how much of the catalogue has a verified (AVAILABLE) replica
  there, read from the exact ``replica_counts`` aggregate; plus the files that lack a second verified
  copy anywhere (one scan of ``replicas``).
- **audit**: walks a site's storage and compares it with what the catalogue says is there. LOST:
  catalogued AVAILABLE, absent. CORRUPT: size or (``verify_checksums``) adler32 differs. DARK: present,
  not catalogued at that site. Findings are recorded in ``audits``/``audit_findings`` with time and
  reason. LOST and CORRUPT replicas are declared to the replication back-end (embedded or Rucio),
  which queues fresh copies for the rules that need them. DARK files are reported. They are deleted
  only with ``delete_dark``, and never when the file is catalogued with no verified copy elsewhere.
- **recover**: re-copies a site's BAD and LOST replicas from a healthy site through the transfer engine
  (verified copies only). Files with no healthy copy anywhere are reported as unrecoverable and left in
  place, never silently skipped.
- **replicate**: one rule per dataset of a release to site S, then the engine: S ends with the full
  release.

Nothing here deletes a catalogued replica; the only deletion is of dark files, on request.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from bookkeeping.bulk import copy_rows
from bookkeeping.database import Database
from bookkeeping.events import log_event
from bookkeeping.files import check_name, set_replica_states
from bookkeeping.models import Audit
from bookkeeping.sites import site_ids
from bookkeeping.states import ReplicaState, RuleState
from bookkeeping.transfers import TransferRow, add_transfers
from common.errors import EXIT_FAILED, EXIT_IN_PROGRESS, EXIT_OK, InvalidInputError, NotFoundError
from instrumentation.progress import ProgressFactory, no_progress
from sites.catalogue import DEFAULT_MOVERS, SiteCatalogue

from .engine import EngineReport, TransferEngine
from .movers.base import FileStat, Mover
from .movers.registry import get_mover
from .replication.base import ReplicationBackend
from .storage import replica_url

_EXAMPLES = 20


def dataset_type(name: str) -> str:
    """``inputs.tract0042`` → ``inputs``; ``raw/000001`` → ``raw``; ``meta`` → ``meta``."""
    return name.split("/", 1)[0].split(".", 1)[0]


def storage_mover(catalogue: SiteCatalogue, site: str) -> Mover:
    """The mover that can look at a site's storage (by its scheme; FTS3 links cannot list or stat)."""
    scheme = catalogue.get(site).scheme
    name = DEFAULT_MOVERS.get((scheme, scheme))
    if name is None:
        raise InvalidInputError(
            f"site {site}: auditing {scheme}:// storage is not supported (file://, root://)"
        )
    return get_mover(name, {})


# --- status ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeCoverage:
    scope: str
    type: str
    files: int
    bytes: int
    available: dict[str, int]  # site → files with a verified replica there
    available_bytes: dict[str, int]


@dataclass(frozen=True)
class DrStatus:
    sites: dict[str, bool]  # site → available (not failed over)
    types: list[TypeCoverage]
    files: int
    single_copy: int  # files with exactly one verified replica
    no_copy: int  # files with none
    single_copy_at: dict[str, int]  # site → files whose only verified replica is there
    examples: list[tuple[str, str]]  # (file, "only at SITE" | "no verified copy")

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.single_copy or self.no_copy else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def status(session: Session, *, scope: str | None = None) -> DrStatus:
    names = {v: k for k, v in site_ids(session).items()}
    available_sites = {
        str(n): bool(a) for n, a in session.execute(text("SELECT name, available FROM sites ORDER BY name"))
    }
    where = "WHERE d.scope = :scope" if scope else ""
    params = {"scope": scope} if scope else {}
    per: dict[tuple[str, str], list[Any]] = {}
    for sc, name, n, b in session.execute(
        text(f"SELECT d.scope, d.name, d.n_files, d.n_bytes FROM datasets d {where}"), params
    ):
        row = per.setdefault((sc, dataset_type(name)), [0, 0, Counter(), Counter()])
        row[0] += n
        row[1] += b
    for sc, name, site, n, b in session.execute(
        text(
            "SELECT d.scope, d.name, c.site_id, c.n_files, c.n_bytes FROM replica_counts c "
            f"JOIN datasets d ON d.id = c.dataset_id {where} {'AND' if scope else 'WHERE'} c.state = :a"
        ),
        {**params, "a": int(ReplicaState.AVAILABLE)},
    ):
        row = per.setdefault((sc, dataset_type(name)), [0, 0, Counter(), Counter()])
        row[2][names[site]] += n
        row[3][names[site]] += b
    types = [
        TypeCoverage(sc, t, v[0], v[1], dict(sorted(v[2].items())), dict(sorted(v[3].items())))
        for (sc, t), v in sorted(per.items())
    ]
    scope_join = "JOIN datasets d ON d.id = f.dataset_id AND d.scope = :scope" if scope else ""
    single: Counter[str] = Counter()
    no_copy = 0
    examples: list[tuple[str, str]] = []
    for fname, n, site in session.execute(
        text(
            "SELECT f.name, count(r.site_id), min(r.site_id) FROM files f "
            f"{scope_join} LEFT JOIN replicas r ON r.file_id = f.id AND r.state = :a "
            "GROUP BY f.id, f.name HAVING count(r.site_id) < 2"
        ),
        {**params, "a": int(ReplicaState.AVAILABLE)},
    ):
        if n == 0:
            no_copy += 1
            where_ = "no verified copy"
        else:
            single[names[site]] += 1
            where_ = f"only at {names[site]}"
        if len(examples) < _EXAMPLES:
            examples.append((fname, where_))
    return DrStatus(
        available_sites,
        types,
        sum(t.files for t in types),
        sum(single.values()),
        no_copy,
        dict(sorted(single.items())),
        examples,
    )


# --- audit -----------------------------------------------------------------------------------------
class FindingKind(StrEnum):
    LOST = "LOST"
    CORRUPT = "CORRUPT"
    DARK = "DARK"


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    name: str
    reason: str
    file_id: int | None = None
    size: int | None = None  # on storage
    action: str | None = None  # declared LOST/BAD | deleted | kept: … | would declare (dry run)


@dataclass
class AuditReport:
    site: str
    audit_id: int | None  # None in a dry run
    checksums: bool
    sample: float | None
    prefix: str
    dry_run: bool
    catalogued: int = 0  # replicas the catalogue says are at the site (under prefix)
    checked: int = 0  # of them, checked on storage
    bytes_read: int = 0  # checksummed
    listed: int = 0  # files seen on storage
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    outside: dict[str, int] = field(default_factory=dict)  # uncatalogued types: not judged dark

    def of(self, kind: FindingKind) -> list[Finding]:
        return [f for f in self.findings if f.kind is kind]

    @property
    def exit_code(self) -> int:
        bad = any(f.kind is not FindingKind.DARK for f in self.findings)
        return EXIT_FAILED if bad else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = [{**asdict(f), "kind": f.kind.value} for f in self.findings]
        d["counts"] = {k.value: len(self.of(k)) for k in FindingKind}
        d["exit_code"] = self.exit_code
        return d


@dataclass(frozen=True)
class _Expected:
    file_id: int
    size: int
    adler32: str


def _type_key(name: str) -> str:
    return "/".join(name.split("/", 2)[:2])


def _sampled(name: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def audit(
    db: Database,
    catalogue: SiteCatalogue,
    backend: ReplicationBackend,
    site: str,
    *,
    verify_checksums: bool = False,
    sample: float | None = None,
    prefix: str = "",
    delete_dark: bool = False,
    dry_run: bool = False,
    workers: int = 4,
    progress: ProgressFactory = no_progress,
) -> AuditReport:
    """Compare site storage with the catalogue, record and declare what differs (see module doc)."""
    cfg = catalogue.get(site)
    if sample is not None and not 0 < sample <= 1:
        raise InvalidInputError(f"--sample must be in (0, 1], got {sample}")
    prefix = prefix.strip("/")
    if prefix:
        check_name(prefix)
    mover = storage_mover(catalogue, site)
    report = AuditReport(site, None, verify_checksums, sample, prefix, dry_run)
    started = time.perf_counter()
    like = {"p": f"{prefix}/%"} if prefix else {"p": "%"}
    with db.session() as session:
        site_id = site_ids(session).get(site)
        if site_id is None:
            raise NotFoundError(f"site {site!r} is not in bookkeeping (run `drp sites sync`)")
        expected: dict[str, _Expected] = {}
        known_other: set[str] = set()  # at the site in another state (copying, declared bad…)
        for fid, name, size, adler, st in session.execute(
            text(
                "SELECT f.id, f.name, f.size, f.adler32, r.state FROM replicas r "
                "JOIN files f ON f.id = r.file_id WHERE r.site_id = :s AND f.name LIKE :p"
            ),
            {"s": site_id, **like},
        ):
            if st == ReplicaState.AVAILABLE:
                expected[name] = _Expected(fid, size, adler)
            else:
                known_other.add(name)
    types = {_type_key(n) for n in expected} | {_type_key(n) for n in known_other}
    report.catalogued = len(expected)
    to_checksum: list[tuple[str, _Expected]] = []
    if sample is not None:
        chosen = [(n, e) for n, e in expected.items() if _sampled(n, sample)]
        report.checked = len(chosen)
        with progress(f"{site}: checking {len(chosen):,} sampled files", len(chosen)) as advance:
            for name, stat in _stat_many(mover, cfg.storage, chosen, verify_checksums, workers):
                _judge(report, name, expected[name], stat)
                report.bytes_read += stat.size if stat is not None and verify_checksums else 0
                advance(1)
    else:
        base = replica_url(cfg.storage, prefix) if prefix else cfg.storage
        remaining = dict(expected)
        dark: list[tuple[str, int]] = []
        outside: Counter[str] = Counter()
        with progress(f"{site}: listing storage", None) as advance:
            for rel, size in mover.walk(base):
                name = f"{prefix}/{rel}" if prefix else rel
                report.listed += 1
                advance(1)
                exp = remaining.pop(name, None)
                if exp is not None:
                    if size != exp.size:
                        report.findings.append(
                            Finding(
                                FindingKind.CORRUPT,
                                name,
                                f"size {size} on storage, {exp.size} in the catalogue",
                                exp.file_id,
                                size,
                            )
                        )
                    elif verify_checksums:
                        to_checksum.append((name, exp))
                elif name in known_other or name in expected:
                    continue
                elif _type_key(name) in types:
                    dark.append((name, size))
                else:
                    outside[_type_key(name)] += 1
        report.outside = dict(sorted(outside.items()))
        report.checked = len(expected)
        for name, exp in sorted(remaining.items()):
            report.findings.append(Finding(FindingKind.LOST, name, "absent from storage", exp.file_id))
        if to_checksum:
            total = sum(e.size for _, e in to_checksum)
            with progress(f"{site}: verifying adler32 of {len(to_checksum):,} files", total) as advance:
                for name, stat in _stat_many(mover, cfg.storage, to_checksum, True, workers):
                    exp = expected[name]
                    _judge(report, name, exp, stat)
                    report.bytes_read += exp.size
                    advance(exp.size)
        report.findings += _classify_dark(db, site_id, dark)
    report.findings.sort(key=lambda f: (f.kind.value, f.name))
    report.findings = _act(db, backend, mover, cfg.storage, site, site_id, report, delete_dark)
    report.seconds = time.perf_counter() - started
    if not dry_run:
        report.audit_id = _record(db, site_id, report)
    mover.close()
    return report


def _judge(report: AuditReport, name: str, exp: _Expected, stat: FileStat | None) -> None:
    if stat is None:
        report.findings.append(Finding(FindingKind.LOST, name, "absent from storage", exp.file_id))
    elif (problem := _compare(exp, stat)) is not None:
        report.findings.append(Finding(FindingKind.CORRUPT, name, problem, exp.file_id, stat.size))


def _compare(exp: _Expected, stat: FileStat) -> str | None:
    if stat.size != exp.size:
        return f"size {stat.size} on storage, {exp.size} in the catalogue"
    if stat.adler32 is not None and stat.adler32 != exp.adler32:
        return f"adler32 {stat.adler32} on storage, {exp.adler32} in the catalogue"
    return None


def _stat_many(
    mover: Mover, storage: str, files: list[tuple[str, _Expected]], checksum: bool, workers: int
) -> Iterator[tuple[str, FileStat | None]]:
    """(name, stat) in input order; checksums run on ``workers`` threads (adler32 releases the GIL)."""

    def one(item: tuple[str, _Expected]) -> tuple[str, FileStat | None]:
        return item[0], mover.stat(replica_url(storage, item[0]), checksum=checksum)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        yield from pool.map(one, files)


def _classify_dark(db: Database, site_id: int, dark: list[tuple[str, int]]) -> list[Finding]:
    """Dark files, with whether the catalogue knows the name and has verified copies elsewhere."""
    out: list[Finding] = []
    with db.session() as session:
        for name, size in dark:
            row = session.execute(
                text(
                    "SELECT f.id, (SELECT count(*) FROM replicas r WHERE r.file_id = f.id AND r.state = :a "
                    "AND r.site_id <> :s) FROM files f WHERE f.name = :n"
                ),
                {"n": name, "a": int(ReplicaState.AVAILABLE), "s": site_id},
            ).first()
            if row is None:
                out.append(Finding(FindingKind.DARK, name, "on storage, not in the catalogue", None, size))
            else:
                out.append(
                    Finding(
                        FindingKind.DARK,
                        name,
                        f"catalogued without a replica at this site ({row[1]} verified elsewhere)",
                        int(row[0]),
                        size,
                    )
                )
    return out


def _last_copy(session: Session, file_id: int | None, site_id: int) -> bool:
    if file_id is None:
        return False
    n = session.execute(
        text("SELECT count(*) FROM replicas WHERE file_id = :f AND state = :a AND site_id <> :s"),
        {"f": file_id, "a": int(ReplicaState.AVAILABLE), "s": site_id},
    ).scalar_one()
    return int(n) == 0


def _act(
    db: Database,
    backend: ReplicationBackend,
    mover: Mover,
    storage: str,
    site: str,
    site_id: int,
    report: AuditReport,
    delete_dark: bool,
) -> list[Finding]:
    """Declare LOST/CORRUPT replicas to the back-end and (on request) delete dark files."""
    out: list[Finding] = []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lost = report.of(FindingKind.LOST)
    if lost:
        if not report.dry_run:
            with db.session() as session:
                backend.declare_bad(
                    session,
                    [(f.name, site) for f in lost],
                    f"audit {stamp}: absent from storage",
                    state=ReplicaState.LOST,
                    source="audit",
                )
        out += [_with(f, "would declare LOST" if report.dry_run else "declared LOST") for f in lost]
    for f in report.of(FindingKind.CORRUPT):
        if not report.dry_run:
            with db.session() as session:
                backend.declare_bad(session, [(f.name, site)], f"audit {stamp}: {f.reason}", source="audit")
        out.append(_with(f, "would declare BAD" if report.dry_run else "declared BAD"))
    for f in report.of(FindingKind.DARK):
        if not delete_dark:
            out.append(_with(f, "reported"))
            continue
        with db.session() as session:
            last = _last_copy(session, f.file_id, site_id)
        if last:
            out.append(_with(f, "kept: no verified copy elsewhere"))
        elif report.dry_run:
            out.append(_with(f, "would delete"))
        else:
            mover.delete(replica_url(storage, f.name))
            out.append(_with(f, "deleted"))
    return out


def _with(f: Finding, action: str) -> Finding:
    return Finding(f.kind, f.name, f.reason, f.file_id, f.size, action)


def _record(db: Database, site_id: int, report: AuditReport) -> int:
    now = time.time()
    with db.session() as session:
        row = Audit(
            site_id=site_id,
            prefix=report.prefix,
            checksums=report.checksums,
            sample=report.sample,
            dry_run=report.dry_run,
            started_at=now - report.seconds,
            finished_at=now,
            n_checked=report.checked,
            n_bytes_read=report.bytes_read,
            n_lost=len(report.of(FindingKind.LOST)),
            n_corrupt=len(report.of(FindingKind.CORRUPT)),
            n_dark=len(report.of(FindingKind.DARK)),
        )
        session.add(row)
        session.flush()
        copy_rows(
            session,
            "audit_findings",
            ("audit_id", "site_id", "kind", "name", "file_id", "size", "reason", "action", "created_at"),
            (
                (row.id, site_id, f.kind.value, f.name, f.file_id, f.size, f.reason, f.action, now)
                for f in report.findings
            ),
        )
        log_event(
            session,
            "dr.audit",
            subject=report.site,
            message=f"{row.n_lost} lost, {row.n_corrupt} corrupt, {row.n_dark} dark "
            f"of {report.checked} checked",
            payload={"audit": row.id},
        )
        return int(row.id)


# --- recover ---------------------------------------------------------------------------------------
@dataclass
class RecoverReport:
    site: str
    dry_run: bool
    to_recover: int = 0  # BAD/LOST (or being re-copied) replicas with a healthy source
    recovered: int = 0
    bytes: int = 0
    unrecoverable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, last transfer error)
    pending: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.unrecoverable or self.failed:
            return EXIT_FAILED
        return EXIT_IN_PROGRESS if self.pending else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def recover(
    db: Database,
    catalogue: SiteCatalogue,
    backend: ReplicationBackend,
    site: str,
    *,
    dry_run: bool = False,
    max_seconds: float | None = None,
    on_round: Callable[[EngineReport], None] | None = None,
) -> RecoverReport:
    """Re-copy the site's BAD and LOST replicas from healthy ones; report what has no healthy copy."""
    catalogue.get(site)
    report = RecoverReport(site, dry_run)
    started = time.perf_counter()
    with db.session() as session:
        site_id = site_ids(session).get(site)
        if site_id is None:
            raise NotFoundError(f"site {site!r} is not in bookkeeping (run `drp sites sync`)")
        names = {v: k for k, v in site_ids(session).items()}
        rows = session.execute(
            text(
                "SELECT f.id, f.name, f.size, r.state, "
                "(SELECT min(o.site_id) FROM replicas o "
                " WHERE o.file_id = f.id AND o.state = :a AND o.site_id <> :s), "
                "(SELECT count(*) FROM transfers t WHERE t.file_id = f.id AND t.dest_site_id = :s "
                " AND t.state IN (1, 2, 3)), "
                "(SELECT b.reason FROM bad_replicas b WHERE b.file_id = f.id AND b.site_id = :s "
                " ORDER BY b.id DESC LIMIT 1) "
                "FROM replicas r JOIN files f ON f.id = r.file_id "
                "WHERE r.site_id = :s AND r.state IN (:bad, :lost, :copying) ORDER BY f.name"
            ),
            {
                "s": site_id,
                "a": int(ReplicaState.AVAILABLE),
                "bad": int(ReplicaState.BAD),
                "lost": int(ReplicaState.LOST),
                "copying": int(ReplicaState.COPYING),
            },
        ).all()
        queue: list[TransferRow] = []
        targets: dict[int, str] = {}
        for fid, name, size, st, source, active, why in rows:
            if active:
                targets[fid] = name  # already being re-copied (queued when it was declared)
                continue
            if st == ReplicaState.COPYING:
                continue  # a copy a rule is making; not a recovery
            if source is None:
                report.unrecoverable.append(
                    (
                        name,
                        f"{ReplicaState(st).name} at {site} ({why or 'no reason recorded'}); "
                        "no verified copy at any other site",
                    )
                )
                continue
            targets[fid] = name
            mover = catalogue.link(names[source], site).mover
            queue.append(TransferRow(fid, source, site_id, size, None, mover))
        report.to_recover = len(targets)
        if dry_run or not targets:
            report.seconds = time.perf_counter() - started
            return report
        if queue:
            set_replica_states(session, ((t.file_id, site_id, ReplicaState.COPYING) for t in queue))
            add_transfers(session, None, queue)
            log_event(session, "dr.recover", subject=site, payload={"queued": len(queue)})
    engine = TransferEngine(db, catalogue, backend)
    try:
        engine.run(max_seconds=max_seconds, progress=on_round, poll_s=0.2)
    finally:
        engine.close()
    with db.session() as session:
        for fid, state, size, error in session.execute(
            text(
                "SELECT f.id, r.state, f.size, (SELECT t.error FROM transfers t WHERE t.file_id = f.id "
                " AND t.dest_site_id = :s ORDER BY t.id DESC LIMIT 1) "
                "FROM files f JOIN replicas r ON r.file_id = f.id AND r.site_id = :s WHERE f.id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"s": site_id, "ids": list(targets)},
        ):
            if state == ReplicaState.AVAILABLE:
                report.recovered += 1
                report.bytes += size
            elif state == ReplicaState.COPYING:
                report.pending += 1
            else:
                report.failed.append((targets[fid], error or ReplicaState(state).name))
    report.seconds = time.perf_counter() - started
    return report


# --- replicate -------------------------------------------------------------------------------------
@dataclass
class ReplicateReport:
    site: str
    scope: str
    dry_run: bool
    datasets: int = 0
    missing_files: int = 0  # before
    missing_bytes: int = 0
    rules_added: int = 0
    copied: int = 0
    failed: int = 0
    pending: int = 0  # files of the release still not verified at the site
    unreachable: list[str] = field(default_factory=list)  # datasets whose rule is STUCK, with reason
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.unreachable or self.failed:
            return EXIT_FAILED
        return EXIT_IN_PROGRESS if self.pending else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def _missing(session: Session, site_id: int, scope: str) -> tuple[list[str], int, int]:
    datasets: list[str] = []
    files = nbytes = 0
    for name, n, b, have, have_b in session.execute(
        text(
            "SELECT d.name, d.n_files, d.n_bytes, coalesce(c.n_files, 0), coalesce(c.n_bytes, 0) "
            "FROM datasets d LEFT JOIN replica_counts c ON c.dataset_id = d.id AND c.site_id = :s "
            "AND c.state = :a WHERE d.scope = :scope AND d.n_files > 0 ORDER BY d.name"
        ),
        {"s": site_id, "a": int(ReplicaState.AVAILABLE), "scope": scope},
    ):
        datasets.append(name)
        files += n - have
        nbytes += b - have_b
    return datasets, files, nbytes


def replicate(
    db: Database,
    catalogue: SiteCatalogue,
    backend: ReplicationBackend,
    site: str,
    scope: str,
    *,
    dry_run: bool = False,
    max_seconds: float | None = None,
    on_round: Callable[[EngineReport], None] | None = None,
) -> ReplicateReport:
    """Make ``site`` hold every file of the release ``scope``: a ``site=S`` rule per dataset, copied."""
    catalogue.get(site)
    report = ReplicateReport(site, scope, dry_run)
    started = time.perf_counter()
    with db.session() as session:
        row = session.execute(text("SELECT id, available FROM sites WHERE name = :n"), {"n": site}).first()
        if row is None:
            raise NotFoundError(f"site {site!r} is not in bookkeeping (run `drp sites sync`)")
        if not row[1]:
            raise InvalidInputError(f"site {site} is failed over (unavailable); `drp dr failback` first")
        site_id = int(row[0])
        datasets, report.missing_files, report.missing_bytes = _missing(session, site_id, scope)
        if not datasets:
            raise NotFoundError(f"release {scope!r} has no catalogued files")
        report.datasets = len(datasets)
        if dry_run:
            report.pending = report.missing_files
            report.seconds = time.perf_counter() - started
            return report
        before = session.execute(text("SELECT count(*) FROM rules")).scalar_one()
        for name in datasets:
            backend.add_rule(session, f"{scope}:{name}", f"site={site}", 1)
        report.rules_added = int(session.execute(text("SELECT count(*) FROM rules")).scalar_one() - before)
    engine = TransferEngine(db, catalogue, backend)
    try:
        done = engine.run(max_seconds=max_seconds, progress=on_round, poll_s=0.2)
    finally:
        engine.close()
    report.copied, report.failed = done.done, done.failed
    with db.session() as session:
        _, report.pending, _ = _missing(session, site_id, scope)
        for r in backend.rules(session, state=RuleState.STUCK):
            if r.expression == f"site={site}" and r.dataset.startswith(f"{scope}:"):
                report.unreachable.append(f"{r.dataset}: {r.stuck_reason}")
    report.seconds = time.perf_counter() - started
    return report

"""``drp dr audit``: a site's storage against the catalogue (LOST, CORRUPT, DARK), recorded and declared.

One pass lists storage (or, with ``sample``, stats a deterministic sample of the catalogued files);
sizes are compared on the way, checksums (``verify_checksums``) afterwards on worker threads. LOST and
CORRUPT replicas are declared to the replication back-end, which queues fresh copies; DARK files are
reported and deleted only on request, never when they are the last verified copy of a catalogued file.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from bookkeeping import audits
from bookkeeping.audits import Expected
from bookkeeping.database import Database
from bookkeeping.files import check_name
from bookkeeping.sites import site_id as lookup_site
from bookkeeping.states import ReplicaState
from bookkeeping.transfers import attempts_in_flight
from common.errors import EXIT_FAILED, EXIT_OK, InvalidInputError
from common.temporaries import owner_dead, parse
from instrumentation.progress import ProgressFactory, no_progress
from sites.catalogue import SiteCatalogue

from ..movers.base import FileStat, Mover
from ..replication.base import ReplicationBackend
from ..storage import replica_url
from .common import storage_mover


class FindingKind(StrEnum):
    LOST = "LOST"
    CORRUPT = "CORRUPT"
    DARK = "DARK"
    TEMP = "TEMP"  # a temporary copy (``.NAME.part-OWNER``): removed when its owner is dead


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
        bad = any(f.kind not in (FindingKind.DARK, FindingKind.TEMP) for f in self.findings)
        return EXIT_FAILED if bad else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = [{**asdict(f), "kind": f.kind.value} for f in self.findings]
        d["counts"] = {k.value: len(self.of(k)) for k in FindingKind}
        d["exit_code"] = self.exit_code
        return d


@dataclass
class _Scan:
    """What one audit works with: the site, its storage, what the catalogue expects there."""

    site: str
    site_id: int
    storage: str
    mover: Mover
    expected: dict[str, Expected]  # AVAILABLE at the site
    known_other: set[str]  # at the site in another state (copying, declared bad…)
    workers: int
    progress: ProgressFactory

    @property
    def types(self) -> set[str]:
        return {_type_key(n) for n in self.expected} | {_type_key(n) for n in self.known_other}


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
    storage = catalogue.get(site).storage
    if sample is not None and not 0 < sample <= 1:
        raise InvalidInputError(f"--sample must be in (0, 1], got {sample}")
    prefix = prefix.strip("/")
    if prefix:
        check_name(prefix)
    report = AuditReport(site, None, verify_checksums, sample, prefix, dry_run)
    started = time.perf_counter()
    with db.session() as session:
        site_id = lookup_site(session, site)
        rows = audits.replicas_at(session, site_id, prefix)
    scan = _Scan(
        site,
        site_id,
        storage,
        storage_mover(catalogue, site),
        {r.name: r for r in rows if r.state is ReplicaState.AVAILABLE},
        {r.name for r in rows if r.state is not ReplicaState.AVAILABLE},
        workers,
        progress,
    )
    report.catalogued = len(scan.expected)
    try:
        if sample is not None:
            _check_sample(scan, report, sample)
        else:
            _check_listing(db, scan, report)
        report.findings.sort(key=lambda f: (f.kind.value, f.name))
        report.findings = _act(db, backend, scan, report, delete_dark)
        if sample is None:
            report.findings += _temporaries(db, scan, report)
    finally:
        scan.mover.close()
    report.seconds = time.perf_counter() - started
    if not dry_run:
        report.audit_id = _record(db, scan, report)
    return report


def _check_sample(scan: _Scan, report: AuditReport, fraction: float) -> None:
    chosen = [(n, e) for n, e in scan.expected.items() if _sampled(n, fraction)]
    report.checked = len(chosen)
    with scan.progress(f"{scan.site}: checking {len(chosen):,} sampled files", len(chosen)) as advance:
        for name, stat in _stat_many(scan, chosen, report.checksums):
            _judge(report, name, scan.expected[name], stat)
            report.bytes_read += stat.size if stat is not None and report.checksums else 0
            advance(1)


def _check_listing(db: Database, scan: _Scan, report: AuditReport) -> None:
    """Walk storage once: sizes compared on the way, then the missing, checksums and dark files."""
    base = replica_url(scan.storage, report.prefix) if report.prefix else scan.storage
    remaining = dict(scan.expected)
    to_checksum: list[tuple[str, Expected]] = []
    dark: list[tuple[str, int]] = []
    outside: Counter[str] = Counter()
    types = scan.types
    with scan.progress(f"{scan.site}: listing storage", None) as advance:
        for rel, size in scan.mover.walk(base):
            name = f"{report.prefix}/{rel}" if report.prefix else rel
            report.listed += 1
            advance(1)
            exp = remaining.pop(name, None)
            if exp is not None:
                if size != exp.size:
                    reason = f"size {size} on storage, {exp.size} in the catalogue"
                    report.findings.append(Finding(FindingKind.CORRUPT, name, reason, exp.file_id, size))
                elif report.checksums:
                    to_checksum.append((name, exp))
            elif name in scan.known_other or name in scan.expected:
                continue
            elif _type_key(name) in types:
                dark.append((name, size))
            else:
                outside[_type_key(name)] += 1
    report.outside = dict(sorted(outside.items()))
    report.checked = len(scan.expected)
    for name, exp in sorted(remaining.items()):
        report.findings.append(Finding(FindingKind.LOST, name, "absent from storage", exp.file_id))
    if to_checksum:
        total = sum(e.size for _, e in to_checksum)
        label = f"{scan.site}: verifying adler32 of {len(to_checksum):,} files"
        with scan.progress(label, total) as advance:
            for name, stat in _stat_many(scan, to_checksum, True):
                exp = scan.expected[name]
                _judge(report, name, exp, stat)
                report.bytes_read += exp.size
                advance(exp.size)
    report.findings += _classify_dark(db, scan.site_id, dark)


def _judge(report: AuditReport, name: str, exp: Expected, stat: FileStat | None) -> None:
    if stat is None:
        report.findings.append(Finding(FindingKind.LOST, name, "absent from storage", exp.file_id))
    elif (problem := _compare(exp, stat)) is not None:
        report.findings.append(Finding(FindingKind.CORRUPT, name, problem, exp.file_id, stat.size))


def _compare(exp: Expected, stat: FileStat) -> str | None:
    if stat.size != exp.size:
        return f"size {stat.size} on storage, {exp.size} in the catalogue"
    if stat.adler32 is not None and stat.adler32 != exp.adler32:
        return f"adler32 {stat.adler32} on storage, {exp.adler32} in the catalogue"
    return None


def _stat_many(
    scan: _Scan, files: list[tuple[str, Expected]], checksum: bool
) -> Iterator[tuple[str, FileStat | None]]:
    """(name, stat) in input order; checksums run on worker threads (adler32 releases the GIL)."""

    def one(item: tuple[str, Expected]) -> tuple[str, FileStat | None]:
        return item[0], scan.mover.stat(replica_url(scan.storage, item[0]), checksum=checksum)

    with ThreadPoolExecutor(max(1, scan.workers)) as pool:
        yield from pool.map(one, files)


def _classify_dark(db: Database, site_id: int, dark: list[tuple[str, int]]) -> list[Finding]:
    """Dark files, with whether the catalogue knows the name and has verified copies elsewhere."""
    with db.session() as session:
        known = audits.verified_elsewhere(session, [n for n, _ in dark], site_id)
    out: list[Finding] = []
    for name, size in dark:
        if name not in known:
            out.append(Finding(FindingKind.DARK, name, "on storage, not in the catalogue", None, size))
            continue
        file_id, elsewhere = known[name]
        reason = f"catalogued without a replica at this site ({elsewhere} verified elsewhere)"
        out.append(Finding(FindingKind.DARK, name, reason, file_id, size))
    return out


def _act(
    db: Database, backend: ReplicationBackend, scan: _Scan, report: AuditReport, delete_dark: bool
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
                    [(f.name, scan.site) for f in lost],
                    f"audit {stamp}: absent from storage",
                    state=ReplicaState.LOST,
                    source="audit",
                )
        out += [_with(f, "would declare LOST" if report.dry_run else "declared LOST") for f in lost]
    for f in report.of(FindingKind.CORRUPT):
        if not report.dry_run:
            with db.session() as session:
                reason = f"audit {stamp}: {f.reason}"
                backend.declare_bad(session, [(f.name, scan.site)], reason, source="audit")
        out.append(_with(f, "would declare BAD" if report.dry_run else "declared BAD"))
    dark = report.of(FindingKind.DARK)
    if dark and delete_dark:
        with db.session() as session:
            known = audits.verified_elsewhere(session, [f.name for f in dark], scan.site_id)
    for f in dark:
        if not delete_dark:
            out.append(_with(f, "reported"))
        elif f.file_id is not None and known.get(f.name, (0, 0))[1] == 0:
            out.append(_with(f, "kept: no verified copy elsewhere"))
        elif report.dry_run:
            out.append(_with(f, "would delete"))
        else:
            scan.mover.delete(replica_url(scan.storage, f.name))
            out.append(_with(f, "deleted"))
    return out


def _temporaries(db: Database, scan: _Scan, report: AuditReport) -> list[Finding]:
    """Temporary copies under the audited tree, judged by owner: a dead one's is removed (or would be,
    in a dry run); a live or unknowable owner's is kept and said so."""
    base = replica_url(scan.storage, report.prefix) if report.prefix else scan.storage
    found = []
    for rel, size, mtime in scan.mover.temporaries(base):
        tmp = parse(rel)
        if tmp is not None:
            found.append((tmp, size, mtime))
    ids = [t.transfer_id for t, _, _ in found if t.transfer_id is not None]
    with db.session() as session:
        flying = attempts_in_flight(session, ids) if ids else {}
    out: list[Finding] = []
    for tmp, size, mtime in sorted(found, key=lambda x: x[0].name):
        name = f"{report.prefix}/{tmp.name}" if report.prefix else tmp.name
        if tmp.transfer_id is not None:
            live = flying.get(tmp.transfer_id) == tmp.attempt
            why = (
                f"transfer {tmp.transfer_id} attempt {tmp.attempt} is in flight"
                if live
                else f"transfer {tmp.transfer_id} attempt {tmp.attempt} is over"
            )
        else:
            dead = owner_dead(tmp, mtime)
            live, why = dead is None, dead or f"owner {tmp.owner} may be alive"
        if live:
            action = "kept: owner alive"
        elif report.dry_run:
            action = "would delete"
        else:
            scan.mover.delete(replica_url(scan.storage, name))
            action = "deleted"
        out.append(
            Finding(
                FindingKind.TEMP,
                name,
                f"temporary of {tmp.target.rpartition('/')[2]}: {why}",
                None,
                size,
                action,
            )
        )
    return out


def _with(f: Finding, action: str) -> Finding:
    return Finding(f.kind, f.name, f.reason, f.file_id, f.size, action)


def _record(db: Database, scan: _Scan, report: AuditReport) -> int:
    summary = audits.AuditSummary(
        report.site,
        scan.site_id,
        report.prefix,
        report.checksums,
        report.sample,
        report.dry_run,
        report.seconds,
        report.checked,
        report.bytes_read,
        len(report.of(FindingKind.LOST)),
        len(report.of(FindingKind.CORRUPT)),
        len(report.of(FindingKind.DARK)),
    )
    findings = ((f.kind.value, f.name, f.file_id, f.size, f.reason, f.action) for f in report.findings)
    with db.session() as session:
        return audits.record_audit(session, summary, findings)

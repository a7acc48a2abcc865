"""``drp dr recover`` (re-copy a site's BAD and LOST replicas from healthy ones) and ``drp dr replicate``
(the whole release at a site): both queue verified copies and run the transfer engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bookkeeping import audits
from bookkeeping import rules as ruledb
from bookkeeping.database import Database
from bookkeeping.events import log_event
from bookkeeping.files import set_replica_states
from bookkeeping.sites import availability, site_names
from bookkeeping.sites import site_id as lookup_site
from bookkeeping.states import ReplicaState, RuleState
from bookkeeping.transfers import TransferRow, add_transfers
from common.errors import EXIT_FAILED, EXIT_IN_PROGRESS, EXIT_OK, InvalidInputError, NotFoundError
from sites.catalogue import SiteCatalogue

from ..engine import NO_SOURCE, EngineReport, run_until_idle
from ..replication.base import ReplicationBackend


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
    """Re-copy the site's BAD and LOST replicas from healthy ones; report what has no healthy copy.

    When the replication service moves the data itself (Rucio's conveyor), the damaged replicas it
    was told of (``drp dr audit`` declares them) are its to repair: nothing is queued, the copies
    Rucio makes are watched until done or ``max_seconds``."""
    catalogue.get(site)
    report = RecoverReport(site, dry_run)
    started = time.perf_counter()
    with db.session() as session:
        site_id = lookup_site(session, site)
        names = site_names(session)
        queue: list[TransferRow] = []
        targets: dict[int, str] = {}
        stale = False
        for d in audits.damaged_at(session, site_id):
            if (
                d.state is ReplicaState.COPYING
                and not d.active_copies
                and (backend.engine_copies or not d.reason)
            ):
                # a copy a rule is making, not a recovery; but with Rucio's conveyor a replica declared
                # bad turns COPYING as soon as the necromancer starts its repair: that one is watched
                continue
            if d.source is None:
                # a copy queued when it was declared may come from a replica declared bad since:
                # the engine fails it without an attempt (it never reads a BAD or LOST source)
                report.unrecoverable.append((d.name, _unrecoverable(site, d.state, d.reason)))
                stale |= d.active_copies > 0
                continue
            if d.active_copies:
                targets[d.file_id] = d.name  # already being re-copied (queued when it was declared)
                continue
            targets[d.file_id] = d.name
            mover = catalogue.link(names[d.source], site).mover
            queue.append(TransferRow(d.file_id, d.source, site_id, d.size, None, mover))
        report.to_recover = len(targets)
        if dry_run or not (targets or stale):
            report.seconds = time.perf_counter() - started
            return report
        if queue and backend.engine_copies:
            set_replica_states(session, ((t.file_id, site_id, ReplicaState.COPYING) for t in queue))
            add_transfers(session, None, queue)
            log_event(session, "dr.recover", subject=site, payload={"queued": len(queue)})
        elif queue:  # Rucio's conveyor: the necromancer and judge re-copy what was declared bad; we watch
            log_event(session, "dr.recover", subject=site, payload={"left_to_rucio": len(queue)})
    run_until_idle(db, catalogue, backend, max_seconds=max_seconds, progress=on_round, poll_s=0.2)
    with db.session() as session:
        for fid, state, size, error in audits.outcomes_at(session, site_id, list(targets)):
            if state is ReplicaState.AVAILABLE:
                report.recovered += 1
                report.bytes += size
            elif state is ReplicaState.COPYING:
                report.pending += 1
            elif error and error.startswith(NO_SOURCE):  # its last good source was declared bad meanwhile
                report.unrecoverable.append((targets[fid], _unrecoverable(site, state, error)))
            else:
                report.failed.append((targets[fid], error or state.name))
    report.seconds = time.perf_counter() - started
    return report


def _unrecoverable(site: str, state: ReplicaState, reason: str | None) -> str:
    shown = "BAD" if state is ReplicaState.COPYING else state.name  # a repair queued when declared
    return f"{shown} at {site} ({reason or 'no reason recorded'}); no verified copy at any other site"


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
        site_id = lookup_site(session, site)
        if not availability(session)[site]:
            raise InvalidInputError(f"site {site} is failed over (unavailable); `drp dr failback` first")
        missing = audits.missing_by_dataset(session, site_id, scope)
        if not missing:
            raise NotFoundError(f"release {scope!r} has no catalogued files")
        report.datasets = len(missing)
        report.missing_files = sum(f for _, f, _ in missing)
        report.missing_bytes = sum(b for _, _, b in missing)
        if dry_run:
            report.pending = report.missing_files
            report.seconds = time.perf_counter() - started
            return report
        before = ruledb.count(session)
        for name, _, _ in missing:
            backend.add_rule(session, f"{scope}:{name}", f"site={site}", 1)
        report.rules_added = ruledb.count(session) - before
    done = run_until_idle(db, catalogue, backend, max_seconds=max_seconds, progress=on_round, poll_s=0.2)
    report.copied, report.failed = done.done, done.failed
    with db.session() as session:
        report.pending = sum(f for _, f, _ in audits.missing_by_dataset(session, site_id, scope))
        for r in backend.rules(session, state=RuleState.STUCK):
            if r.expression == f"site={site}" and r.dataset.startswith(f"{scope}:"):
                report.unreachable.append(f"{r.dataset}: {r.stuck_reason}")
    report.seconds = time.perf_counter() - started
    return report

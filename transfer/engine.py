"""The transfer engine (satdrp's conveyor): queued transfers → movers → verified replicas.

One :meth:`TransferEngine.run_once` is a bounded round:

1. the replication back-end advances its rules (new transfers are queued);
2. queued transfers whose back-off has passed are taken per link, at most ``max_active`` in flight per
   link, marked ACTIVE (the attempt is counted) and committed *before* any byte moves, so a crash
   leaves a visible ACTIVE row that the next engine re-queues (:meth:`reconcile`);
3. movers copy; synchronous ones report at once, asynchronous ones (FTS3) are polled on later rounds;
4. outcomes are recorded: DONE → the back-end marks the replica AVAILABLE (only a verified copy is
   DONE); a failure is retried with exponential back-off up to ``transfer.retries`` times (a missing
   source first switches to another healthy replica), then given up: the destination replica becomes
   BAD (checksum) or UNAVAILABLE with the reason recorded, and the rule goes STUCK saying why;
5. the back-end re-evaluates rule states.

Only one engine should run against a database at a time (the campaign driver's lock ensures it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from bookkeeping import transfers
from bookkeeping.database import Database
from bookkeeping.files import healthy_source
from bookkeeping.sites import site_ids
from bookkeeping.states import ReplicaState, TransferState
from bookkeeping.transfers import TransferWork, set_transfer_states
from common.errors import unreachable
from sites.catalogue import SiteCatalogue

from .movers.base import FailureKind, Mover, Outcome, TransferRequest, TransferResult
from .movers.registry import get_mover
from .replication.base import ReplicationBackend
from .storage import replica_url, temp_url

NO_SOURCE = "no verified copy left to copy from"  # how a copy that lost its last good source fails


@dataclass
class EngineReport:
    submitted: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    bytes_done: int = 0
    pending: int = 0  # queued or in flight after the round
    waiting_until: float | None = None  # earliest back-off end among queued transfers
    errors: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # link → why its service did not answer

    def add(self, other: EngineReport) -> None:
        self.submitted += other.submitted
        self.done += other.done
        self.retried += other.retried
        self.failed += other.failed
        self.bytes_done += other.bytes_done
        self.unreachable.update(other.unreachable)
        self.pending = other.pending
        self.waiting_until = other.waiting_until
        self.errors.extend(other.errors)


class TransferEngine:
    def __init__(
        self,
        db: Database,
        catalogue: SiteCatalogue,
        backend: ReplicationBackend,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.catalogue = catalogue
        self.backend = backend
        self.clock = clock
        self._movers: dict[tuple[str, str], Mover] = {}
        self._sites: dict[int, str] = {}

    # -- movers ------------------------------------------------------------------------------------
    def _mover(self, source: str, dest: str) -> Mover:
        link = self.catalogue.link(source, dest)
        key = (link.mover, repr(sorted(link.settings.items())))
        if key not in self._movers:
            self._movers[key] = get_mover(link.mover, link.settings)
        return self._movers[key]

    def close(self) -> None:
        for m in self._movers.values():
            m.close()
        self._movers.clear()

    def _max_active(self, source: str, dest: str) -> int:
        return self.catalogue.link(source, dest).max_active or self.catalogue.transfer.max_active

    def _site_names(self, session: Session) -> dict[int, str]:
        if not self._sites:
            self._sites = {v: k for k, v in site_ids(session).items()}
        return self._sites

    # -- rounds ------------------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Re-queue ACTIVE transfers of synchronous movers left by a process that stopped mid-copy,
        removing the temporary copies they leave (they never became replicas); returns how many."""
        with self.db.session() as session:
            names = self._site_names(session)
            rows = transfers.interrupted(session)
        for r in rows:
            dest = replica_url(self.catalogue.get(names[r.dest]).storage, r.name)
            try:
                self._mover(names[r.source], names[r.dest]).delete(temp_url(dest, r.id, r.attempts))
            except OSError:  # storage down: the next reconcile or `drp dr audit` removes it
                pass
        if rows:
            with self.db.session() as session:
                set_transfer_states(
                    session,
                    ((r.id, TransferState.QUEUED, "interrupted: the transfer engine stopped") for r in rows),
                )
        return len(rows)

    def run_once(self) -> EngineReport:
        report = EngineReport()
        with self.db.session() as session:
            self.backend.step(session)
            batches = self._take(session, report)
        for (source, dest), rows in batches.items():
            mover = self._mover(source, dest)
            requests = [
                TransferRequest(
                    r.id,
                    replica_url(self.catalogue.get(source).storage, r.name),
                    replica_url(self.catalogue.get(dest).storage, r.name),
                    r.size,
                    r.adler32,
                    r.attempts + 1,
                )
                for r in rows
            ]
            by_id = {r.id: r for r in rows}
            try:
                submitted = mover.submit(requests)
            except Exception as err:  # a mover must not lose the batch: every copy fails, retryably
                report.errors.append(f"{source}→{dest}: {err}")
                kind = FailureKind.UNREACHABLE if unreachable(err) else FailureKind.OTHER
                submitted_results = [
                    TransferResult(r.id, Outcome.FAILED, kind, f"mover error: {err}") for r in rows
                ]
                with self.db.session() as session:
                    self._record(session, submitted_results, by_id, report)
                continue
            results = [s.result for s in submitted if s.result is not None]
            external = {s.transfer_id: s.external_id for s in submitted if s.result is None and s.external_id}
            with self.db.session() as session:
                transfers.set_external_ids(session, external)
                self._record(session, results, by_id, report)
        self._poll_async(report)
        with self.db.session() as session:
            self.backend.step(session)
            report.pending, report.waiting_until = transfers.pending(session)
            report.pending = max(report.pending, self.backend.outstanding(session))
        return report

    def run(
        self,
        *,
        max_seconds: float | None = None,
        progress: Callable[[EngineReport], None] | None = None,
        poll_s: float = 1.0,
    ) -> EngineReport:
        """Rounds until nothing is queued or in flight (or ``max_seconds``); waits out back-offs."""
        total = EngineReport()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.reconcile()
        while True:
            rnd = self.run_once()
            total.add(rnd)
            if progress is not None:
                progress(total)
            if total.pending == 0 or (deadline is not None and time.monotonic() >= deadline):
                return total
            if rnd.unreachable and rnd.done == 0 and rnd.failed == 0:  # a service is away: the caller waits
                return total
            if rnd.submitted == 0 and rnd.done == 0 and rnd.failed == 0 and rnd.retried == 0:
                wait = poll_s
                if rnd.waiting_until is not None:
                    wait = max(0.0, min(rnd.waiting_until - self.clock(), 60.0))
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                time.sleep(max(wait, 0.01))

    # -- internals ---------------------------------------------------------------------------------
    def _take(self, session: Session, report: EngineReport) -> dict[tuple[str, str], list[TransferWork]]:
        names = self._site_names(session)
        self._reroute(session, names, report)
        in_flight: dict[tuple[int, int], int] = defaultdict(int, transfers.in_flight_per_link(session))
        batches: dict[tuple[str, str], list[TransferWork]] = defaultdict(list)
        for r in transfers.due(session, self.clock()):
            link = (r.source, r.dest)
            if in_flight[link] >= self._max_active(names[r.source], names[r.dest]):
                continue
            in_flight[link] += 1
            batches[(names[r.source], names[r.dest])].append(r)
        taken = [r.id for rs in batches.values() for r in rs]
        if taken:
            set_transfer_states(session, ((t, TransferState.ACTIVE, None) for t in taken))
            report.submitted += len(taken)
        return batches

    def _reroute(self, session: Session, names: dict[int, str], report: EngineReport) -> None:
        """A replica declared BAD or LOST is never a source: queued copies from one switch to another
        verified replica, or fail at once (no attempt) when none is left anywhere."""
        moves: list[tuple[int, str | None, float | None, int]] = []
        stranded: list[tuple[int, TransferState, str | None]] = []
        gave_up: list[tuple[int, int, ReplicaState, str]] = []
        for tid, fid, source, dest, state, declared in transfers.from_unhealthy_sources(session):
            other = healthy_source(session, fid, (source, dest))
            if other is not None:
                moves.append((tid, None, None, other))
                continue
            why = f"{NO_SOURCE}: the replica at {names[source]} is {state.name}"
            stranded.append((tid, TransferState.FAILED, why))
            # a repair leaves the replica as it was declared (and on disk); a first copy is UNAVAILABLE
            keep = declared if declared in (ReplicaState.BAD, ReplicaState.LOST) else ReplicaState.UNAVAILABLE
            gave_up.append((fid, dest, keep, why))
        if moves:
            transfers.set_next_attempts(session, moves)
        if stranded:
            set_transfer_states(session, stranded)
            self.backend.gave_up(session, gave_up)
            report.failed += len(stranded)

    def _record(
        self,
        session: Session,
        results: list[TransferResult],
        rows: dict[int, TransferWork],
        report: EngineReport,
    ) -> None:
        names = self._site_names(session)
        done: list[tuple[int, int]] = []
        states: list[tuple[int, TransferState, str | None]] = []
        extra: list[tuple[int, str | None, float | None, int]] = []
        gave_up: list[tuple[int, int, ReplicaState, str]] = []
        refunds: list[int] = []
        retries = self.catalogue.transfer.retries
        now = self.clock()
        for res in results:
            row = rows[res.transfer_id]
            attempts = row.attempts + 1
            if res.outcome is Outcome.DONE:
                done.append((row.file_id, row.dest))
                states.append((row.id, TransferState.DONE, None))
                extra.append((row.id, None, None, row.source))
                report.done += 1
                report.bytes_done += res.bytes
                continue
            kind = res.failure or FailureKind.OTHER
            message = f"{kind.value}: {res.message}"
            source = row.source
            if kind is FailureKind.UNREACHABLE:  # nothing was tried: back in the queue, the attempt refunded
                states.append((row.id, TransferState.QUEUED, message))
                extra.append((row.id, kind.value, now + self.catalogue.transfer.backoff_s, source))
                refunds.append(row.id)
                report.unreachable[f"{names[row.source]}→{names[row.dest]}"] = res.message
                continue
            if kind is FailureKind.SOURCE_MISSING:
                other = healthy_source(session, row.file_id, (row.source, row.dest))
                if other is None or attempts > retries:
                    states.append((row.id, TransferState.FAILED, message))
                    extra.append((row.id, kind.value, None, source))
                    gave_up.append(
                        (row.file_id, row.dest, ReplicaState.UNAVAILABLE, f"{message} ({names[source]})")
                    )
                    report.failed += 1
                    continue
                source, wait = other, 0.0
            elif kind is FailureKind.CANCELLED or attempts > retries:
                states.append((row.id, TransferState.FAILED, message))
                extra.append((row.id, kind.value, None, source))
                bad = ReplicaState.BAD if kind is FailureKind.CHECKSUM else ReplicaState.UNAVAILABLE
                gave_up.append((row.file_id, row.dest, bad, f"{message} (after {attempts} attempt(s))"))
                report.failed += 1
                continue
            else:
                base = self.catalogue.transfer.backoff_s
                wait = min(base * 2 ** (attempts - 1), self.catalogue.transfer.backoff_max_s)
            states.append((row.id, TransferState.QUEUED, message))
            extra.append((row.id, kind.value, now + wait, source))
            report.retried += 1
        if states:
            set_transfer_states(session, states)
            transfers.set_next_attempts(session, extra)
            transfers.refund_attempts(session, refunds)
        if done:
            self.backend.copied(session, done)
        if gave_up:
            self.backend.gave_up(session, gave_up)

    def _poll_async(self, report: EngineReport) -> None:
        with self.db.session() as session:
            names = self._site_names(session)
            raw = transfers.active_async(session)
        by_link: dict[tuple[str, str], list[TransferWork]] = defaultdict(list)
        for row in raw:
            by_link[(names[row.source], names[row.dest])].append(row)
        for (source, dest), rows in by_link.items():
            try:
                results = self._mover(source, dest).poll({r.id: r.external_id or "" for r in rows})
            except Exception as err:  # an unreachable service: try again next round
                report.errors.append(f"poll {source}→{dest}: {err}")
                if unreachable(err):
                    report.unreachable[f"{source}→{dest}"] = str(err)
                continue
            finished = [res for res in results if res.outcome is not Outcome.ACTIVE]
            if finished:
                with self.db.session() as session:
                    self._record(session, finished, {r.id: r for r in rows}, report)


def run_until_idle(
    db: Database,
    catalogue: SiteCatalogue,
    backend: ReplicationBackend,
    *,
    max_seconds: float | None = None,
    progress: Callable[[EngineReport], None] | None = None,
    poll_s: float = 1.0,
) -> EngineReport:
    """Run an engine until nothing is queued or in flight (or ``max_seconds``), then release its movers."""
    engine = TransferEngine(db, catalogue, backend)
    try:
        return engine.run(max_seconds=max_seconds, progress=progress, poll_s=poll_s)
    finally:
        engine.close()

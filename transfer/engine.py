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
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from bookkeeping.database import Database
from bookkeeping.sites import site_ids
from bookkeeping.states import ReplicaState, TransferState
from bookkeeping.transfers import set_transfer_states
from sites.catalogue import SiteCatalogue

from .movers.base import FailureKind, Mover, Outcome, TransferRequest, TransferResult
from .movers.registry import get_mover
from .replication.base import ReplicationBackend
from .storage import replica_url

_ACTIVE = (TransferState.QUEUED, TransferState.SUBMITTED, TransferState.ACTIVE)


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

    def add(self, other: EngineReport) -> None:
        self.submitted += other.submitted
        self.done += other.done
        self.retried += other.retried
        self.failed += other.failed
        self.bytes_done += other.bytes_done
        self.pending = other.pending
        self.waiting_until = other.waiting_until
        self.errors.extend(other.errors)


@dataclass(frozen=True)
class _Row:
    id: int
    file_id: int
    name: str
    size: int
    adler32: str
    source: int
    dest: int
    attempts: int
    mover: str
    external_id: str | None


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
        """Re-queue ACTIVE transfers of synchronous movers left by a process that stopped mid-copy
        (their temporary files never became replicas); returns how many."""
        with self.db.session() as session:
            ids = [
                t
                for (t,) in session.execute(
                    text("SELECT id FROM transfers WHERE state = :a AND external_id IS NULL"),
                    {"a": int(TransferState.ACTIVE)},
                )
            ]
            if ids:
                set_transfer_states(
                    session,
                    ((t, TransferState.QUEUED, "interrupted: the transfer engine stopped") for t in ids),
                )
        return len(ids)

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
                )
                for r in rows
            ]
            by_id = {r.id: r for r in rows}
            try:
                submitted = mover.submit(requests)
            except Exception as err:  # a mover must not lose the batch: every copy fails, retryably
                report.errors.append(f"{source}→{dest}: {err}")
                submitted_results = [
                    TransferResult(r.id, Outcome.FAILED, FailureKind.OTHER, f"mover error: {err}")
                    for r in rows
                ]
                with self.db.session() as session:
                    self._record(session, submitted_results, by_id, report)
                continue
            results = [s.result for s in submitted if s.result is not None]
            external = {s.transfer_id: s.external_id for s in submitted if s.result is None and s.external_id}
            with self.db.session() as session:
                if external:
                    session.execute(
                        text("UPDATE transfers SET external_id = :e WHERE id = :t"),
                        [{"e": e, "t": t} for t, e in external.items()],
                    )
                self._record(session, results, by_id, report)
        self._poll_async(report)
        with self.db.session() as session:
            self.backend.step(session)
            report.pending, report.waiting_until = self._pending(session)
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
            if rnd.submitted == 0 and rnd.done == 0 and rnd.failed == 0 and rnd.retried == 0:
                wait = poll_s
                if rnd.waiting_until is not None:
                    wait = max(0.0, min(rnd.waiting_until - self.clock(), 60.0))
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                time.sleep(max(wait, 0.01))

    # -- internals ---------------------------------------------------------------------------------
    def _take(self, session: Session, report: EngineReport) -> dict[tuple[str, str], list[_Row]]:
        names = self._site_names(session)
        in_flight: dict[tuple[int, int], int] = defaultdict(int)
        for src, dst, n in session.execute(
            text(
                "SELECT source_site_id, dest_site_id, count(*) FROM transfers WHERE state IN (:s, :a) "
                "GROUP BY source_site_id, dest_site_id"
            ),
            {"s": int(TransferState.SUBMITTED), "a": int(TransferState.ACTIVE)},
        ):
            in_flight[(src, dst)] = n
        rows = session.execute(
            text(
                "SELECT t.id, t.file_id, f.name, f.size, f.adler32, t.source_site_id, t.dest_site_id, "
                "t.attempts, t.mover, t.external_id FROM transfers t JOIN files f ON f.id = t.file_id "
                "WHERE t.state = :q AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= :now) "
                "ORDER BY t.id"
            ),
            {"q": int(TransferState.QUEUED), "now": self.clock()},
        )
        batches: dict[tuple[str, str], list[_Row]] = defaultdict(list)
        for raw in rows:
            r = _Row(*raw)
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

    def _record(
        self, session: Session, results: list[TransferResult], rows: dict[int, _Row], report: EngineReport
    ) -> None:
        names = self._site_names(session)
        done: list[tuple[int, int]] = []
        states: list[tuple[int, TransferState, str | None]] = []
        extra: list[dict[str, Any]] = []
        gave_up: list[tuple[int, int, ReplicaState, str]] = []
        retries = self.catalogue.transfer.retries
        now = self.clock()
        for res in results:
            row = rows[res.transfer_id]
            attempts = row.attempts + 1
            if res.outcome is Outcome.DONE:
                done.append((row.file_id, row.dest))
                states.append((row.id, TransferState.DONE, None))
                extra.append({"t": row.id, "f": None, "n": None, "s": row.source})
                report.done += 1
                report.bytes_done += res.bytes
                continue
            kind = res.failure or FailureKind.OTHER
            message = f"{kind.value}: {res.message}"
            source = row.source
            if kind is FailureKind.SOURCE_MISSING:
                other = self._other_source(session, row)
                if other is None or attempts > retries:
                    states.append((row.id, TransferState.FAILED, message))
                    extra.append({"t": row.id, "f": kind.value, "n": None, "s": source})
                    gave_up.append(
                        (row.file_id, row.dest, ReplicaState.UNAVAILABLE, f"{message} ({names[source]})")
                    )
                    report.failed += 1
                    continue
                source, wait = other, 0.0
            elif kind is FailureKind.CANCELLED or attempts > retries:
                states.append((row.id, TransferState.FAILED, message))
                extra.append({"t": row.id, "f": kind.value, "n": None, "s": source})
                bad = ReplicaState.BAD if kind is FailureKind.CHECKSUM else ReplicaState.UNAVAILABLE
                gave_up.append((row.file_id, row.dest, bad, f"{message} (after {attempts} attempt(s))"))
                report.failed += 1
                continue
            else:
                base = self.catalogue.transfer.backoff_s
                wait = min(base * 2 ** (attempts - 1), self.catalogue.transfer.backoff_max_s)
            states.append((row.id, TransferState.QUEUED, message))
            extra.append({"t": row.id, "f": kind.value, "n": now + wait, "s": source})
            report.retried += 1
        if states:
            set_transfer_states(session, states)
            session.execute(
                text(
                    "UPDATE transfers SET failure = :f, next_attempt_at = :n, source_site_id = :s, "
                    "external_id = NULL WHERE id = :t"
                ),
                extra,
            )
        if done:
            self.backend.copied(session, done)
        if gave_up:
            self.backend.gave_up(session, gave_up)

    def _other_source(self, session: Session, row: _Row) -> int | None:
        return session.execute(
            text(
                "SELECT min(site_id) FROM replicas WHERE file_id = :f AND state = :a "
                "AND site_id NOT IN (:src, :dst)"
            ),
            {"f": row.file_id, "a": int(ReplicaState.AVAILABLE), "src": row.source, "dst": row.dest},
        ).scalar()

    def _poll_async(self, report: EngineReport) -> None:
        with self.db.session() as session:
            names = self._site_names(session)
            raw = session.execute(
                text(
                    "SELECT t.id, t.file_id, f.name, f.size, f.adler32, t.source_site_id, t.dest_site_id, "
                    "t.attempts - 1, t.mover, t.external_id "
                    "FROM transfers t JOIN files f ON f.id = t.file_id "
                    "WHERE t.state = :a AND t.external_id IS NOT NULL"
                ),
                {"a": int(TransferState.ACTIVE)},
            ).all()
        by_link: dict[tuple[str, str], list[_Row]] = defaultdict(list)
        for r in raw:
            row = _Row(*r)
            by_link[(names[row.source], names[row.dest])].append(row)
        for (source, dest), rows in by_link.items():
            try:
                results = self._mover(source, dest).poll({r.id: r.external_id or "" for r in rows})
            except Exception as err:  # an unreachable service: try again next round
                report.errors.append(f"poll {source}→{dest}: {err}")
                continue
            finished = [res for res in results if res.outcome is not Outcome.ACTIVE]
            if finished:
                with self.db.session() as session:
                    self._record(session, finished, {r.id: r for r in rows}, report)

    def _pending(self, session: Session) -> tuple[int, float | None]:
        n, waiting = session.execute(
            text(
                "SELECT count(*), min(CASE WHEN state = :q THEN next_attempt_at END) FROM transfers "
                "WHERE state IN (:q, :s, :a)"
            ),
            {q: int(s) for q, s in zip(("q", "s", "a"), _ACTIVE, strict=True)},
        ).one()
        return int(n), waiting

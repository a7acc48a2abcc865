"""Transfers: queued in bulk, states set in bulk with exact ``transfer_counts``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from . import files
from .bulk import bump_counts, copy_rows, load_temp, transitions
from .events import log_event
from .sites import site_names
from .states import ReplicaState, TransferState

CONVEYOR = "rucio"  # the mover of transfers Rucio's conveyor makes: the engine never takes them


class TransferRow(NamedTuple):
    file_id: int
    source_site_id: int
    dest_site_id: int
    bytes: int
    rule_id: int | None = None
    mover: str = "local"
    request_id: str | None = None  # the Rucio request a conveyor transfer mirrors


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
                t.request_id,
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
            "request_id",
            "created_at",
        ),
        rows(),
        what="queueing transfers",
    )
    bump_counts(
        session,
        "transfer_counts",
        ("campaign_id", "source_site_id", "dest_site_id", "state"),
        ("n_transfers", "n_bytes"),
        {k: (counts[k], nbytes[k]) for k in counts},
    )
    return sum(counts.values())


def set_transfer_states(session: Session, updates: Iterable[tuple[int, TransferState, str | None]]) -> int:
    """Set transfer id → (state, error) in bulk; stamps start/finish times and keeps counts exact."""
    loaded = load_temp(
        session,
        "tmp_transfer_update",
        "transfer_id BIGINT PRIMARY KEY, state SMALLINT NOT NULL, error TEXT",
        ("transfer_id", "state", "error"),
        ((t, int(s), e) for t, s, e in updates),
    )
    trans = transitions(
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
    bump_counts(
        session,
        "transfer_counts",
        ("campaign_id", "source_site_id", "dest_site_id", "state"),
        ("n_transfers", "n_bytes"),
        {k: (deltas[k], sizes[k]) for k in deltas if deltas[k]},
    )
    session.execute(text("DROP TABLE tmp_transfer_update"))
    return loaded


# --- the engine's questions ------------------------------------------------------------------------
@dataclass(frozen=True)
class TransferWork:
    """A transfer as the engine handles it: ids, the file's name, size and checksum, the link."""

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


_WORK = (
    "SELECT t.id, t.file_id, f.name, f.size, f.adler32, t.source_site_id, t.dest_site_id, "
    "t.attempts{minus}, t.mover, t.external_id FROM transfers t JOIN files f ON f.id = t.file_id "
)
_IN_FLIGHT = (TransferState.SUBMITTED, TransferState.ACTIVE)
_PENDING = (TransferState.QUEUED, *_IN_FLIGHT)


Stranded = tuple[int, int, int, int, ReplicaState, ReplicaState | None]


def from_unhealthy_sources(session: Session) -> list[Stranded]:
    """(transfer id, file id, source site, dest site, source state, how the destination was last declared)
    of QUEUED transfers whose source replica is no longer AVAILABLE (declared BAD or LOST after the copy
    was queued, or gone); the last column is None for a first copy, BAD or LOST for a repair."""
    stmt = text(
        "SELECT t.id, t.file_id, t.source_site_id, t.dest_site_id, coalesce(r.state, :lost), "
        "(SELECT b.state FROM bad_replicas b WHERE b.file_id = t.file_id AND b.site_id = t.dest_site_id "
        " ORDER BY b.id DESC LIMIT 1) FROM transfers t "
        "LEFT JOIN replicas r ON r.file_id = t.file_id AND r.site_id = t.source_site_id "
        "WHERE t.state = :q AND t.mover <> :c AND (r.state IS NULL OR r.state <> :a)"
    )
    params = {
        "q": int(TransferState.QUEUED),
        "c": CONVEYOR,
        "a": int(ReplicaState.AVAILABLE),
        "lost": int(ReplicaState.LOST),
    }
    return [
        (int(t), int(f), int(s), int(d), ReplicaState(st), None if b is None else ReplicaState(b))
        for t, f, s, d, st, b in session.execute(stmt, params)
    ]


def attempts_in_flight(session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Transfer id → the number of its attempt in flight, for those of ``ids`` SUBMITTED or ACTIVE."""
    stmt = text("SELECT id, attempts FROM transfers WHERE id IN :ids AND state IN :f").bindparams(
        bindparam("ids", expanding=True), bindparam("f", expanding=True)
    )
    out: dict[int, int] = {}
    wanted = sorted(set(ids))
    for i in range(0, len(wanted), 500):
        params = {"ids": wanted[i : i + 500], "f": [int(s) for s in _IN_FLIGHT]}
        out.update((int(t), int(n)) for t, n in session.execute(stmt, params))
    return out


def interrupted(session: Session) -> list[TransferWork]:
    """ACTIVE transfers of synchronous movers (no external id): a process stopped in the middle;
    ``attempts`` is the interrupted attempt's number."""
    stmt = text(_WORK.format(minus="") + "WHERE t.state = :a AND t.external_id IS NULL AND t.mover <> :c")
    return [TransferWork(*r) for r in session.execute(stmt, {"a": int(TransferState.ACTIVE), "c": CONVEYOR})]


def in_flight_per_link(session: Session) -> dict[tuple[int, int], int]:
    stmt = text(
        "SELECT source_site_id, dest_site_id, count(*) FROM transfers WHERE state IN (:s, :a) "
        "AND mover <> :c GROUP BY source_site_id, dest_site_id"
    )
    rows = session.execute(stmt, {"s": int(_IN_FLIGHT[0]), "a": int(_IN_FLIGHT[1]), "c": CONVEYOR})
    return {(int(s), int(d)): int(n) for s, d, n in rows}


def due(session: Session, now: float) -> list[TransferWork]:
    """QUEUED transfers whose back-off has passed, oldest first (not those Rucio's conveyor makes)."""
    stmt = text(
        _WORK.format(minus="")
        + "WHERE t.state = :q AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= :now) "
        "AND t.mover <> :c ORDER BY t.id"
    )
    params = {"q": int(TransferState.QUEUED), "now": now, "c": CONVEYOR}
    return [TransferWork(*r) for r in session.execute(stmt, params)]


def active_async(session: Session) -> list[TransferWork]:
    """ACTIVE transfers an asynchronous mover (FTS3) holds; ``attempts`` is the one before this one."""
    stmt = text(
        _WORK.format(minus=" - 1") + "WHERE t.state = :a AND t.external_id IS NOT NULL AND t.mover <> :c"
    )
    return [TransferWork(*r) for r in session.execute(stmt, {"a": int(TransferState.ACTIVE), "c": CONVEYOR})]


def set_external_ids(session: Session, external: dict[int, str]) -> None:
    if external:
        session.execute(
            text("UPDATE transfers SET external_id = :e WHERE id = :t"),
            [{"e": e, "t": t} for t, e in external.items()],
        )


def set_next_attempts(session: Session, plans: Sequence[tuple[int, str | None, float | None, int]]) -> None:
    """(transfer id, failure kind, next attempt time, source site id): what the next attempt does;
    the external id of the finished attempt is cleared."""
    if plans:
        session.execute(
            text(
                "UPDATE transfers SET failure = :f, next_attempt_at = :n, source_site_id = :s, "
                "external_id = NULL WHERE id = :t"
            ),
            [{"t": t, "f": f, "n": n, "s": s} for t, f, n, s in plans],
        )


def refund_attempts(session: Session, ids: Sequence[int]) -> None:
    """Attempts that never reached the service (it was away) do not count against the retries."""
    if ids:
        session.execute(
            text("UPDATE transfers SET attempts = attempts - 1 WHERE id = :t AND attempts > 0"),
            [{"t": t} for t in ids],
        )


def pending(session: Session) -> tuple[int, float | None]:
    """Transfers queued or in flight, and the earliest back-off end among the queued ones."""
    n, waiting = session.execute(
        text(
            "SELECT count(*), min(CASE WHEN state = :q THEN next_attempt_at END) FROM transfers "
            "WHERE state IN (:q, :s, :a)"
        ),
        {q: int(s) for q, s in zip(("q", "s", "a"), _PENDING, strict=True)},
    ).one()
    return int(n), waiting


# --- operators' views and actions ----------------------------------------------------------------
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


def list_transfers(
    session: Session, *, state: TransferState | None = None, rule: int | None = None, limit: int = 1000
) -> list[TransferInfo]:
    names = site_names(session)
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
    clauses = ["t.state = :failed"]
    params: dict[str, Any] = {"failed": int(TransferState.FAILED), "a": int(ReplicaState.AVAILABLE)}
    if ids:
        clauses.append("t.id IN :ids")
        params["ids"] = [int(i) for i in ids]
    if rule is not None:
        clauses.append("t.rule_id = :rule")
        params["rule"] = rule
    stmt = text(
        "SELECT t.id, t.file_id, t.dest_site_id, "
        "(SELECT min(r.site_id) FROM replicas r WHERE r.file_id = t.file_id AND r.state = :a "
        " AND r.site_id <> t.dest_site_id) "
        f"FROM transfers t WHERE {' AND '.join(clauses)}"
    )
    if ids:
        stmt = stmt.bindparams(bindparam("ids", expanding=True))
    rows = session.execute(stmt, params).all()
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
    files.set_replica_states(session, ((f, d, ReplicaState.COPYING) for _, f, d, _ in usable))
    log_event(session, "transfers.retried", payload={"transfers": len(usable)})
    return len(usable)


def active_to(session: Session, site_id: int, rule_ids: Sequence[int]) -> list[tuple[int, int]]:
    """(transfer id, file id) of the rules' transfers to the site that are queued or in flight."""
    if not rule_ids:
        return []
    stmt = text(
        "SELECT id, file_id FROM transfers WHERE dest_site_id = :s AND state IN :active AND rule_id IN :r"
    ).bindparams(bindparam("active", expanding=True), bindparam("r", expanding=True))
    params = {"s": site_id, "active": [int(s) for s in _PENDING], "r": [int(r) for r in rule_ids]}
    return [(int(t), int(f)) for t, f in session.execute(stmt, params)]


# --- transfers Rucio's conveyor makes -------------------------------------------------------------------
@dataclass(frozen=True)
class RequestRow:
    """One Rucio request, as bookkeeping mirrors it (a transfer row per request, retries included)."""

    request_id: str
    campaign_id: int | None
    rule_id: int | None
    file_id: int
    source_site_id: int
    dest_site_id: int
    state: TransferState
    bytes: int
    attempts: int
    fts_job: str | None
    error: str | None
    started_at: float | None
    finished_at: float | None
    failure: str | None = None  # how it failed, in Rucio's words: failed, lost, no_sources, …


def _by_request(session: Session, request_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Request id → (transfer id, state) of the rows that mirror these requests."""
    stmt = text("SELECT request_id, id, state FROM transfers WHERE request_id IN :r").bindparams(
        bindparam("r", expanding=True)
    )
    out: dict[str, tuple[int, int]] = {}
    for i in range(0, len(request_ids), 500):
        rows = session.execute(stmt, {"r": list(request_ids[i : i + 500])})
        out.update({str(q): (int(t), int(st)) for q, t, st in rows})
    return out


def mirror_requests(session: Session, rows: Sequence[RequestRow]) -> int:
    """Insert the requests not seen yet and bring every row to the request's state, error, FTS job and
    times (counts kept exact); returns how many rows were added or changed."""
    known = _by_request(session, [r.request_id for r in rows])
    new = [r for r in rows if r.request_id not in known]
    by_campaign: dict[int | None, list[TransferRow]] = {}
    for r in new:
        row = TransferRow(
            r.file_id, r.source_site_id, r.dest_site_id, r.bytes, r.rule_id, CONVEYOR, r.request_id
        )
        by_campaign.setdefault(r.campaign_id, []).append(row)
    for campaign, batch in by_campaign.items():
        add_transfers(session, campaign, batch)
    known.update(_by_request(session, [r.request_id for r in new]))
    fresh = {r.request_id for r in new}
    moved = [r for r in rows if r.request_id in fresh or known[r.request_id][1] != int(r.state)]
    if not moved:
        return 0
    set_transfer_states(session, ((known[r.request_id][0], r.state, r.error) for r in moved))
    session.execute(
        text(
            "UPDATE transfers SET external_id = :j, attempts = :n, started_at = :s, finished_at = :f, "
            "failure = :k WHERE id = :t"
        ),
        [
            {
                "t": known[r.request_id][0],
                "j": r.fts_job,
                "n": r.attempts,
                "s": r.started_at,
                "f": r.finished_at,
                "k": r.failure,
            }
            for r in moved
        ],
    )
    return len(moved)


def last_errors(session: Session, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """(file id, destination site id) → the error of the latest failed transfer to it, where one failed."""
    stmt = text(
        "SELECT file_id, dest_site_id, error FROM transfers WHERE file_id IN :f AND state = :failed "
        "AND error IS NOT NULL ORDER BY id"
    ).bindparams(bindparam("f", expanding=True))
    wanted = set(pairs)
    files = sorted({f for f, _ in wanted})
    out: dict[tuple[int, int], str] = {}
    failed = int(TransferState.FAILED)
    for i in range(0, len(files), 500):
        for f, d, err in session.execute(stmt, {"f": files[i : i + 500], "failed": failed}):
            if (int(f), int(d)) in wanted:
                out[(int(f), int(d))] = str(err)  # ordered by id: the latest wins
    return out


def open_requests(session: Session) -> set[str]:
    """Ids of the Rucio requests whose mirrored transfer is still queued or in flight."""
    stmt = text("SELECT request_id FROM transfers WHERE mover = :c AND state IN :open").bindparams(
        bindparam("open", expanding=True)
    )
    rows = session.execute(stmt, {"c": CONVEYOR, "open": [int(s) for s in _PENDING]})
    return {str(r) for (r,) in rows if r is not None}

"""Conveyor mode of the ``rucio`` back-end: Rucio's own daemons move the bytes, satdrp only watches.

The judge-evaluator turns rules into requests, the conveyor submits them to FTS3, polls and finishes
them, and Rucio sets replica, lock and rule states itself. satdrp reads, never writes, what a transfer
does to Rucio: each rule's replicas and locks (mirrored into bookkeeping's replica states, from which
the rule is judged as the embedded back-end judges it, with Rucio's error when Rucio says STUCK) and
each request of the catalogue's links, live and archived (mirrored as one transfer row per request:
id, state, FTS job, bytes, times, error). No transfer row is invented and no replica state is pushed.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from bookkeeping import files as filedb
from bookkeeping import rules as ruledb
from bookkeeping.files import set_replica_states
from bookkeeping.states import ReplicaState, TransferState
from bookkeeping.transfers import RequestRow, last_errors, mirror_requests, open_requests

# Rucio's request states (rucio.db.sqla.constants.RequestState) as bookkeeping's transfer states
REQUEST_STATES = {
    "QUEUED": TransferState.QUEUED,
    "WAITING": TransferState.QUEUED,
    "PREPARING": TransferState.QUEUED,
    "SUSPEND": TransferState.QUEUED,
    "SUBMITTING": TransferState.SUBMITTED,
    "SUBMITTED": TransferState.ACTIVE,
    "DONE": TransferState.DONE,
    "FAILED": TransferState.FAILED,
    "LOST": TransferState.FAILED,
    "NO_SOURCES": TransferState.FAILED,
    "ONLY_TAPE_SOURCES": TransferState.FAILED,
    "SUBMISSION_FAILED": TransferState.FAILED,
    "MISMATCH_SCHEME": TransferState.FAILED,
}
ALL_REQUEST_STATES = "Q,G,S,D,F,L,N,O,A,M,U,W,P"  # their one-letter codes, for the list calls
REPLICA_STATES = {
    "AVAILABLE": ReplicaState.AVAILABLE,
    "COPYING": ReplicaState.COPYING,
    "BAD": ReplicaState.BAD,
    "SUSPICIOUS": ReplicaState.AVAILABLE,  # still served by Rucio until declared bad
    "LOST": ReplicaState.LOST,
    "UNAVAILABLE": ReplicaState.UNAVAILABLE,
    "TEMPORARY_UNAVAILABLE": ReplicaState.UNAVAILABLE,
}
HISTORY_PAGE = 500


def _epoch(value: Any) -> float | None:
    """Rucio's UTC timestamps ("2026-12-02 03:47:00") as epoch seconds."""
    if not value:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f"):
        try:
            return datetime.datetime.strptime(str(value), fmt).replace(tzinfo=datetime.UTC).timestamp()
        except ValueError:
            continue
    return None


def _failure(state: str) -> str | None:
    """The failure kind bookkeeping keeps for a request Rucio ended without a copy: its state's name."""
    return state.lower() if REQUEST_STATES.get(state) is TransferState.FAILED else None


def mirror_replicas(
    session: Session, client: Any, rule: ruledb.RuleRow, site_of: dict[str, int]
) -> dict[str, Any]:
    """Bookkeeping's replicas of the rule's files at its RSEs as Rucio has them; returns Rucio's rule.

    Each replica takes Rucio's replica state (AVAILABLE, COPYING, BAD, …); a lock STUCK (Rucio gave up
    the copy) makes it UNAVAILABLE; a lock whose replica Rucio has not created yet is COPYING. The rule
    is read first, so the replicas read after it are at least as new."""
    assert rule.external_id is not None
    info = dict(client.get_replication_rule(rule.external_id))
    scope, name = rule.dataset.split(":", 1)
    states: dict[tuple[str, str], ReplicaState] = {}
    for rep in client.list_replicas([{"scope": scope, "name": name}], all_states=True):
        for rse, st in (rep.get("states") or {}).items():
            if rse in site_of and st in REPLICA_STATES:
                states[(f"{rep['scope']}/{rep['name']}", rse)] = REPLICA_STATES[st]
    for lk in client.list_replica_locks(rule.external_id):
        key = (f"{lk['scope']}/{lk['name']}", lk["rse"])
        if lk["rse"] in site_of and (lk["state"] == "STUCK" or key not in states):
            states[key] = ReplicaState.UNAVAILABLE if lk["state"] == "STUCK" else ReplicaState.COPYING
    ids = filedb.file_ids(session, sorted({f for f, _ in states}))
    wanted = {(ids[f], site_of[rse]): st for (f, rse), st in states.items() if f in ids}
    # A lock Rucio gave up on becomes UNAVAILABLE once, with the failed request's error as its reason.
    # The requests were mirrored before the locks were read: a lock that went STUCK in between has no
    # error here yet and stays COPYING for this pass, unless the rule already carries Rucio's error.
    stuck = [k for k, st in wanted.items() if st is ReplicaState.UNAVAILABLE]
    now = filedb.replica_states(session, stuck)
    newly = [k for k in stuck if now.get(k) is not ReplicaState.UNAVAILABLE]
    errors = last_errors(session, newly)
    fallback = info.get("error") if info.get("state") == "STUCK" else None
    declared = [(f, s, errors.get((f, s)) or fallback) for f, s in newly]
    filedb.record_bad(
        session, [(f, s, ReplicaState.UNAVAILABLE, why) for f, s, why in declared if why], "rucio"
    )
    for f, s, why in declared:
        wanted[(f, s)] = ReplicaState.UNAVAILABLE if why else ReplicaState.COPYING
    done = {(f, s) for f, s, why in declared if why}
    set_replica_states(session, ((f, s, st) for (f, s), st in wanted.items() if (f, s) not in done))
    return info


class RequestMirror:
    """Reads the requests of the catalogue's links from Rucio (live ones, and the archived ones not yet
    seen) and mirrors them into bookkeeping's transfers."""

    def __init__(self, client: Any, site_of: dict[str, int]) -> None:
        self.client = client
        self.site_of = site_of  # RSE name → bookkeeping site id
        self.history_seen: dict[tuple[str, str], int] = {}  # link → archived requests read (paging)

    def requests(self) -> Iterable[dict[str, Any]]:
        """Live requests of every link, then the archived ones after those already read. Rucio's
        history query has no ORDER BY, so the offset is a hint: see :meth:`mirror`."""
        rses = sorted(self.site_of)
        for src in rses:
            for dst in rses:
                if src == dst:
                    continue
                yield from self.client.list_requests(src, dst, ALL_REQUEST_STATES)
                while True:
                    seen = self.history_seen.get((src, dst), 0)
                    page = list(
                        self.client.list_requests_history(src, dst, ALL_REQUEST_STATES, seen, HISTORY_PAGE)
                    )
                    self.history_seen[(src, dst)] = seen + len(page)
                    yield from page
                    if len(page) < HISTORY_PAGE:
                        break

    def mirror(self, session: Session) -> int:
        """One pass: every request of the catalogue's links whose rule bookkeeping knows."""
        latest: dict[str, dict[str, Any]] = {}  # a request can be live and archived in one pass: last wins
        for r in self.requests():
            if r.get("rule_id") and r.get("request_type", "TRANSFER") == "TRANSFER":
                latest[str(r["id"])] = r
        if not open_requests(session) <= set(latest):
            # A request the books hold open is neither live nor in the history pages read: it was
            # archived where the unordered history query had already been paged past. Read it all.
            self.history_seen.clear()
            for r in self.requests():
                if r.get("rule_id") and r.get("request_type", "TRANSFER") == "TRANSFER":
                    latest[str(r["id"])] = r
        requests = list(latest.values())
        rules = {r.external_id: r for r in ruledb.listed(session, external=True) if r.external_id is not None}
        mine = [q for q in requests if q["rule_id"] in rules]
        ids = filedb.file_ids(session, [f"{q['scope']}/{q['name']}" for q in mine])
        rows = [
            RequestRow(
                request_id=str(q["id"]),
                campaign_id=rules[q["rule_id"]].campaign_id,
                rule_id=rules[q["rule_id"]].id,
                file_id=ids[f"{q['scope']}/{q['name']}"],
                source_site_id=self.site_of[q["source_rse"]],
                dest_site_id=self.site_of[q["dest_rse"]],
                state=REQUEST_STATES.get(str(q["state"]), TransferState.QUEUED),
                bytes=int(q.get("bytes") or 0),
                attempts=int(q.get("retry_count") or 0) + 1,
                fts_job=q.get("external_id"),
                error=q.get("err_msg"),
                started_at=_epoch(q.get("started_at") or q.get("submitted_at")),
                finished_at=_epoch(q.get("transferred_at")),
                failure=_failure(str(q["state"])),
            )
            for q in mine
            if f"{q['scope']}/{q['name']}" in ids
            and q.get("source_rse") in self.site_of
            and q.get("dest_rse") in self.site_of
        ]
        return mirror_requests(session, rows)

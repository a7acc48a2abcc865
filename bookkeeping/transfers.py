"""Transfers: queued in bulk, states set in bulk with exact ``transfer_counts``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from .bulk import bump_counts, copy_rows, load_temp, transitions
from .states import TransferState


class TransferRow(NamedTuple):
    file_id: int
    source_site_id: int
    dest_site_id: int
    bytes: int
    rule_id: int | None = None
    mover: str = "local"


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

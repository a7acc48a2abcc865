"""What the Prometheus exporter reads: the exact aggregate tables (per scrape, cost independent of the
number of files and attempts) and, for the profiles a background thread refreshes, the attempt
aggregates and grouped scans of transfers with duration histograms computed in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from .states import DURATION_BUCKETS, TransferState


def _rows(session: Session, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in session.execute(text(sql), params or {})]


def campaign_names(session: Session) -> dict[int, str]:
    return {int(i): str(n) for i, n in _rows(session, "SELECT id, name FROM campaigns")}


def campaigns(session: Session) -> list[tuple[int, str, str, int, float]]:
    """(id, name, release, state, updated_at) of every campaign."""
    return _rows(session, "SELECT id, name, release, state, updated_at FROM campaigns")


def phase_failures(session: Session) -> list[tuple[int, int, int]]:
    """(campaign id, phase, failures) of every campaign phase."""
    return _rows(session, "SELECT campaign_id, phase, failures FROM campaign_phases")


def replicas_by_site(session: Session) -> list[tuple[int, int, int, int]]:
    """(site id, replica state, files, bytes) over all datasets."""
    sql = "SELECT site_id, state, sum(n_files), sum(n_bytes) FROM replica_counts GROUP BY site_id, state"
    return _rows(session, sql)


def transfers_by_link(session: Session) -> list[tuple[int, int, int, int, int, int]]:
    """(campaign id or 0, source site, dest site, state, transfers, bytes)."""
    sql = "SELECT campaign_id, source_site_id, dest_site_id, state, n_transfers, n_bytes FROM transfer_counts"
    return _rows(session, sql)


def jobs_by_step(session: Session) -> list[tuple[int, int, str, int, int]]:
    """(campaign id, site id, step, state, jobs)."""
    return _rows(session, "SELECT campaign_id, site_id, step, state, n_jobs FROM job_counts")


def rule_states(session: Session) -> dict[int, int]:
    return {int(st): int(n) for st, n in _rows(session, "SELECT state, count(*) FROM rules GROUP BY state")}


def bad_replicas(session: Session) -> list[tuple[int, str, int]]:
    """(site id, who declared, replicas) of the declared bad or lost replicas."""
    sql = "SELECT site_id, source, count(*) FROM bad_replicas GROUP BY site_id, source"
    return _rows(session, sql)


def validation_tracts(session: Session) -> list[tuple[int, int, str, int, int]]:
    """(campaign id, tract, sites, checks, failed checks) per compared tract."""
    sql = (
        "SELECT campaign_id, tract, sites, count(*), coalesce(sum(CASE WHEN passed THEN 0 ELSE 1 END), 0) "
        "FROM validations GROUP BY campaign_id, tract, sites"
    )
    return _rows(session, sql)


def _histogram(column: str, buckets: Sequence[float]) -> str:
    """``sum(CASE …)`` per bucket bound, each a bound parameter (no number is pasted into the SQL)."""
    return ", ".join(f"sum(CASE WHEN {column} <= :b{i} THEN 1 ELSE 0 END)" for i in range(len(buckets)))


def attempt_profiles(session: Session) -> list[tuple[Any, ...]]:
    """Per (campaign, site, step): attempts, succeeded, CPU s, read and written bytes, largest peak
    RSS, total wall s, then the cumulative count of attempts at or under each bound of
    :data:`DURATION_BUCKETS`. From the attempt aggregates: no attempt is read."""
    counts = _rows(
        session,
        "SELECT campaign_id, site_id, step, n_attempts, n_succeeded, cpu_s, read_bytes, write_bytes, "
        "coalesce(rss_max, 0), wall_s FROM attempt_counts",
    )
    per_bucket: dict[tuple[int, int, str], list[int]] = {}
    for cid, site, step, bucket, n in _rows(
        session, "SELECT campaign_id, site_id, step, bucket, n_attempts FROM attempt_durations"
    ):
        per_bucket.setdefault((cid, site, step), [0] * (len(DURATION_BUCKETS) + 1))[bucket] += int(n)
    out = []
    for row in counts:
        hist = per_bucket.get((row[0], row[1], row[2]), [0] * (len(DURATION_BUCKETS) + 1))
        out.append((*row, *accumulate(hist[: len(DURATION_BUCKETS)])))
    return out


def transfer_durations(session: Session, buckets: Sequence[float]) -> list[tuple[Any, ...]]:
    """Per (campaign or 0, source, dest) of DONE transfers: count, total seconds, cumulative buckets."""
    sql = (
        "SELECT coalesce(campaign_id, 0), source_site_id, dest_site_id, count(*), "
        "coalesce(sum(finished_at - started_at), 0), "
        + _histogram("finished_at - started_at", buckets)
        + " FROM transfers WHERE state = :done AND started_at IS NOT NULL AND finished_at IS NOT NULL "
        "GROUP BY coalesce(campaign_id, 0), source_site_id, dest_site_id"
    )
    return _rows(
        session, sql, {"done": int(TransferState.DONE), **{f"b{i}": b for i, b in enumerate(buckets)}}
    )


def transfers_by_mover(session: Session) -> list[tuple[int, int, int, str, int, str, int]]:
    """Per (campaign or 0, source, dest, mover, state, failure kind or ""): transfers. Scans the
    transfers table (the profiles thread calls it): Rucio's requests are the rows of mover "rucio"."""
    return _rows(
        session,
        "SELECT coalesce(campaign_id, 0), source_site_id, dest_site_id, mover, state, "
        "coalesce(failure, ''), count(*) FROM transfers "
        "GROUP BY coalesce(campaign_id, 0), source_site_id, dest_site_id, mover, state, "
        "coalesce(failure, '')",
    )


def campaign_transfers(session: Session, campaign_id: int) -> dict[TransferState, int]:
    """A campaign's transfers by state, from the exact aggregate (cheap at any size)."""
    rows = _rows(
        session,
        "SELECT state, sum(n_transfers) FROM transfer_counts WHERE campaign_id = :c GROUP BY state",
        {"c": campaign_id},
    )
    return {TransferState(st): int(n) for st, n in rows if n}

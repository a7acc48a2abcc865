"""Prometheus metrics of satdrp, read from bookkeeping at scrape time (``drp metrics serve``) or pushed
after each cron tick (``drp campaign tick --push-gateway`` / ``--textfile``).

Two kinds of figures:

- **Aggregates** (campaign state and last tick, files and bytes per site and replica state, transfers
  per link and state, jobs per site, step and state, rules, bad replicas, validation results): read
  on every scrape from the exact aggregate tables, so a scrape costs the same for a thousand files
  or 25 million.
- **Profiles** (attempt CPU, I/O, peak RSS and duration histograms per step; transfer duration
  histograms per link): these need the attempts and transfers tables, so a background thread
  recomputes them every ``refresh_s`` and scrapes serve the cached values
  (``drp_exporter_profile_age_seconds`` says how old they are).

Names follow Prometheus conventions: ``drp_`` prefix, ``_total`` for counters, base units
(``_seconds``, ``_bytes``), histograms for durations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.states import CampaignState, JobState, ReplicaState, RuleState, TransferState

DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


@dataclass
class _Profiles:
    at: float = 0.0
    rows: list[Metric] = field(default_factory=list)


def _hist_sql(column: str) -> str:
    return ", ".join(f"sum(CASE WHEN {column} <= {b} THEN 1 ELSE 0 END)" for b in DURATION_BUCKETS)


class BookkeepingCollector(Collector):
    """Reads metrics from bookkeeping on each scrape (aggregates) and from a refreshed cache (profiles)."""

    def __init__(self, db: Database, *, profiles: bool = True, campaign: str | None = None) -> None:
        self.db = db
        self.campaign = campaign  # restrict to one campaign (the pushed metrics of a tick)
        self.with_profiles = profiles
        self._profiles = _Profiles()
        self._lock = threading.Lock()

    # -- aggregates --------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        with self.db.session() as s:
            sites = _names(s, "sites")
            camps = s.execute(text("SELECT id, name, release, state, updated_at FROM campaigns")).all()
            if self.campaign is not None:
                camps = [c for c in camps if c[1] == self.campaign]
            names = {cid: name for cid, name, *_ in camps}
            info = GaugeMetricFamily(
                "drp_campaign_info",
                "Campaigns (1 each), by release and state",
                labels=["campaign", "release", "state"],
            )
            state = GaugeMetricFamily(
                "drp_campaign_state",
                "Campaign state as its number (see drp_campaign_info)",
                labels=["campaign"],
            )
            done = GaugeMetricFamily("drp_campaign_done", "1 when the campaign is DONE", labels=["campaign"])
            failed = GaugeMetricFamily(
                "drp_campaign_failed", "1 when the campaign is FAILED", labels=["campaign"]
            )
            last = GaugeMetricFamily(
                "drp_campaign_last_tick_timestamp_seconds",
                "When a tick last advanced or checked the campaign",
                labels=["campaign"],
            )
            for _cid, name, release, st, updated in camps:
                cs = CampaignState(st)
                info.add_metric([name, release, cs.name], 1)
                state.add_metric([name], int(cs))
                done.add_metric([name], int(cs is CampaignState.DONE))
                failed.add_metric([name], int(cs is CampaignState.FAILED))
                last.add_metric([name], float(updated))
            yield from (info, state, done, failed, last)

            phase_fail = CounterMetricFamily(
                "drp_campaign_phase_failures", "Times a phase failed", labels=["campaign", "phase"]
            )
            for cid, phase, n in s.execute(text("SELECT campaign_id, phase, failures FROM campaign_phases")):
                if cid in names:
                    phase_fail.add_metric([names[cid], CampaignState(phase).name], n)
            yield phase_fail

            files = GaugeMetricFamily(
                "drp_replica_files", "Files per site and replica state", labels=["site", "state"]
            )
            nbytes = GaugeMetricFamily(
                "drp_replica_bytes", "Bytes per site and replica state", labels=["site", "state"]
            )
            for site, st, n, b in s.execute(
                text(
                    "SELECT site_id, state, sum(n_files), sum(n_bytes) FROM replica_counts "
                    "GROUP BY site_id, state"
                )
            ):
                labels = [sites[site], ReplicaState(st).name]
                files.add_metric(labels, float(n))
                nbytes.add_metric(labels, float(b))
            yield from (files, nbytes)

            xfer = GaugeMetricFamily(
                "drp_transfers",
                "Transfers per link and state",
                labels=["campaign", "source", "dest", "state"],
            )
            xbytes = GaugeMetricFamily(
                "drp_transfer_state_bytes",
                "Bytes of the transfers in each state",
                labels=["campaign", "source", "dest", "state"],
            )
            completed = CounterMetricFamily(
                "drp_transfers_completed",
                "Transfers verified and done",
                labels=["campaign", "source", "dest"],
            )
            moved = CounterMetricFamily(
                "drp_transfer_bytes", "Bytes moved by done transfers", labels=["campaign", "source", "dest"]
            )
            for cid, src, dst, st, n, b in s.execute(
                text(
                    "SELECT campaign_id, source_site_id, dest_site_id, state, n_transfers, n_bytes "
                    "FROM transfer_counts"
                )
            ):
                if self.campaign is not None and cid not in names:
                    continue
                camp = names.get(cid, "") if cid else ""
                labels = [camp, sites[src], sites[dst]]
                xfer.add_metric([*labels, TransferState(st).name], float(n))
                xbytes.add_metric([*labels, TransferState(st).name], float(b))
                if st == TransferState.DONE:
                    completed.add_metric(labels, float(n))
                    moved.add_metric(labels, float(b))
            yield from (xfer, xbytes, completed, moved)

            jobs = GaugeMetricFamily(
                "drp_jobs", "Jobs per site, step and state", labels=["campaign", "site", "step", "state"]
            )
            for cid, site, step, st, n in s.execute(
                text("SELECT campaign_id, site_id, step, state, n_jobs FROM job_counts")
            ):
                if cid in names:
                    jobs.add_metric([names[cid], sites[site], step, JobState(st).name], float(n))
            yield jobs

            rules = GaugeMetricFamily("drp_rules", "Replication rules per state", labels=["state"])
            counts = {
                int(st): int(n)
                for st, n in s.execute(text("SELECT state, count(*) FROM rules GROUP BY state"))
            }
            for rs in RuleState:
                rules.add_metric([rs.name], float(counts.get(int(rs), 0)))
            yield rules

            bad = CounterMetricFamily(
                "drp_bad_replicas_declared", "Replicas declared BAD or LOST", labels=["site", "source"]
            )
            for site, source, n in s.execute(
                text("SELECT site_id, source, count(*) FROM bad_replicas GROUP BY site_id, source")
            ):
                bad.add_metric([sites[site], source], float(n))
            yield bad

            checks = GaugeMetricFamily(
                "drp_validation_checks",
                "Overlap validation checks per tract and result",
                labels=["campaign", "tract", "sites", "result"],
            )
            tract_ok = GaugeMetricFamily(
                "drp_validation_tract_passed",
                "1 if every check of the tract passed, else 0",
                labels=["campaign", "tract", "sites"],
            )
            for cid, tract, pair, n, nfail in s.execute(
                text(
                    "SELECT campaign_id, tract, sites, count(*), sum(CASE WHEN passed THEN 0 ELSE 1 END) "
                    "FROM validations GROUP BY campaign_id, tract, sites"
                )
            ):
                if cid not in names:
                    continue
                labels = [names[cid], str(tract), pair]
                checks.add_metric([*labels, "passed"], float(n - (nfail or 0)))
                checks.add_metric([*labels, "failed"], float(nfail or 0))
                tract_ok.add_metric(labels, float(not nfail))
            yield from (checks, tract_ok)
        if self.with_profiles:
            with self._lock:
                cached = list(self._profiles.rows)
                at = self._profiles.at
            yield from cached
            age = GaugeMetricFamily(
                "drp_exporter_profile_age_seconds",
                "Age of the cached job and transfer profiles (-1: not yet computed)",
            )
            age.add_metric([], time.time() - at if at else -1.0)
            yield age
        took = GaugeMetricFamily("drp_exporter_collect_seconds", "Time this collection took in bookkeeping")
        took.add_metric([], time.perf_counter() - started)
        yield took

    # -- profiles ----------------------------------------------------------------------------------
    def refresh_profiles(self) -> None:
        """Recompute the attempt and transfer profiles (called by the exporter's background thread)."""
        rows: list[Metric] = []
        with self.db.session() as s:
            sites = _names(s, "sites")
            camps = _names(s, "campaigns")
            labels = ["campaign", "site", "step"]
            cpu = CounterMetricFamily(
                "drp_attempt_cpu_seconds", "CPU (user+sys) of job attempts", labels=labels
            )
            rd = CounterMetricFamily(
                "drp_attempt_read_bytes", "Bytes job attempts read from storage", labels=labels
            )
            wr = CounterMetricFamily(
                "drp_attempt_write_bytes", "Bytes job attempts wrote to storage", labels=labels
            )
            att = CounterMetricFamily("drp_attempts", "Job attempts by result", labels=[*labels, "result"])
            rss = GaugeMetricFamily(
                "drp_attempt_peak_rss_max_bytes", "Largest peak RSS of an attempt", labels=labels
            )
            dur = HistogramMetricFamily(
                "drp_attempt_duration_seconds", "Wall time of job attempts", labels=labels
            )
            for row in s.execute(
                text(
                    "SELECT j.campaign_id, j.site_id, j.step, count(*), "
                    "sum(CASE WHEN a.exit_code = 0 THEN 1 ELSE 0 END), "
                    "coalesce(sum(a.cpu_user + a.cpu_sys), 0), coalesce(sum(a.read_bytes), 0), "
                    "coalesce(sum(a.write_bytes), 0), coalesce(max(a.peak_rss), 0), "
                    "coalesce(sum(a.ended_at - a.started_at), 0), "
                    + _hist_sql("a.ended_at - a.started_at")
                    + " FROM attempts a JOIN jobs j ON j.id = a.job_id "
                    "GROUP BY j.campaign_id, j.site_id, j.step"
                )
            ):
                cid, site, step, n, ok, c, r, w, peak, total, *buckets = row
                lab = [camps.get(cid, ""), sites[site], step]
                cpu.add_metric(lab, float(c))
                rd.add_metric(lab, float(r))
                wr.add_metric(lab, float(w))
                att.add_metric([*lab, "succeeded"], float(ok))
                att.add_metric([*lab, "failed"], float(n - ok))
                rss.add_metric(lab, float(peak))
                dur.add_metric(lab, _buckets(buckets, n), float(total))
            rows += [cpu, rd, wr, att, rss, dur]
            tdur = HistogramMetricFamily(
                "drp_transfer_duration_seconds",
                "Wall time of done transfers",
                labels=["campaign", "source", "dest"],
            )
            for row in s.execute(
                text(
                    "SELECT coalesce(campaign_id, 0), source_site_id, dest_site_id, count(*), "
                    "coalesce(sum(finished_at - started_at), 0), "
                    + _hist_sql("finished_at - started_at")
                    + " FROM transfers WHERE state = :done "
                    "AND started_at IS NOT NULL AND finished_at IS NOT NULL "
                    "GROUP BY coalesce(campaign_id, 0), source_site_id, dest_site_id"
                ),
                {"done": int(TransferState.DONE)},
            ):
                cid, src, dst, n, total, *buckets = row
                tdur.add_metric(
                    [camps.get(cid, ""), sites[src], sites[dst]], _buckets(buckets, n), float(total)
                )
            rows.append(tdur)
        with self._lock:
            self._profiles = _Profiles(time.time(), rows)


def _names(session: Any, table: str) -> dict[int, str]:
    return {int(i): str(n) for i, n in session.execute(text(f"SELECT id, name FROM {table}"))}


def _buckets(counts: Iterable[Any], n: int) -> list[tuple[str, float]]:
    out = [(f"{b:g}", float(c or 0)) for b, c in zip(DURATION_BUCKETS, counts, strict=True)]
    out.append(("+Inf", float(n)))
    return out

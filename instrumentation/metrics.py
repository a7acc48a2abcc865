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
from sqlalchemy.orm import Session

from bookkeeping import aggregates
from bookkeeping.database import Database
from bookkeeping.sites import site_names
from bookkeeping.states import (
    DURATION_BUCKETS,
    CampaignState,
    JobState,
    ReplicaState,
    RuleState,
    TransferState,
)


@dataclass
class _Profiles:
    at: float = 0.0
    rows: list[Metric] = field(default_factory=list)


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
            sites = site_names(s)
            camps = [c for c in aggregates.campaigns(s) if self.campaign is None or c[1] == self.campaign]
            names = {cid: name for cid, name, *_ in camps}
            yield from _campaign_families(camps)
            yield _phase_failures(aggregates.phase_failures(s), names)
            yield from _replica_families(aggregates.replicas_by_site(s), sites)
            yield from self._transfer_families(aggregates.transfers_by_link(s), names, sites)
            yield _job_family(aggregates.jobs_by_step(s), names, sites)
            yield _rule_family(aggregates.rule_states(s))
            yield _bad_family(aggregates.bad_replicas(s), sites)
            yield from _validation_families(aggregates.validation_tracts(s), names)
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

    def _transfer_families(
        self,
        rows: Iterable[tuple[int, int, int, int, int, int]],
        names: dict[int, str],
        sites: dict[int, str],
    ) -> Iterator[Metric]:
        labels = ["campaign", "source", "dest"]
        xfer = GaugeMetricFamily("drp_transfers", "Transfers per link and state", labels=[*labels, "state"])
        xbytes = GaugeMetricFamily(
            "drp_transfer_state_bytes", "Bytes of the transfers in each state", labels=[*labels, "state"]
        )
        completed = CounterMetricFamily(
            "drp_transfers_completed", "Transfers verified and done", labels=labels
        )
        moved = CounterMetricFamily("drp_transfer_bytes", "Bytes moved by done transfers", labels=labels)
        for cid, src, dst, st, n, b in rows:
            if self.campaign is not None and cid not in names:
                continue
            link = [names.get(cid, "") if cid else "", sites[src], sites[dst]]
            xfer.add_metric([*link, TransferState(st).name], float(n))
            xbytes.add_metric([*link, TransferState(st).name], float(b))
            if st == TransferState.DONE:
                completed.add_metric(link, float(n))
                moved.add_metric(link, float(b))
        yield from (xfer, xbytes, completed, moved)

    # -- profiles ----------------------------------------------------------------------------------
    def refresh_profiles(self) -> None:
        """Recompute the attempt and transfer profiles (called by the exporter's background thread)."""
        with self.db.session() as s:
            rows = [*_attempt_families(s), _transfer_durations(s), *_transfer_movers(s)]
        with self._lock:
            self._profiles = _Profiles(time.time(), rows)


def _campaign_families(camps: list[tuple[int, str, str, int, float]]) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "drp_campaign_info",
        "Campaigns (1 each), by release and state",
        labels=["campaign", "release", "state"],
    )
    state = GaugeMetricFamily(
        "drp_campaign_state", "Campaign state as its number (see drp_campaign_info)", labels=["campaign"]
    )
    done = GaugeMetricFamily("drp_campaign_done", "1 when the campaign is DONE", labels=["campaign"])
    failed = GaugeMetricFamily("drp_campaign_failed", "1 when the campaign is FAILED", labels=["campaign"])
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


def _phase_failures(rows: Iterable[tuple[int, int, int]], names: dict[int, str]) -> Metric:
    fam = CounterMetricFamily(
        "drp_campaign_phase_failures", "Times a phase failed", labels=["campaign", "phase"]
    )
    for cid, phase, n in rows:
        if cid in names:
            fam.add_metric([names[cid], CampaignState(phase).name], n)
    return fam


def _replica_families(rows: Iterable[tuple[int, int, int, int]], sites: dict[int, str]) -> Iterator[Metric]:
    files = GaugeMetricFamily(
        "drp_replica_files", "Files per site and replica state", labels=["site", "state"]
    )
    nbytes = GaugeMetricFamily(
        "drp_replica_bytes", "Bytes per site and replica state", labels=["site", "state"]
    )
    for site, st, n, b in rows:
        labels = [sites[site], ReplicaState(st).name]
        files.add_metric(labels, float(n))
        nbytes.add_metric(labels, float(b))
    yield from (files, nbytes)


def _job_family(
    rows: Iterable[tuple[int, int, str, int, int]], names: dict[int, str], sites: dict[int, str]
) -> Metric:
    jobs = GaugeMetricFamily(
        "drp_jobs", "Jobs per site, step and state", labels=["campaign", "site", "step", "state"]
    )
    for cid, site, step, st, n in rows:
        if cid in names:
            jobs.add_metric([names[cid], sites[site], step, JobState(st).name], float(n))
    return jobs


def _rule_family(counts: dict[int, int]) -> Metric:
    rules = GaugeMetricFamily("drp_rules", "Replication rules per state", labels=["state"])
    for rs in RuleState:
        rules.add_metric([rs.name], float(counts.get(int(rs), 0)))
    return rules


def _bad_family(rows: Iterable[tuple[int, str, int]], sites: dict[int, str]) -> Metric:
    bad = CounterMetricFamily(
        "drp_bad_replicas_declared", "Replicas declared BAD or LOST", labels=["site", "source"]
    )
    for site, source, n in rows:
        bad.add_metric([sites[site], source], float(n))
    return bad


def _validation_families(
    rows: Iterable[tuple[int, int, str, int, int]], names: dict[int, str]
) -> Iterator[Metric]:
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
    for cid, tract, pair, n, nfail in rows:
        if cid not in names:
            continue
        labels = [names[cid], str(tract), pair]
        checks.add_metric([*labels, "passed"], float(n - (nfail or 0)))
        checks.add_metric([*labels, "failed"], float(nfail or 0))
        tract_ok.add_metric(labels, float(not nfail))
    yield from (checks, tract_ok)


def _attempt_families(s: Session) -> list[Metric]:
    sites, camps = site_names(s), aggregates.campaign_names(s)
    labels = ["campaign", "site", "step"]
    cpu = CounterMetricFamily("drp_attempt_cpu_seconds", "CPU (user+sys) of job attempts", labels=labels)
    rd = CounterMetricFamily("drp_attempt_read_bytes", "Bytes job attempts read from storage", labels=labels)
    wr = CounterMetricFamily("drp_attempt_write_bytes", "Bytes job attempts wrote to storage", labels=labels)
    att = CounterMetricFamily("drp_attempts", "Job attempts by result", labels=[*labels, "result"])
    rss = GaugeMetricFamily("drp_attempt_peak_rss_max_bytes", "Largest peak RSS of an attempt", labels=labels)
    dur = HistogramMetricFamily("drp_attempt_duration_seconds", "Wall time of job attempts", labels=labels)
    for row in aggregates.attempt_profiles(s):
        cid, site, step, n, ok, c, r, w, peak, total, *buckets = row
        lab = [camps.get(cid, ""), sites[site], step]
        cpu.add_metric(lab, float(c))
        rd.add_metric(lab, float(r))
        wr.add_metric(lab, float(w))
        att.add_metric([*lab, "succeeded"], float(ok))
        att.add_metric([*lab, "failed"], float(n - ok))
        rss.add_metric(lab, float(peak))
        dur.add_metric(lab, _buckets(buckets, n), float(total))
    return [cpu, rd, wr, att, rss, dur]


def _transfer_durations(s: Session) -> Metric:
    sites, camps = site_names(s), aggregates.campaign_names(s)
    tdur = HistogramMetricFamily(
        "drp_transfer_duration_seconds", "Wall time of done transfers", labels=["campaign", "source", "dest"]
    )
    for row in aggregates.transfer_durations(s, DURATION_BUCKETS):
        cid, src, dst, n, total, *buckets = row
        tdur.add_metric([camps.get(cid, ""), sites[src], sites[dst]], _buckets(buckets, n), float(total))
    return tdur


def _transfer_movers(s: Session) -> list[Metric]:
    """Transfers per link, mover and state (Rucio's requests: mover "rucio"), and the given-up ones
    by failure kind (the engine's checksum/network/…, Rucio's failed/lost/no_sources/…)."""
    sites, camps = site_names(s), aggregates.campaign_names(s)
    labels = ["campaign", "source", "dest", "mover"]
    by_state = GaugeMetricFamily(
        "drp_transfer_requests", "Transfers per link, mover and state", labels=[*labels, "state"]
    )
    failed = GaugeMetricFamily(
        "drp_transfer_failures",
        "Given-up transfers per link, mover and failure kind",
        labels=[*labels, "failure"],
    )
    states: dict[tuple[str, ...], float] = {}
    for cid, src, dst, mover, st, failure, n in aggregates.transfers_by_mover(s):
        link = [camps.get(cid, ""), sites[src], sites[dst], str(mover)]
        key = (*link, TransferState(st).name)
        states[key] = states.get(key, 0.0) + float(n)
        if st == TransferState.FAILED:
            failed.add_metric([*link, failure or "unknown"], float(n))
    for key, count in states.items():
        by_state.add_metric(list(key), count)
    return [by_state, failed]


def _buckets(counts: Iterable[Any], n: int) -> list[tuple[str, float]]:
    out = [(f"{b:g}", float(c or 0)) for b, c in zip(DURATION_BUCKETS, counts, strict=True)]
    out.append(("+Inf", float(n)))
    return out

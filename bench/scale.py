"""Status and scrape cost against the number of attempts (issue 22): O(1) from the aggregate tables.

One bookkeeping database (SQLite by default, ``--db postgresql`` for a throw-away PostgreSQL server)
grows from 10,000 to ``--max-attempts`` job attempts (default 10,000,000; 10 attempts per job over
5 steps and 2 sites). At each size it times, median of ``--repeat``:

- ``campaign status``: :func:`bookkeeping.queries.campaign_status` (what ``drp campaign status`` runs);
- a scrape: one ``collect()`` of the exporter's collector (aggregates, cached profiles);
- a profile refresh: what the exporter's background thread does between scrapes.

Prints the milliseconds per size and ``slope=`` of log(time) against log(attempts) between the
smallest and the largest size: 0 is O(1), 1 is linear. Targets: status and scrape < 10 ms at
10,000,000 attempts, slopes near 0.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.bookkeeping import setup_sites
from bookkeeping.campaigns import create_campaign
from bookkeeping.database import Database
from bookkeeping.jobs import AttemptRow, add_attempts, add_jobs
from bookkeeping.pgserver import PgServer, find_pg_bindir
from bookkeeping.queries import campaign_status
from bookkeeping.states import JobState
from instrumentation.metrics import BookkeepingCollector

STEPS = ("calibrate", "warp", "coadd", "measure", "merge")
PER_JOB = 10
BATCH = 500_000


def _grow(db: Database, camp: int, sites: list[int], have: int, want: int) -> None:
    """Add jobs with PER_JOB attempts each until the database holds ``want`` attempts."""
    start_job = have // PER_JOB
    n_jobs = (want - have) // PER_JOB
    with db.session() as s:
        add_jobs(
            s,
            camp,
            (
                (sites[i % len(sites)], STEPS[i % len(STEPS)], f'{{"n":{i}}}', JobState.SUCCEEDED)
                for i in range(start_job, start_job + n_jobs)
            ),
        )
        first = s.execute(text("SELECT max(id) FROM jobs")).scalar_one() - n_jobs + 1
    now = time.time()
    for lo in range(0, n_jobs, BATCH // PER_JOB):
        hi = min(n_jobs, lo + BATCH // PER_JOB)
        with db.session() as s:
            add_attempts(
                s,
                (
                    AttemptRow(
                        first + j, k + 1, 0 if k % 3 else 1, None, now - 30 - j % 600, now - j % 7, 4.0, 0.5
                    )
                    for j in range(lo, hi)
                    for k in range(PER_JOB)
                ),
            )


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _slope(points: list[tuple[int, float]]) -> float:
    (n0, t0), (n1, t1) = points[0], points[-1]
    return math.log(t1 / t0) / math.log(n1 / n0)


def run(db: Database, sizes: list[int], repeat: int) -> None:
    ids = setup_sites(db)
    with db.session() as s:
        camp = create_campaign(s, "dr1", "dr1")
    collector = BookkeepingCollector(db)
    have = 0
    series: dict[str, list[tuple[int, float]]] = {"status": [], "scrape": [], "refresh": []}

    def status() -> None:
        with db.session() as s:
            campaign_status(s, "dr1")

    for size in sizes:
        t0 = time.perf_counter()
        _grow(db, camp, list(ids.values()), have, size)
        have = size
        grown = time.perf_counter() - t0
        collector.refresh_profiles()
        row = {
            "status": _median_ms(status, repeat),
            "scrape": _median_ms(lambda: list(collector.collect()), repeat),
            "refresh": _median_ms(collector.refresh_profiles, max(1, repeat // 3)),
        }
        for k, v in row.items():
            series[k].append((size, v))
        print(
            f"{size:>12,} attempts (added in {grown:.1f} s): campaign status {row['status']:.2f} ms, "
            f"scrape {row['scrape']:.2f} ms, profile refresh {row['refresh']:.2f} ms",
            flush=True,
        )
    last = sizes[-1]
    print(
        f"at {last:,} attempts (load average {os.getloadavg()[0]:.2f}): "
        + ", ".join(f"{k} {v[-1][1]:.2f} ms" for k, v in series.items())
    )
    print(" ".join(f"slope_{k}={_slope(v):.3f}" for k, v in series.items()))
    print(
        f"ratio_status_to_target={series['status'][-1][1] / 10:.3f} "
        f"ratio_scrape_to_target={series['scrape'][-1][1] / 10:.3f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--max-attempts", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)"
    )
    args = ap.parse_args()
    sizes = [n for n in (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000) if n <= args.max_attempts]
    with tempfile.TemporaryDirectory(prefix="drp-bench-", dir=args.workdir) as tmp:
        pg = None
        if args.db == "postgresql":
            bindir = find_pg_bindir()
            if bindir is None:
                raise SystemExit("postgresql: server binaries not found")
            pg = PgServer(bindir).start()
            db = Database(pg.create_database("bench_scale"))
        else:
            db = Database(f"sqlite:///{Path(tmp) / 'scale.sqlite'}")
        try:
            db.upgrade()
            print(f"{args.db}: status and scrape against attempts, median of {args.repeat}", flush=True)
            run(db, sizes, args.repeat)
        finally:
            db.dispose()
            if pg is not None:
                pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

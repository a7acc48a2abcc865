"""Exporter benchmark (issue 7): scrape time of `drp metrics serve` on a large bookkeeping database.

Builds a SQLite (default) or PostgreSQL bookkeeping database with ``--files`` files (default
1,000,000) in datasets of 10,000, each file replicated at two sites, plus ``--jobs`` jobs with one
attempt each and ``--transfers`` done transfers. Then it starts the real exporter on 127.0.0.1 and
times HTTP scrapes of ``/metrics`` (aggregates read per scrape; profiles served from the cache), best
and median of ``--scrapes``. It also times one profile refresh (the background thread's work).
Target: a scrape in < 200 ms (``ratio_to_target=`` is median scrape / 200 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.bookkeeping import file_rows, setup_sites
from bookkeeping.campaigns import attach_datasets, create_campaign
from bookkeeping.database import Database
from bookkeeping.files import get_or_create_dataset, register_files
from bookkeeping.jobs import AttemptRow, add_attempts, add_jobs
from bookkeeping.pgserver import free_port
from bookkeeping.states import JobState, ReplicaState, TransferState
from bookkeeping.transfers import TransferRow, add_transfers, set_transfer_states
from instrumentation.exporter import serve
from instrumentation.metrics import BookkeepingCollector


def build(db: Database, n_files: int, n_jobs: int, n_transfers: int) -> None:
    ids = setup_sites(db)
    with db.session() as s:
        camp = create_campaign(s, "dr1", "dr1")
    replicas_at = [(ids["ncsa"], ReplicaState.AVAILABLE), (ids["in2p3"], ReplicaState.AVAILABLE)]
    datasets = []
    for start in range(0, n_files, 10_000):
        with db.session() as s:
            ds = get_or_create_dataset(s, "dr1", f"raw/{start // 10_000:06d}")
            register_files(s, ds, file_rows(start, min(10_000, n_files - start)), replicas_at=replicas_at)
        datasets.append(ds)
    with db.session() as s:
        attach_datasets(s, camp, datasets)
        steps = ("calibrate", "warp", "coadd", "measure", "merge")
        add_jobs(
            s, camp, ((ids["ncsa"], steps[i % 5], f'{{"n": {i}}}', JobState.SUCCEEDED) for i in range(n_jobs))
        )
        job_ids = [j for (j,) in s.execute(text("SELECT id FROM jobs ORDER BY id"))]
        now = time.time()
        add_attempts(
            s,
            (
                AttemptRow(j, 1, 0, None, now - 10 - k % 100, now - k % 7, 5.0, 0.5, 10**8, 10**6, 10**6)
                for k, j in enumerate(job_ids)
            ),
        )
        file_ids = [
            f for (f,) in s.execute(text("SELECT id FROM files ORDER BY id LIMIT :n"), {"n": n_transfers})
        ]
        add_transfers(s, camp, (TransferRow(f, ids["ncsa"], ids["in2p3"], 16_000_000) for f in file_ids))
        tids = [t for (t,) in s.execute(text("SELECT id FROM transfers"))]
        set_transfer_states(s, ((t, TransferState.ACTIVE, None) for t in tids))
        set_transfer_states(s, ((t, TransferState.DONE, None) for t in tids))


def wait_for_profiles(url: str, timeout: float = 120.0) -> None:
    """Until the server listens and its first profile refresh is served."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                if b"drp_attempt_cpu_seconds_total" in r.read():
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    raise SystemExit(f"the exporter at {url} never served profiles")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--transfers", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument(
        "--db-url", default=None, help="an existing empty database (default: SQLite in a temp dir)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="drp-bench-") as t:
        db = Database(args.db_url or f"sqlite:///{Path(t) / 'bk.sqlite'}")
        db.upgrade()
        start = time.perf_counter()
        build(db, args.files, args.jobs, args.transfers)
        print(
            f"database: {args.files:,} files × 2 replicas, {args.jobs:,} jobs with attempts, "
            f"{args.transfers:,} transfers, built in {time.perf_counter() - start:.0f} s"
        )
        collector = BookkeepingCollector(db)
        start = time.perf_counter()
        collector.refresh_profiles()
        print(f"profile refresh (background thread, every --refresh s): {time.perf_counter() - start:.2f} s")
        listen = f"127.0.0.1:{free_port()}"
        stop = threading.Event()
        thread = threading.Thread(
            target=serve, args=(db, listen), kwargs={"refresh_s": 3600, "stop": stop}, daemon=True
        )
        thread.start()
        url = f"http://{listen}/metrics"
        try:
            wait_for_profiles(url)
            times, size = [], 0
            for _ in range(args.scrapes):
                start = time.perf_counter()
                with urllib.request.urlopen(url, timeout=30) as r:
                    size = len(r.read())
                times.append(time.perf_counter() - start)
        finally:
            stop.set()
            thread.join(10)
        med = statistics.median(times)
        print(
            f"scrape of /metrics ({size / 1024:.1f} KiB): best {min(times) * 1000:.1f} ms, "
            f"median {med * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms over {args.scrapes} scrapes"
        )
        print(f"ratio_to_target={med / 0.2:.3f}")
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

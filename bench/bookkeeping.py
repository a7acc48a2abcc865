"""Bookkeeping benchmark: file registration rate against the raw driver, and a whole release at scale.

Phase A (ratio): register ``--ratio-files`` files (default 1,000,000) through ``register_files``
and, in the same process into an identical fresh schema, through the raw driver (sqlite3
``executemany`` in one transaction; psycopg ``COPY``). Prints ``ratio=`` ours / raw.

Phase B (release): register ``--files`` files (2013 challenge: 25,400,000) in datasets of
``--dataset-size``, each file with an AVAILABLE replica at two sites, attached to one campaign; then
time the per-campaign status query (best of 5).

Conventions: plain Python from the venv, one human line per figure, ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy.engine import make_url

from bookkeeping.campaigns import attach_datasets, create_campaign
from bookkeeping.database import Database
from bookkeeping.files import get_or_create_dataset, register_files
from bookkeeping.pgserver import PgServer, find_pg_bindir
from bookkeeping.queries import campaign_status
from bookkeeping.sites import SiteRow, upsert_sites
from bookkeeping.states import ReplicaState


def file_rows(start: int, n: int) -> list[tuple[str, int, str]]:
    """Deterministic, realistic rows: raw exposures named by tract/visit/detector."""
    out = []
    for i in range(start, start + n):
        name = f"dr1/raw/tract{i // 189_000:05d}/visit{i // 189:07d}/det{i % 189:03d}.fits"
        out.append((name, 16_000_000 + (i * 7919) % 1_000_000, f"{zlib.crc32(name.encode()):08x}"))
    return out


class Target:
    """One database under test: how to make a fresh one and how to load it with the raw driver."""

    def __init__(self, kind: str, workdir: Path, pg: PgServer | None) -> None:
        self.kind, self.workdir, self.pg, self.n = kind, workdir, pg, 0

    def fresh(self, label: str) -> Database:
        self.n += 1
        if self.kind == "sqlite":
            path = self.workdir / f"{label}-{self.n}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            db = Database(f"sqlite:///{path}")
        else:
            assert self.pg is not None
            db = Database(self.pg.create_database(f"bench_{label}_{self.n}"))
        db.upgrade()
        return db

    def raw_load(self, db: Database, dataset_id: int, rows: list[tuple[str, int, str]]) -> float:
        """Seconds to load ``rows`` with the bare driver, one transaction, same table and indexes."""
        url = make_url(db.url)
        db.dispose()
        if self.kind == "sqlite":
            con = sqlite3.connect(str(url.database))
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            t0 = time.perf_counter()
            with con:
                con.executemany(
                    f"INSERT INTO files (dataset_id, name, size, adler32) VALUES ({dataset_id:d}, ?, ?, ?)",
                    rows,
                )
            dt = time.perf_counter() - t0
            con.close()
            return dt
        dsn = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
        with psycopg.connect(dsn) as conn:
            t0 = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy("COPY files (dataset_id, name, size, adler32) FROM STDIN") as cp,
            ):
                for r in rows:
                    cp.write_row((dataset_id, *r))
            conn.commit()
            return time.perf_counter() - t0


def setup_sites(db: Database) -> dict[str, int]:
    with db.session() as s:
        return upsert_sites(
            s,
            [
                SiteRow("ncsa", "lead", 0.5, "file:///data/ncsa", "local"),
                SiteRow("in2p3", "satellite", 0.5, "file:///data/in2p3", "local"),
            ],
        )


def phase_ratio(target: Target, n: int) -> dict[str, Any]:
    rows = file_rows(0, n)
    # Raw driver baseline.
    db = target.fresh("raw")
    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw")
    raw_s = target.raw_load(db, ds, rows)
    # satdrp's bulk path, same rows, identical fresh schema.
    db = target.fresh("ours")
    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw")
    t0 = time.perf_counter()
    with db.session() as s:
        register_files(s, ds, rows)
    ours_s = time.perf_counter() - t0
    db.dispose()
    return {
        "files": n,
        "ours_seconds": ours_s,
        "ours_files_per_s": n / ours_s,
        "raw_seconds": raw_s,
        "raw_files_per_s": n / raw_s,
        "ratio": raw_s / ours_s,
    }


def phase_release(target: Target, n: int, dataset_size: int, progress: bool) -> dict[str, Any]:
    db = target.fresh("release")
    ids = setup_sites(db)
    with db.session() as s:
        camp = create_campaign(s, "dr1", "dr1")
    replicas_at = [(ids["ncsa"], ReplicaState.AVAILABLE), (ids["in2p3"], ReplicaState.AVAILABLE)]
    in_db = 0.0
    wall0 = time.perf_counter()
    dataset_ids = []
    done = 0
    last_report = wall0
    for start in range(0, n, dataset_size):
        chunk = file_rows(start, min(dataset_size, n - start))
        t0 = time.perf_counter()
        with db.session() as s:
            ds = get_or_create_dataset(s, "dr1", f"raw/{start // dataset_size:06d}")
            register_files(s, ds, chunk, replicas_at=replicas_at)
        in_db += time.perf_counter() - t0
        dataset_ids.append(ds)
        done += len(chunk)
        if progress and time.perf_counter() - last_report > 15:
            last_report = time.perf_counter()
            print(f"  ... {done:,} files in {last_report - wall0:.0f} s", file=sys.stderr, flush=True)
    with db.session() as s:
        attach_datasets(s, camp, dataset_ids)
    wall = time.perf_counter() - wall0
    times = []
    status = None
    for _ in range(5):
        t0 = time.perf_counter()
        with db.session() as s:
            status = campaign_status(s, "dr1")
        times.append(time.perf_counter() - t0)
    assert status is not None
    n_replicas = sum(r.files for r in status.replicas)
    if n_replicas != 2 * n:
        raise SystemExit(f"status query counted {n_replicas} replicas, expected {2 * n}")
    size = None
    if target.kind == "sqlite":
        base = str(make_url(db.url).database)
        size = (
            sum(Path(base + sfx).stat().st_size for sfx in ("", "-wal") if Path(base + sfx).exists()) / 2**30
        )
    db.dispose()
    return {
        "files": n,
        "replicas": n_replicas,
        "datasets": len(dataset_ids),
        "wall_seconds": wall,
        "bookkeeping_seconds": in_db,
        "files_per_s": n / in_db,
        "status_query_seconds_best": min(times),
        "status_query_seconds_worst": max(times),
        "db_size_gib": size,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_ratio(kind: str, r: dict[str, Any]) -> None:
    print(
        f"{kind:10s} register {r['files']:,} files: satdrp {r['ours_files_per_s']:,.0f} files/s "
        f"({r['ours_seconds']:.2f} s), raw driver {r['raw_files_per_s']:,.0f} files/s "
        f"({r['raw_seconds']:.2f} s) ratio={r['ratio']:.2f}",
        flush=True,
    )


def print_release(kind: str, r: dict[str, Any]) -> None:
    size = f", database {r['db_size_gib']:.2f} GiB" if r["db_size_gib"] else ""
    print(
        f"{kind:10s} release of {r['files']:,} files with {r['replicas']:,} replicas at 2 sites "
        f"in {r['datasets']:,} datasets: {r['wall_seconds']:.1f} s wall "
        f"({r['files_per_s']:,.0f} files/s in bookkeeping){size}, peak RSS of this process "
        f"{r['peak_rss_mib']:,.0f} MiB",
        flush=True,
    )
    best, worst = r["status_query_seconds_best"] * 1000, r["status_query_seconds_worst"] * 1000
    print(f"{kind:10s} per-campaign status query: {best:.1f} ms (worst of 5: {worst:.1f} ms)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--files", type=int, default=1_000_000, help="files in the release phase (default 1,000,000)"
    )
    ap.add_argument("--ratio-files", type=int, default=1_000_000, help="files in the ratio phase")
    ap.add_argument("--dataset-size", type=int, default=10_000, help="files per dataset in the release phase")
    ap.add_argument("--db", default="sqlite,postgresql", help="comma list of sqlite, postgresql")
    ap.add_argument("--skip-ratio", action="store_true", help="only the release phase")
    ap.add_argument("--skip-release", action="store_true", help="only the ratio phase")
    ap.add_argument("--workdir", type=Path, default=None, help="where SQLite files go (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    args = ap.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="drp-bench-", dir=args.workdir) as tmp:
        for kind in args.db.split(","):
            pg = None
            if kind == "postgresql":
                bindir = find_pg_bindir()
                if bindir is None:
                    print("postgresql: server binaries not found, skipped", file=sys.stderr)
                    continue
                pg = PgServer(bindir).start()
            try:
                target = Target(kind, Path(tmp), pg)
                res: dict[str, Any] = {}
                if not args.skip_ratio:
                    res["ratio"] = phase_ratio(target, args.ratio_files)
                    if not args.json:
                        print_ratio(kind, res["ratio"])
                if not args.skip_release:
                    res["release"] = phase_release(target, args.files, args.dataset_size, not args.json)
                    if not args.json:
                        print_release(kind, res["release"])
                results[kind] = res
            finally:
                if pg is not None:
                    pg.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Audit benchmark (issue 8): ``drp dr audit`` speed.

1. ``--verify-checksums``: MB/s of an audit that reads and adler32s every file, as a ratio to reading
   the same files with ``cat > /dev/null`` (one ``xargs cat``), interleaved, best of ``--rounds``, with
   the files in the page cache for both (target ratio >= 0.8).
2. Without checksums: files/s of an audit of ``--files`` (default 100,000) small files: the storage
   walk, the catalogue query and the comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bookkeeping.database import Database
from bookkeeping.files import FileRow, get_or_create_dataset, register_files
from bookkeeping.sites import upsert_sites
from bookkeeping.states import ReplicaState
from sites.catalogue import parse_catalogue
from transfer.dr import audit
from transfer.replication.registry import get_replication


def setup(tmp: Path, files: Iterable[tuple[str, bytes]]) -> tuple[Database, object, object, Path]:
    root = tmp / "site"
    rows = []
    for name, data in files:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        rows.append(FileRow(name, len(data), f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"))
    cat = parse_catalogue(
        {"site": [{"name": "a", "role": "lead", "share": 1.0, "storage": f"file://{root}"}]}, "bench"
    )
    db = Database(f"sqlite:///{tmp / 'bk.sqlite'}")
    db.upgrade()
    with db.session() as s:
        ids = upsert_sites(s, [x.to_row() for x in cat.sites])
        ds = get_or_create_dataset(s, "bench", "data")
        register_files(s, ds, rows, replicas_at=[(ids["a"], ReplicaState.AVAILABLE)])
    return db, cat, get_replication(cat), root


def _can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def _prepare(cold: bool, paths: bytes) -> None:
    """Same cache state for both sides: all cached (read once) or nothing cached."""
    os.sync()
    if cold:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    else:
        subprocess.run(["xargs", "cat"], input=paths, stdout=subprocess.DEVNULL, check=True)


def bench_checksums(rounds: int, n: int, mib: int) -> None:
    with tempfile.TemporaryDirectory(prefix="drp-bench-dr-", dir=os.environ.get("BENCH_DIR")) as t:
        block = os.urandom(1 << 20)
        files = ((f"bench/big/f{i:04d}.fits", (block[i:] + block[:i]) * mib) for i in range(n))
        db, cat, backend, root = setup(Path(t), files)
        total = n * (mib << 20)
        paths = "\n".join(str(p) for p in sorted((root / "bench" / "big").iterdir())).encode()
        for cold in (False, True):
            if cold and not _can_drop_caches():
                print("cold cache: skipped (needs root to write /proc/sys/vm/drop_caches)")
                continue
            cat_s, audit_s = [], []
            for _ in range(rounds):
                _prepare(cold, paths)
                start = time.perf_counter()
                subprocess.run(["xargs", "cat"], input=paths, stdout=subprocess.DEVNULL, check=True, cwd=root)
                cat_s.append(time.perf_counter() - start)
                _prepare(cold, paths)
                start = time.perf_counter()
                rep = audit(db, cat, backend, "a", verify_checksums=True, dry_run=True)  # type: ignore[arg-type]
                audit_s.append(time.perf_counter() - start)
                assert rep.findings == [] and rep.bytes_read == total, rep.findings[:3]
            mb = total / 1e6
            cat_rate, audit_rate = mb / min(cat_s), mb / min(audit_s)
            where = "from disk (caches dropped)" if cold else "page cache"
            print(f"checksummed audit of {n} × {mib} MiB ({mb:,.0f} MB, {where}), best of {rounds}:")
            print(f"  cat > /dev/null {cat_rate:,.0f} MB/s; audit --verify-checksums {audit_rate:,.0f} MB/s")
            print(f"ratio_checksum_audit_vs_cat_{'cold' if cold else 'hot'}={audit_rate / cat_rate:.3f}")
        db.dispose()


def bench_listing(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="drp-bench-dr-", dir=os.environ.get("BENCH_DIR")) as t:
        files = [(f"bench/small/d{i // 1000:03d}/f{i:06d}.fits", i.to_bytes(8, "big")) for i in range(n)]
        start = time.perf_counter()
        db, cat, backend, _ = setup(Path(t), files)
        print(f"{n:,} small files written and catalogued in {time.perf_counter() - start:.1f} s")
        os.sync()
        start = time.perf_counter()
        rep = audit(db, cat, backend, "a", dry_run=True)  # type: ignore[arg-type]
        took = time.perf_counter() - start
        assert rep.findings == [] and rep.checked == n
        print(f"audit without checksums: {n:,} files in {took:.2f} s = {n / took:,.0f} files/s")
        print(f"files_per_second={n / took:.0f}")
        db.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", choices=["checksums", "listing"], default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-files", type=int, default=64, help="files for the checksum bench")
    ap.add_argument("--mib", type=int, default=32, help="MiB per file for the checksum bench")
    ap.add_argument("--files", type=int, default=100_000, help="files for the listing bench")
    args = ap.parse_args()
    if args.only in (None, "checksums"):
        bench_checksums(args.rounds, args.big_files, args.mib)
    if args.only in (None, "listing"):
        bench_listing(args.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())

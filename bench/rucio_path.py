"""Rucio's production data path against satdrp's direct mover (issue 18).

The same N files (default 2,000 of 16 KiB) are moved from site ``a`` to site ``b`` three ways:

1. **direct**: the embedded back-end and satdrp's engine with the local mover (the baseline);
2. **rucio, satdrp copies** (``transfers = "satdrp"``): Rucio holds the catalogue and rules, satdrp's
   engine copies and then sets the replicas AVAILABLE in Rucio;
3. **rucio, conveyor** (``transfers = "conveyor"``): rule → judge-evaluator → conveyor-submitter →
   FTS3 (the tests' fake, which really copies and checks adler32) → poller → finisher → rule OK,
   satdrp only watching.

Each path is timed from the rule's creation to the rule OK in bookkeeping (registration is timed
apart); ``ratio=`` is the conveyor's files/s over the direct mover's. For the conveyor the daemons'
own cycle timings (tests/rucio_daemons.py prints one JSON line per cycle) give the seconds each
daemon spent per file: the bottleneck is the daemon with the most. Needs PostgreSQL and the Rucio
server venv (`make test` installs both).

    .venv/bin/python bench/rucio_path.py [--files 2000] [--kib 16] [--skip-satdrp-mode]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bookkeeping.database import Database
from bookkeeping.files import FileRow
from bookkeeping.states import RuleState
from sites.catalogue import parse_catalogue
from tests.rucio_server import conveyor_stack, replication_settings, stack_available
from transfer.engine import TransferEngine
from transfer.replication.registry import get_replication


def _files(root: Path, scope: str, n: int, size: int) -> list[FileRow]:
    out = []
    d = root / scope / "bench"
    d.mkdir(parents=True, exist_ok=True)
    import zlib

    for i in range(n):
        data = os.urandom(size)
        (d / f"f{i:05d}.dat").write_bytes(data)
        out.append(FileRow(f"{scope}/bench/f{i:05d}.dat", size, f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"))
    return out


def _run(tmp: Path, label: str, replication: dict[str, Any], n: int, size: int) -> dict[str, float]:
    """One path on fresh storage and bookkeeping: register, rule, wait for OK; seconds of each."""
    roots = {s: tmp / label / s for s in ("a", "b")}
    for r in roots.values():
        r.mkdir(parents=True)
    scope = f"b{uuid.uuid4().hex[:8]}"
    rows = _files(roots["a"], scope, n, size)
    cat = parse_catalogue(
        {
            "site": [
                {"name": "a", "role": "lead", "share": 0.5, "storage": f"file://{roots['a']}"},
                {"name": "b", "role": "satellite", "share": 0.5, "storage": f"file://{roots['b']}"},
            ],
            "transfer": {"max_active": 500},
            "replication": replication,
        },
        "bench",
    )
    db = Database(f"sqlite:///{tmp / label / 'bk.sqlite'}")
    db.upgrade()
    backend = get_replication(cat)
    engine = TransferEngine(db, cat, backend)
    try:
        t0 = time.perf_counter()
        with db.session() as s:
            backend.register(s, f"{scope}:bench", rows, "a")
        registered = time.perf_counter() - t0
        t1 = time.perf_counter()
        with db.session() as s:
            rule = backend.add_rule(s, f"{scope}:bench", "site=b")
        while True:
            engine.run(max_seconds=600, poll_s=0.2)
            with db.session() as s:
                state = backend.rule(s, rule.id).state
            if state is not RuleState.REPLICATING:
                break
        moved = time.perf_counter() - t1
        assert state is RuleState.OK, f"{label}: rule ended {state.name}"
        for f in rows[:: max(1, n // 50)]:
            assert (roots["b"] / f.name).read_bytes() == (roots["a"] / f.name).read_bytes()
    finally:
        engine.close()
        db.dispose()
    print(
        f"{label}: {n:,} files × {size >> 10} KiB: register {registered:.1f} s; rule → OK {moved:.1f} s, "
        f"{n / moved:,.1f} files/s",
        flush=True,
    )
    return {"register_s": registered, "move_s": moved, "files_per_s": n / moved}


def _cycles(log: Path, offset: int) -> list[dict[str, Any]]:
    lines = log.read_bytes()[offset:].decode(errors="replace").splitlines()
    return [c for c in (json.loads(x) for x in lines if x.startswith("{")) if "judge" in c]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kib", type=int, default=16)
    ap.add_argument("--skip-satdrp-mode", action="store_true", help="skip path 2 (Rucio, satdrp copies)")
    ap.add_argument("--skip-conveyor", action="store_true", help="skip path 3 (Rucio's conveyor)")
    ap.add_argument(
        "--group-bulk", type=int, default=1, help="files per FTS job the submitter makes (Rucio's default: 1)"
    )
    args = ap.parse_args()
    if not stack_available():
        print("rucio_path: needs PostgreSQL and the Rucio server venv: run `make test` once", file=sys.stderr)
        return 2
    n, size = args.files, args.kib << 10
    with tempfile.TemporaryDirectory(prefix="bench-rucio-") as t:
        tmp = Path(t)
        direct = _run(tmp, "direct (embedded, local mover)", {"backend": "embedded"}, n, size)
        with conveyor_stack(tmp, args.group_bulk) as (server, conveyor):
            if not args.skip_satdrp_mode:
                sat = _run(tmp, "rucio, satdrp copies", replication_settings(server, "_S"), n, size)
                print(f"ratio_satdrp_mode={sat['files_per_s'] / direct['files_per_s']:.4f}", flush=True)
            if args.skip_conveyor:
                return 0
            log = tmp / "conveyor" / "daemons.log"
            offset = log.stat().st_size
            with conveyor.running():
                conv = _run(
                    tmp,
                    f"rucio, conveyor + FTS3 (group_bulk {args.group_bulk})",
                    replication_settings(server, "_C", conveyor),
                    n,
                    size,
                )
            cycles = _cycles(log, offset)
    daemons = ("judge", "submitter", "poller", "finisher", "necromancer", "pause")
    spent = {d: sum(float(c.get(d, 0.0)) for c in cycles) for d in daemons}
    per_file = {d: 1000 * v / n for d, v in spent.items()}
    print(
        f"conveyor daemons over {len(cycles)} cycles, ms per file: "
        + ", ".join(f"{d} {per_file[d]:.1f}" for d in daemons)
    )
    busiest = max((d for d in daemons if d != "pause"), key=lambda d: spent[d])
    print(
        f"overhead vs direct: {1000 * (conv['move_s'] - direct['move_s']) / n:.1f} ms per file; "
        f"busiest daemon: {busiest} ({spent[busiest]:.1f} s of {conv['move_s']:.1f} s)"
    )
    print(f"ratio={conv['files_per_s'] / direct['files_per_s']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

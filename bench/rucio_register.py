"""Registration in Rucio (issue 22, part 5): satdrp's ``rucio`` back-end against raw single calls.

N files (default 20,000; registration is catalogue only, so no bytes are written) are registered at
one RSE of a fresh Rucio server (PostgreSQL and gunicorn, as in the tests), each run under a new
scope so that every run inserts the same amount:

1. **raw, one call at a time**: rucio-clients' ``add_replicas``, one call after the other, of 500
   and of 1,000 files (Rucio's schemas refuse longer lists); the better is the baseline (replicas
   only: these files are not even attached to their dataset);
2. **the back-end's old way**: ``add_replicas`` then ``attach_dids`` in 500-file calls, one at a time;
3. **a sweep** of batch size × calls in flight with the combined raw call (``attach_dids_to_dids``
   with the RSE: replicas added and attached in one call, as attachments of 1,000 files), each
   in-flight call on its own client, so that ``register_batch`` and ``register_in_flight`` come from
   a measurement;
4. **satdrp's back-end** ``register`` with its defaults (its bookkeeping on SQLite included).

``ratio=`` is (4) over (1), in files/s; the issue's target is 1.5. Needs PostgreSQL and the Rucio
server venv (`make test` installs both).

    .venv/bin/python bench/rucio_register.py [--files 20000] [--batches 1000,2000,5000] [--in-flight 1,4,8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bookkeeping.database import Database
from bookkeeping.files import FileRow
from sites.catalogue import parse_catalogue
from tests.rucio_server import (
    PASSWORD,
    USERNAME,
    RucioServer,
    replication_settings,
    server_stack,
    stack_available,
)
from transfer.replication.registry import get_replication
from transfer.replication.rucio import RucioBackend
from transfer.replication.rucio_client import chunks, in_flight


def _client(server: RucioServer) -> Any:
    from rucio.client import Client

    return Client(
        rucio_host=server.url,
        auth_host=server.url,
        account="root",
        auth_type="userpass",
        creds={"username": USERNAME, "password": PASSWORD},
    )


def _files(scope: str, n: int) -> list[dict[str, Any]]:
    return [
        {"scope": scope, "name": f"raw/f{i:07d}.fits", "bytes": 4096 + i, "adler32": f"{i:08x}"}
        for i in range(n)
    ]


class Rig:
    """A Rucio server with one RSE, and a fresh scope and dataset for every run."""

    def __init__(self, server: RucioServer, rse: str, n: int, clients: int) -> None:
        self.rse, self.n = rse, n
        self.clients = [_client(server) for _ in range(clients)]

    def fresh(self) -> tuple[str, list[dict[str, Any]]]:
        scope = f"r{uuid.uuid4().hex[:10]}"
        self.clients[0].add_scope("root", scope)
        self.clients[0].add_dataset(scope, "ds")
        return scope, _files(scope, self.n)

    def check(self, scope: str) -> tuple[int, int]:
        """Files attached to the run's dataset, and its replicas at the RSE (Rucio's own count)."""
        c = self.clients[0]
        content = sum(1 for _ in c.list_content(scope, "ds"))
        at_rse = [d for d in c.list_dataset_replicas(scope, "ds", deep=True) if d["rse"] == self.rse]
        return content, int(at_rse[0]["available_length"]) if at_rse else 0

    def timed(
        self, label: str, send: Callable[[Any, list[dict[str, Any]]], None], batch: int, width: int
    ) -> float:
        """files/s of sending the run's files in ``batch``-file calls, ``width`` at once."""
        scope, files = self.fresh()
        parts = [list(p) for p in chunks(files, batch)]
        t0 = time.perf_counter()
        in_flight(self.clients[:width], parts, send)
        rate = self.n / (time.perf_counter() - t0)
        content, replicas = self.check(scope)
        print(
            f"  {label:<46} batch {batch:>5} × {width} in flight: {rate:8,.0f} files/s "
            f"(attached {content:,}, replicas {replicas:,})",
            flush=True,
        )
        return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--batches", default="1000,2000,5000", help="files per call in the sweep")
    ap.add_argument("--in-flight", default="1,4,8", help="calls in flight of the sweep")
    args = ap.parse_args()
    if not stack_available():
        print(
            "rucio_register: needs PostgreSQL and the Rucio server venv: run `make test` once",
            file=sys.stderr,
        )
        return 2
    batches = [int(x) for x in args.batches.split(",")]
    widths = [int(x) for x in args.in_flight.split(",")]
    n = args.files
    with tempfile.TemporaryDirectory(prefix="bench-rucio-reg-") as t, server_stack(Path(t)) as server:
        tmp = Path(t)
        cat = parse_catalogue(
            {
                "site": [{"name": "a", "role": "lead", "share": 1.0, "storage": f"file://{tmp / 'a'}"}],
                "replication": replication_settings(server, "_R"),
            },
            "bench",
        )
        backend = get_replication(cat)
        assert isinstance(backend, RucioBackend)
        backend.ensure_topology()
        rse = backend.rse("a")
        rig = Rig(server, rse, n, max(widths))
        print(f"{n:,} files at {rse}; load average {os.getloadavg()[0]:.2f}", flush=True)

        def add_replicas(c: Any, p: list[dict[str, Any]]) -> None:
            c.add_replicas(rse, p)

        def old_way(c: Any, p: list[dict[str, Any]]) -> None:
            c.add_replicas(rse, p)
            c.attach_dids(p[0]["scope"], "ds", [{"scope": f["scope"], "name": f["name"]} for f in p])

        def combined(c: Any, p: list[dict[str, Any]]) -> None:
            scope = p[0]["scope"]
            c.attach_dids_to_dids(
                [{"scope": scope, "name": "ds", "rse": rse, "dids": q} for q in chunks(p, 1000)]
            )

        raw = {b: rig.timed("raw add_replicas (replicas only)", add_replicas, b, 1) for b in (500, 1000)}
        baseline = max(raw.values())
        old = rig.timed("old back-end: add_replicas + attach_dids", old_way, 500, 1)
        sweep = {
            (b, w): rig.timed("attach_dids_to_dids with the RSE", combined, b, w)
            for b in batches
            for w in widths
        }
        best = max(sweep, key=lambda k: sweep[k])

        db = Database(f"sqlite:///{tmp / 'bk.sqlite'}")
        db.upgrade()
        scope, files = rig.fresh()
        rows = [FileRow(f"{scope}/{f['name']}", f["bytes"], f["adler32"]) for f in files]
        t0 = time.perf_counter()
        with db.session() as s:
            backend.register(s, f"{scope}:ds", rows, "a")
        mine = n / (time.perf_counter() - t0)
        attached, _ = rig.check(scope)
        db.dispose()
        st = backend.settings
        print(
            f"  satdrp register (batch {st.register_batch} × {st.register_in_flight} in flight, "
            f"books on SQLite): {mine:,.0f} files/s (attached {attached:,})"
        )
    print(f"baseline (best raw add_replicas, one call at a time): {baseline:,.0f} files/s")
    print(
        f"best of the sweep: batch {best[0]} × {best[1]} in flight, {sweep[best]:,.0f} files/s "
        f"({sweep[best] / baseline:.2f}× the baseline)"
    )
    print(f"old back-end way: {old / baseline:.2f}× the baseline")
    print("target (issue 22): ratio >= 1.5")
    print(f"ratio={mine / baseline:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

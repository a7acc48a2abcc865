"""A throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks.

``initdb`` and ``postgres`` refuse to run as root, so when we are root they run as the ``postgres``
system user through ``runuser``. The cluster is built for speed, not durability (fsync off).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import DrpError

PG_BINDIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def find_pg_bindir() -> Path | None:
    for d in (os.environ.get("DRP_PG_BINDIR"), *PG_BINDIRS):
        if d and (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """One cluster in a temporary directory; ``start()``/``stop()``, or use as a context manager."""

    bindir: Path
    port: int = field(default_factory=free_port)
    base: Path = field(init=False)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise DrpError(f"{' '.join(args[:1])} failed ({proc.returncode}): {proc.stdout.strip()} {tail}")

    def start(self) -> PgServer:
        self.base = Path(tempfile.mkdtemp(prefix="drp-pg-", dir="/tmp"))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        data = self.base / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        settings = (
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_wal_size=4GB -c shared_buffers=512MB"
        )
        for attempt in range(3):  # the free port may be taken between probe and bind
            opts = f"-p {self.port} -h 127.0.0.1 -k {self.base} {settings}"
            try:
                self._run(
                    "pg_ctl", "-D", str(data), "-l", str(self.base / "server.log"), "-w", "-o", opts, "start"
                )
                return self
            except DrpError:
                if attempt == 2:
                    raise
                self.port = free_port()
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg  # the [postgres] extra

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            tmpl = f" TEMPLATE {template}" if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

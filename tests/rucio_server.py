"""A real Rucio 41 server on 127.0.0.1 for the contract tests: PostgreSQL database, schema and root
account bootstrapped, REST API under gunicorn with userpass auth (recipe: ../shared/reference/rucio).

The server lives in its own venv (``.venv-rucio``, made by ``scripts/install-rucio-server.sh``);
the tests talk to it only through rucio-clients, as satdrp does in production.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookkeeping.pgserver import PgServer, free_port

ROOT = Path(__file__).resolve().parent.parent
USERNAME, PASSWORD = "ddmlab", "secret-for-tests"

CONFIG = """\
[common]
loglevel = WARNING
logdir = {base}/logs

[database]
default = {db_url}
pool_size = 10
max_overflow = 20

[bootstrap]
userpass_identity = {username}
userpass_pwd = {password}
userpass_email = ddmlab@example.org

[alembic]
cfg = {base}/alembic.ini

[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = identity

[client]
rucio_host = {url}
auth_host = {url}
auth_type = userpass
username = {username}
password = {password}
account = root
auth_token_file_path = {base}/tokens/root

[monitor]
enable_metrics = False

[conveyor]
transfertool = fts3
scheme = root,file,davs
"""

ALEMBIC = """\
[alembic]
sqlalchemy.url = {db_url}
script_location = {migrate_repo}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = WARNING
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %%(levelname)-5.5s [%%(name)s] %%(message)s
"""


def server_venv() -> Path:
    return Path(os.environ.get("DRP_RUCIO_SERVER_VENV", ROOT / ".venv-rucio"))


@dataclass
class RucioServer:
    base: Path
    pg: PgServer
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> RucioServer:
        venv = server_venv()
        if not (venv / "bin" / "gunicorn").exists():
            raise RuntimeError(f"no Rucio server venv at {venv} (run scripts/install-rucio-server.sh)")
        (self.base / "logs").mkdir(parents=True, exist_ok=True)
        (self.base / "tokens").mkdir(exist_ok=True)
        db_url = self.pg.create_database("rucio")
        site = next((venv / "lib").glob("python3*/site-packages"))
        self.port = free_port()
        fmt = {
            "base": self.base,
            "db_url": db_url,
            "url": self.url,
            "username": USERNAME,
            "password": PASSWORD,
        }
        (self.base / "rucio.cfg").write_text(CONFIG.format(**fmt))
        (self.base / "alembic.ini").write_text(
            ALEMBIC.format(db_url=db_url, migrate_repo=site / "rucio/db/sqla/migrate_repo")
        )
        env = {**os.environ, "RUCIO_CONFIG": str(self.base / "rucio.cfg"), "TMPDIR": str(self.base)}
        boot = subprocess.run(
            [
                str(venv / "bin/python"),
                "-c",
                "from rucio.db.sqla.util import build_database, create_base_vo, create_root_account;"
                "build_database(); create_base_vo(); create_root_account()",
            ],
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        if boot.returncode != 0:
            raise RuntimeError(f"Rucio bootstrap failed: {boot.stderr.strip().splitlines()[-1:]}")
        log = open(self.base / "logs" / "gunicorn.out", "ab")
        self.proc = subprocess.Popen(
            [
                str(venv / "bin/gunicorn"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "120",
                "--keep-alive",
                "75",
                "rucio.web.rest.flaskapi.v1.main:application",
            ],
            env=env,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Rucio server exited: see {self.base / 'logs' / 'gunicorn.out'}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"Rucio server not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Conveyor:
    """Rucio's daemons cycling against a test server, and the FTS3 fake they submit to (anonymous over
    http, as Rucio sends no credentials to an http:// endpoint). Cycles run only inside ``running()``."""

    server: RucioServer
    base: Path
    proc: subprocess.Popen[bytes] | None = None
    fts: Any = None
    group_bulk: int = 1  # files per FTS job the submitter makes (Rucio's default: one)

    @property
    def gate(self) -> Path:
        return self.base / "gate"

    @property
    def fts_url(self) -> str:
        return f"http://127.0.0.1:{self.fts.port}"

    def start(self) -> Conveyor:
        from tests.fake_fts import FakeFTS

        self.fts = FakeFTS({}, "conveyor-token", anonymous=True)
        self.fts.serve()
        env = {
            **os.environ,
            "RUCIO_CONFIG": str(self.server.base / "rucio.cfg"),
            "TMPDIR": str(self.server.base),
        }
        log = open(self.base / "daemons.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(server_venv() / "bin/python"),
                str(ROOT / "tests/rucio_daemons.py"),
                "--gate",
                str(self.gate),
                "--group-bulk",
                str(self.group_bulk),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"the Rucio daemons exited: see {self.base / 'daemons.log'}")
        return self

    @contextmanager
    def running(self) -> Iterator[None]:
        """The daemons at work inside the block; none of them still at work after it."""
        self.gate.touch()
        try:
            yield
        finally:
            self.gate.unlink(missing_ok=True)
            self.wait_idle()

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait for the cycle in progress to end (the daemons hold GATE.busy while one runs)."""
        deadline = time.monotonic() + timeout
        with open(self.gate.with_name(self.gate.name + ".busy"), "a") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    gone = self.proc is not None and self.proc.poll() is not None
                    if gone or time.monotonic() > deadline:
                        return
                    time.sleep(0.05)
                    continue
                fcntl.flock(f, fcntl.LOCK_UN)
                return

    def stop(self) -> None:
        self.gate.unlink(missing_ok=True)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.fts is not None:
            self.fts.stop()


def stack_available() -> bool:
    """PostgreSQL binaries and the Rucio server venv are installed (`make test` installs both)."""
    from bookkeeping.pgserver import find_pg_bindir

    return find_pg_bindir() is not None and (server_venv() / "bin/gunicorn").exists()


@contextmanager
def server_stack(base: Path) -> Iterator[RucioServer]:
    """PostgreSQL and a Rucio server under ``base``, both stopped after (for the scripts and
    benchmarks that run outside pytest; the tests use the session fixtures)."""
    from bookkeeping.pgserver import find_pg_bindir

    bindir = find_pg_bindir()
    assert bindir is not None, "PostgreSQL is not installed"
    pg = PgServer(bindir).start()
    server: RucioServer | None = None
    try:
        (base / "rucio").mkdir()
        server = RucioServer(base / "rucio", pg).start()
        yield server
    finally:
        if server is not None:
            server.stop()
        pg.stop()


@contextmanager
def conveyor_stack(base: Path, group_bulk: int = 1) -> Iterator[tuple[RucioServer, Conveyor]]:
    """:func:`server_stack` and Rucio's daemons with the FTS3 fake, all stopped after."""
    with server_stack(base) as server:
        conveyor: Conveyor | None = None
        try:
            (base / "conveyor").mkdir()
            conveyor = Conveyor(server, base / "conveyor", group_bulk=group_bulk).start()
            yield server, conveyor
        finally:
            if conveyor is not None:
                conveyor.stop()


def replication_settings(
    server: RucioServer, rse_suffix: str, conveyor: Conveyor | None = None
) -> dict[str, str]:
    """The ``[replication]`` table for the test server (conveyor mode when a Conveyor is given)."""
    settings = {
        "backend": "rucio",
        "host": server.url,
        "username": USERNAME,
        "password": PASSWORD,
        "rse_suffix": rse_suffix,
    }
    if conveyor is not None:
        settings |= {"transfers": "conveyor", "fts": conveyor.fts_url}
    return settings

"""Shared fixtures: real services started on 127.0.0.1 and databases for the contract suites.

With ``DRP_REQUIRE_SERVICES=1`` (CI) a test that needs a service which cannot start fails instead of
skipping, so a missing install step cannot hide behind a green run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from bookkeeping.database import Database
from bookkeeping.pgserver import PgServer, find_pg_bindir


def require_services() -> bool:
    return os.environ.get("DRP_REQUIRE_SERVICES", "") not in ("", "0")


def service_unavailable(reason: str) -> None:
    if require_services():
        pytest.fail(f"DRP_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = find_pg_bindir()
    if bindir is None:
        service_unavailable("PostgreSQL server binaries not installed (make test installs postgresql-15)")
    assert bindir is not None
    server = PgServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A database at the head revision, cloned for each test (much faster than migrating each time)."""
    url = pg_server.create_database("drp_template")
    db = Database(url)
    db.upgrade()
    db.dispose()
    return "drp_template"


def _fresh_sqlite(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.path.join(tmp_path, 'drp.sqlite')}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db(backend: str, tmp_path: os.PathLike[str], request: pytest.FixtureRequest) -> Iterator[Database]:
    """A database with no schema at all, on each supported dialect."""
    if backend == "sqlite":
        db = Database(_fresh_sqlite(tmp_path))
        yield db
        db.dispose()
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    db = Database(server.create_database(name))
    yield db
    db.dispose()
    server.drop_database(name)


@pytest.fixture
def db(backend: str, tmp_path: os.PathLike[str], request: pytest.FixtureRequest) -> Iterator[Database]:
    """A database at the head revision, on each supported dialect."""
    if backend == "sqlite":
        database = Database(_fresh_sqlite(tmp_path))
        database.upgrade()
        yield database
        database.dispose()
        return
    server: PgServer = request.getfixturevalue("pg_server")
    template: str = request.getfixturevalue("pg_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    database = Database(server.create_database(name, template=template))
    yield database
    database.dispose()
    server.drop_database(name)


@pytest.fixture(scope="session")
def rucio_server(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real Rucio 41 REST server on 127.0.0.1 (its own venv, PostgreSQL database, userpass)."""
    from tests.rucio_server import RucioServer, server_venv

    if not (server_venv() / "bin" / "gunicorn").exists():
        service_unavailable(f"no Rucio server venv at {server_venv()} (make test installs it)")
    server = RucioServer(tmp_path_factory.mktemp("rucio"), pg_server)
    try:
        server.start()
    except (RuntimeError, OSError) as err:
        server.stop()
        service_unavailable(f"Rucio server did not start: {err}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def xrootd_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Two XRootD servers on 127.0.0.1 ("ncsa" and "in2p3"), TPC and adler32 enabled."""
    from tests.xrootd_server import XRootDServer, xrootd_available

    if not xrootd_available():
        service_unavailable("xrootd/xrdcp not installed (make test installs xrootd-server and xrootd-client)")
    os.environ.setdefault("XRD_CONNECTIONRETRY", "1")  # fail fast instead of retrying for minutes
    base = tmp_path_factory.mktemp("xrootd")
    os.chmod(base, 0o755)
    for parent in base.parents:  # the server's user must traverse down to its data
        if parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
    servers = {name: XRootDServer(name, base / name) for name in ("ncsa", "in2p3")}
    try:
        for s in servers.values():
            s.start()
    except RuntimeError as err:
        for s in servers.values():
            s.stop()
        service_unavailable(f"XRootD servers did not start: {err}")
    try:
        yield dict(servers)
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture(scope="session")
def rucio_conveyor(rucio_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Rucio's own daemons (judge-evaluator, conveyor submitter/poller/finisher, necromancer) against the
    test server, submitting to an FTS3 fake that copies for real; they work only while a test holds
    the gate (``with rucio_conveyor.running(): …``)."""
    from tests.rucio_server import Conveyor

    conveyor = Conveyor(rucio_server, tmp_path_factory.mktemp("conveyor"))  # type: ignore[arg-type]
    try:
        conveyor.start()
    except (RuntimeError, OSError) as err:
        conveyor.stop()
        service_unavailable(f"Rucio daemons did not start: {err}")
    try:
        yield conveyor
    finally:
        conveyor.stop()


@pytest.fixture(scope="session")
def condor_pool() -> Iterator[object]:
    """A real HTCondor pool (schedd, negotiator, startd, DAGMan) on 127.0.0.1, in the chroot that
    scripts/install-htcondor.sh installs; this process submits to it as the pool's job user."""
    from pathlib import Path

    from tests.htcondor_pool import CondorPool, installed

    if os.geteuid() != 0:
        service_unavailable("the HTCondor pool runs in a chroot and needs root")
    if not installed():
        service_unavailable("no HTCondor chroot (make test installs it: scripts/install-htcondor.sh)")
    import htcondor2

    work = Path(os.environ.get("SATDRP_CONDOR_WORK", "/srv/satdrp-condor-work")) / f"s{uuid.uuid4().hex[:8]}"
    pool = CondorPool(work)
    try:
        pool.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        pool.stop()
        service_unavailable(f"HTCondor pool did not start: {err}")
    saved = {k: os.environ.get(k) for k in pool.env()}
    os.environ.update(pool.env())
    htcondor2.reload_config()
    try:
        yield pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        htcondor2.reload_config()
        pool.stop()
        if not os.environ.get("DRP_KEEP_WORK"):  # kept for a post-mortem of the pool's logs
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def condor_workspace(condor_pool: object) -> Iterator[object]:
    """A directory the pool's jobs can reach (outside /tmp: DAGMan refuses DAGs there), removed after."""
    from pathlib import Path

    work: Path = condor_pool.work  # type: ignore[attr-defined]
    d = work / f"t{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True)
    yield d
    if not os.environ.get("DRP_KEEP_WORK"):
        shutil.rmtree(d, ignore_errors=True)

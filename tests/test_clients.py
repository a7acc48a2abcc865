"""Production clients are extras: a catalogue that needs a missing one is refused before any work, in one
line naming the site, the key, the module and the command that installs it; `drp doctor` reports
every back-end against the real services the suite starts, and an outage as a row, not a traceback."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.pgserver import PgServer, free_port
from cli import cli
from common.plugins import PLUGINS, Kind
from tests.conftest import service_unavailable
from tests.fake_fts import FakeFTS
from tests.prom_server import Pushgateway, available
from tests.rucio_server import PASSWORD, USERNAME

LOCAL = """
[[site]]
name = "ncsa"
role = "lead"
share = 0.5
storage = "file://{root}/ncsa"

[[site]]
name = "in2p3"
role = "satellite"
share = 0.5
storage = "{storage}"
[site.compute]
backend = "{compute}"
{extra}
"""

# extra -> (module hidden, what the catalogue uses, the key the error must name)
CASES = {
    "htcondor": ("htcondor2", {"compute": "htcondor"}, "site[2].compute.backend"),
    "pegasus": ("Pegasus", {"compute": "pegasus"}, "site[2].compute.backend"),
    "xrootd": ("XRootD", {"storage": "root://127.0.0.1:1//lsst"}, "site[2].storage"),
    "fts3": (
        "fts3",
        {
            "extra": '[[transfer.link]]\nsource = "*"\ndest = "*"\nmover = "fts3"\nendpoint = "https://fts:8446"'
        },
        "transfer.link[1].mover",
    ),
    "rucio": (
        "rucio",
        {"extra": '[replication]\nbackend = "rucio"\nhost = "https://rucio.example"'},
        "replication.backend",
    ),
}


def _catalogue(tmp: Path, **kw: str) -> Path:
    values = {"root": str(tmp), "storage": f"file://{tmp}/in2p3", "compute": "local", "extra": ""} | kw
    (tmp / "sites.toml").write_text(LOCAL.format(**values))
    (tmp / "campaign.toml").write_text('[campaign]\nname = "c1"\nrelease = "tiny"\n')
    return tmp / "sites.toml"


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _counts(url: str) -> tuple[int, int, int]:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            return tuple(  # type: ignore[return-value]
                int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ("sites", "campaigns", "datasets")
            )
    finally:
        db.dispose()


@pytest.mark.parametrize("extra", sorted(CASES))
def test_missing_client_is_one_line_exit_2_and_nothing_written(
    extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, uses, key = CASES[extra]
    _catalogue(tmp_path, **uses)
    url = f"sqlite:///{tmp_path / 'bk.sqlite'}"
    assert _run("--db", url, "db", "upgrade")[0] == 0
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails: as if not installed
    for args in (
        ("campaign", "create", str(tmp_path / "campaign.toml")),
        ("campaign", "run", str(tmp_path / "campaign.toml")),
        (
            "data",
            "register",
            "--sites",
            str(tmp_path / "sites.toml"),
            "--dataset",
            "tiny:raw",
            "--site",
            "ncsa",
        ),
    ):
        code, out, err = _run("--db", url, *args)
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        line = lines[0]
        assert line.startswith(f"drp: error: {tmp_path / 'sites.toml'}: {key}: "), line
        assert module in line and f"pip install 'satdrp[{extra}]'" in line
        if key.startswith("site["):
            assert "site 'in2p3'" in line
    assert _counts(url) == (0, 0, 0)


def test_postgres_url_without_psycopg_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _catalogue(tmp_path)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    code, out, err = _run(
        "--db",
        "postgresql://drp:s3cret@127.0.0.1:1/drp",
        "campaign",
        "create",
        str(tmp_path / "campaign.toml"),
    )
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "drp: error: database URL: a postgresql:// database needs the Python module psycopg, not installed: "
        "pip install 'satdrp[postgres]'"
    ]


def test_every_client_plugin_names_an_existing_extra() -> None:
    import tomllib

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for kind in Kind:
        for plugin in PLUGINS[kind].values():
            for client in plugin.clients:
                assert client.extra in extras, client
                assert any(d.lower().startswith(client.distribution.lower()) for d in extras[client.extra])
                assert client.extra in extras["all"][0]


# --- drp doctor ------------------------------------------------------------------------------------
def _doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, object], str]:
    code, out, err = _run(*args, "doctor", "--json", env=env)
    return code, json.loads(out), err


def _rows(report: dict[str, object]) -> dict[tuple[str, str], tuple[str, str]]:
    rows = report["rows"]
    assert isinstance(rows, list)
    return {(r["component"], r["check"]): (r["health"], r["detail"]) for r in rows}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    if not available():
        service_unavailable("prometheus-pushgateway missing (make test installs it)")
    gw = Pushgateway(tmp_path_factory.mktemp("doctor-gw")).start()
    yield gw
    gw.stop()


def test_doctor_all_good_against_real_services(
    tmp_path: Path,
    pg_server: PgServer,
    rucio_server: Any,
    xrootd_sites: dict[str, Any],
    gateway: Pushgateway,
) -> None:
    fts = FakeFTS({}, "tok-for-doctor")
    fts_url = fts.serve()
    url = pg_server.create_database("doctor_ok")
    (tmp_path / "ncsa").mkdir()
    _catalogue(
        tmp_path,
        storage=xrootd_sites["in2p3"].url,
        extra=f"""
[replication]
backend = "rucio"
host = "{rucio_server.url}"
username = "{USERNAME}"
password_env = "DOCTOR_RUCIO_PW"

[[transfer.link]]
source = "*"
dest = "*"
mover = "fts3"
endpoint = "{fts_url}"
token_env = "DOCTOR_FTS_TOKEN"
""",
    )
    env = {
        "DRP_SITES": str(tmp_path / "sites.toml"),
        "DOCTOR_RUCIO_PW": PASSWORD,
        "DOCTOR_FTS_TOKEN": "tok-for-doctor",
    }
    try:
        assert _run("--db", url, "db", "upgrade")[0] == 0
        code, report, err = _doctor("--db", url, env=env | {"DRP_PUSH_GATEWAY": gateway.url})
    finally:
        fts.stop()
    rows = _rows(report)
    assert code == 0 and report["exit_code"] == 0, (rows, err)
    assert all(health == "ok" for health, _ in rows.values())
    assert rows[("database", "schema")][0] == "ok" and "psycopg" in rows[("database", "client")][1]
    assert (
        "authenticated as root"
        in rows[("replication 'rucio'", "Rucio credentials (userpass, account root)")][1]
    )
    assert "answers ping" in rows[("site 'in2p3' storage (root://, mover 'xrootd')", "storage")][1]
    assert "FTS knows us as token:test" in rows[("link ncsa → in2p3 mover 'fts3'", "FTS3 credentials")][1]
    assert ("push gateway", "endpoint") in rows
    # nothing secret in what an operator might paste into a ticket
    dumped = json.dumps(report)
    assert PASSWORD not in dumped and "tok-for-doctor" not in dumped


def test_doctor_reports_outages_and_refused_credentials(tmp_path: Path, rucio_server: Any) -> None:
    closed = free_port()
    (tmp_path / "ncsa").mkdir()
    _catalogue(
        tmp_path,
        storage=f"root://127.0.0.1:{closed}//lsst",
        compute="htcondor",
        extra=f"""schedd = "127.0.0.1:{closed}"

[replication]
backend = "rucio"
host = "{rucio_server.url}"
username = "{USERNAME}"
password = "wrong-password"

[[transfer.link]]
source = "*"
dest = "*"
mover = "xrootd"
""",
    )
    env = {"DRP_SITES": str(tmp_path / "sites.toml")}
    code, report, err = _doctor("--db", f"postgresql://drp:s3cret@127.0.0.1:{closed}/drp", env=env)
    rows = _rows(report)
    assert code == 1 and report["exit_code"] == 1 and "Traceback" not in err
    assert rows[("database", "endpoint")][0] == "unreachable"
    assert rows[("site 'in2p3' compute 'htcondor'", "collector")][0] == "unreachable"
    assert rows[("site 'in2p3' storage (root://, mover 'xrootd')", "storage")][0] == "unreachable"
    assert rows[("replication 'rucio'", "Rucio server")][0] == "ok"
    creds = rows[("replication 'rucio'", "Rucio credentials (userpass, account root)")]
    assert creds[0] == "no-credentials" and creds[1].startswith("refused")
    dumped = json.dumps(report)
    assert "s3cret" not in dumped and "wrong-password" not in dumped
    # the human form: grouped lines, same exit code
    code, out, _ = _run("--db", f"sqlite:///{tmp_path / 'none.sqlite'}", "doctor", env=env)
    assert code == 1 and "unreachable" in out and "problems found" in out
    assert not (tmp_path / "none.sqlite").exists()  # the doctor writes nothing


def test_doctor_missing_client_and_bad_catalogue_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _catalogue(tmp_path, compute="htcondor")
    env = {"DRP_SITES": str(tmp_path / "sites.toml")}
    monkeypatch.setitem(sys.modules, "htcondor2", None)
    code, report, _ = _doctor("--db", f"sqlite:///{tmp_path / 'bk.sqlite'}", env=env)
    rows = _rows(report)
    assert code == 2
    health, detail = rows[("site 'in2p3' compute 'htcondor'", "client htcondor2")]
    assert health == "missing" and "pip install 'satdrp[htcondor]'" in detail
    (tmp_path / "sites.toml").write_text("[[site]]\nname = 'x'\n")
    code, report, _ = _doctor("--db", f"sqlite:///{tmp_path / 'bk.sqlite'}", env=env)
    assert code == 2 and _rows(report)[("site catalogue", "file")][0] == "config"


@pytest.mark.parametrize(
    "bad", ["max_workers = 0", "max_workers = -1", "max_jobs = { warp = 0 }", "typo = 1"]
)
def test_a_bad_compute_setting_is_refused_before_any_work(bad: str, tmp_path: Path) -> None:
    """It once passed `campaign create` and failed only at processing, leaving the campaign stuck."""
    _catalogue(tmp_path, extra=bad)
    url = f"sqlite:///{tmp_path / 'bk.sqlite'}"
    assert _run("--db", url, "db", "upgrade")[0] == 0
    key = f"site[2].compute.{bad.split()[0]}"
    for args in (
        ("campaign", "create", str(tmp_path / "campaign.toml")),
        ("campaign", "run", str(tmp_path / "campaign.toml")),
        ("sites", "sync", "--sites", str(tmp_path / "sites.toml")),
    ):
        code, out, err = _run("--db", url, *args)
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"drp: error: {tmp_path / 'sites.toml'}: {key}"), lines[0]
    assert _counts(url) == (0, 0, 0)

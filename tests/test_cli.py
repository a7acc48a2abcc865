"""The operator CLI: help, version, db commands, sites list, campaign status, demo; exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from bookkeeping.database import Database, expected_head
from cli import cli
from tests.test_sites import GOOD


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_help_and_version() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for group in ("db", "sites", "campaign", "demo"):
        assert group in out
    assert "Exit codes" in out
    code, out, _ = run("--version")
    assert code == 0 and "0.1.0" in out


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("drp")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "drp" in proc.stdout


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bk.sqlite'}"
    code, out, _ = run("--db", url, "db", "current")
    assert code == 4 and "run `drp db upgrade`" in out
    code, out, _ = run("--db", url, "db", "upgrade")
    assert code == 0 and f"empty -> {expected_head()}" in out
    code, out, _ = run("--db", url, "db", "current", "--json")
    assert code == 0
    assert json.loads(out)["up_to_date"] is True
    code, out, _ = run("db", "current", "--json", env={"DRP_DB_URL": url})
    assert code == 0 and json.loads(out)["current"] == expected_head()


def test_db_downgrade_needs_confirmation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bk.sqlite'}"
    run("--db", url, "db", "upgrade")
    code, _, err = run("--db", url, "db", "downgrade", "base")
    assert code == 2 and "--yes" in err
    code, out, _ = run("--db", url, "db", "downgrade", "base", "--yes")
    assert code == 0 and "base" in out


def test_password_is_not_printed(tmp_path: Path) -> None:
    code, out, err = run("--db", "postgresql://drp:s3cret@127.0.0.1:1/x", "db", "current")
    assert code == 2  # the books cannot be reached: DatabaseUnavailableError
    assert "s3cret" not in out + err and "***" in err


def test_campaign_status_on_old_database_says_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bk.sqlite'}"
    db = Database(url)
    db.upgrade()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    db.dispose()
    code, out, err = run("--db", url, "campaign", "status", "x")
    assert code == 4
    assert "run `drp db upgrade`" in err and "Traceback" not in err + out


def test_sites_list(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(GOOD)
    code, out, _ = run("sites", "list", "--sites", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    assert [s["name"] for s in data] == ["ncsa", "ral", "in2p3"]
    assert data[0]["compute"] == {"backend": "htcondor", "schedd": "sched1.ncsa"}
    code, out, _ = run("sites", "list", "--sites", str(path))
    assert code == 0 and "in2p3" in out and "0.40" in out


def test_bad_sites_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(GOOD.replace("share = 0.35", "share = 7"))
    code, out, err = run("sites", "list", "--sites", str(path))
    assert code == 2
    assert (
        err.strip() == f"drp: error: {path}: site[1].share: Input should be less than or equal to 1 (got 7)"
    )
    assert out == ""


def test_demo_does_real_work(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    code, out, err = run("demo", "--workdir", str(workdir), "--small", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["state"] == "DONE" and result["mismatches"] == []
    assert result["verified"] == {"ncsa": result["files"], "in2p3": result["files"]} and result["files"] > 0
    assert result["jobs"] > 0 and result["attempts"] >= result["jobs"]
    assert result["validations"] > 0 and result["validations_passed"] == result["validations"]
    assert Path(result["report"]).is_file() and Path(result["report"]).name == "index.html"
    replicas = {(r["site"], r["state"]): r["files"] for r in result["status"]["replicas"]}
    assert replicas == {("ncsa", "AVAILABLE"): result["files"], ("in2p3", "AVAILABLE"): result["files"]}
    for site in ("ncsa", "in2p3"):
        stored = [p for p in (workdir / "storage" / site).rglob("*") if p.is_file()]
        assert not [p for p in stored if ".part-" in p.name]
    code, out, _ = run("--db", f"sqlite:///{workdir / 'drp.sqlite'}", "campaign", "status", "demo", "--json")
    assert code == 0 and json.loads(out)["state"] == "DONE"
    # Running it again starts afresh in the same directory.
    code, out, _ = run("demo", "--workdir", str(workdir), "--small", "--json")
    assert code == 0 and json.loads(out)["state"] == "DONE"


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    code, _, err = run("demo", "--workdir", str(tmp_path))
    assert code == 2 and "was not made by `drp demo`" in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("args", [["sites", "list", "--bogus"], ["nosuchcommand"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, _, _ = run(*args)
    assert code == 2


def test_release_generate(tmp_path: Path) -> None:
    code, out, err = run(
        "release",
        "generate",
        "--root",
        str(tmp_path),
        "--name",
        "t1",
        "--tracts",
        "1",
        "1",
        "--bands",
        "r",
        "--visits-per-band",
        "1",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["visits"] == 1 and summary["truth_rows"] > 0
    code, _, err = run("release", "generate", "--root", str(tmp_path), "--bands", "q")
    assert code == 2 and "unknown band" in err

"""`drp data`, `drp rules`, `drp transfer`: register from storage, replicate, show a stuck rule's
reason, retry, with --json and meaningful exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli


def _run(tmp: Path, *args: str) -> tuple[int, str, str]:
    env = {"DRP_DB_URL": f"sqlite:///{tmp / 'bk.sqlite'}", "DRP_SITES": str(tmp / "sites.toml")}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _setup(tmp: Path) -> None:
    for site in ("ncsa", "in2p3"):
        (tmp / site).mkdir()
    (tmp / "sites.toml").write_text(
        f"""
[[site]]
name = "ncsa"
role = "lead"
share = 0.5
storage = "file://{tmp / "ncsa"}"

[[site]]
name = "in2p3"
role = "satellite"
share = 0.5
storage = "file://{tmp / "in2p3"}"

[transfer]
retries = 1
backoff_s = 0
"""
    )
    raw = tmp / "ncsa" / "raw" / "tract0001"
    raw.mkdir(parents=True)
    for i in range(4):
        (raw / f"visit{i}.fits").write_bytes(os.urandom(2048 + i))
    (raw / ".visit9.fits.part-123").write_bytes(b"a temporary file is never registered")
    assert _run(tmp, "db", "upgrade")[0] == 0


def test_register_replicate_and_inspect(tmp_path: Path) -> None:
    _setup(tmp_path)
    code, out, _ = _run(
        tmp_path,
        "data",
        "register",
        "--site",
        "ncsa",
        "--dataset",
        "dr1:raw/tract0001",
        "--path",
        "raw",
        "--json",
    )
    assert code == 0 and json.loads(out)["n_files"] == 4
    code, out, _ = _run(tmp_path, "rules", "add", "dr1:raw/tract0001", "site=in2p3", "--json")
    rule = json.loads(out)
    assert code == 0 and rule["state"] == "REPLICATING" and rule["sites"] == ["in2p3"]
    code, out, _ = _run(tmp_path, "transfer", "run", "--json")
    assert code == 0 and json.loads(out)["done"] == 4
    code, out, _ = _run(tmp_path, "rules", "ls", "--json")
    assert code == 0 and [r["state"] for r in json.loads(out)] == ["OK"]
    code, out, _ = _run(tmp_path, "data", "ls", "--json")
    (ds,) = json.loads(out)
    assert ds["dataset"] == "dr1:raw/tract0001" and ds["available"] == {"ncsa": 4, "in2p3": 4}
    code, out, _ = _run(tmp_path, "data", "replicas", "dr1:raw/tract0001", "--site", "in2p3", "--json")
    assert code == 0 and {r["state"] for r in json.loads(out)} == {"AVAILABLE"} and len(json.loads(out)) == 4
    code, out, _ = _run(tmp_path, "transfer", "ls", "--state", "done")
    assert code == 0 and "ncsa→in2p3" in out
    assert (tmp_path / "in2p3" / "raw/tract0001/visit2.fits").read_bytes() == (
        tmp_path / "ncsa" / "raw/tract0001/visit2.fits"
    ).read_bytes()


def test_stuck_rule_shows_reason_and_retry_recovers(tmp_path: Path) -> None:
    _setup(tmp_path)
    assert (
        _run(tmp_path, "data", "register", "--site", "ncsa", "--dataset", "dr1:raw", "--path", "raw")[0] == 0
    )
    victim = tmp_path / "ncsa" / "raw/tract0001/visit1.fits"
    saved = victim.read_bytes()
    victim.unlink()
    _run(tmp_path, "rules", "add", "dr1:raw", "site=in2p3")
    code, out, _ = _run(tmp_path, "transfer", "run")
    assert code == 1 and "1 given up" in out
    code, out, _ = _run(tmp_path, "rules", "ls")
    assert code == 1 and "STUCK" in out
    code, out, _ = _run(tmp_path, "rules", "show", "1", "--json")
    shown = json.loads(out)
    assert code == 1 and "source missing" in shown["stuck_reason"] and "visit1.fits" in shown["stuck_reason"]
    assert [t["failure"] for t in shown["transfers_not_done"]] == ["source_missing"]
    # the operator puts the file back and retries
    victim.write_bytes(saved)
    code, out, _ = _run(tmp_path, "transfer", "retry", "--rule", "1", "--json")
    assert code == 0 and json.loads(out) == {"requeued": 1}
    assert _run(tmp_path, "transfer", "run")[0] == 0
    code, out, _ = _run(tmp_path, "rules", "show", "1", "--json")
    assert code == 0 and json.loads(out)["state"] == "OK"


def test_usage_errors(tmp_path: Path) -> None:
    _setup(tmp_path)
    code, _, err = _run(
        tmp_path, "data", "register", "--site", "ncsa", "--dataset", "nocolon", "--path", "raw"
    )
    assert code == 2 and "SCOPE:NAME" in err
    code, _, err = _run(
        tmp_path, "data", "register", "--site", "ncsa", "--dataset", "a:b", "--path", "../etc"
    )
    assert code == 2 and "'..'" in err
    code, _, err = _run(tmp_path, "transfer", "retry")
    assert code == 2
    code, _, err = _run(tmp_path, "rules", "show", "99")
    assert code == 1 and "rule 99 does not exist" in err


@pytest.mark.parametrize(
    ("did", "says"),
    [
        ("scope:../../x", "starting with a letter or digit"),
        ("scope:raw/../../x", "no '..'"),
        ("scope:/abs", "starting with a letter or digit"),
        ("sc ope:raw", "dataset scope 'sc ope'"),
        ("a-scope-longer-than-twenty-five:raw", "1 to 25 characters"),
        ("dr1:raw;rm", "dataset name 'raw;rm'"),
        ("dr1:" + "x" * 251, "1 to 250 characters"),
        ("dr1:raw//x", "empty path components"),
    ],
)
def test_dataset_names_follow_rucios_did_rules(tmp_path: Path, did: str, says: str) -> None:
    _setup(tmp_path)
    code, _, err = _run(tmp_path, "data", "register", "--site", "ncsa", "--dataset", did, "--path", "raw")
    assert code == 2 and says in err and "Traceback" not in err, err
    code, out, _ = _run(tmp_path, "data", "ls", "--json")
    assert code == 0 and json.loads(out) == [], "nothing was registered"

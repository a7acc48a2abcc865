"""Failover: one site's processing is killed mid-campaign, its unfinished share moves to the other site,
the campaign completes there with every file at the surviving site and consistent books; failback gives
a site back the work its replacement has not done."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from bookkeeping.states import CampaignState, JobState, ReplicaState, RuleState
from drp import processing
from drp.campaign import CampaignDriver
from drp.failover import failback, failover
from science.synth import generate_release
from tests.test_campaign import _setup
from tests.test_local_backend import CFG
from transfer.checksum import adler32_file
from transfer.dr import status


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    generate_release(CFG, root)
    return root


def _tick_until(driver: CampaignDriver, state: str, limit: int = 100) -> None:
    for _ in range(limit):
        if driver.tick().after == state:
            return
    raise AssertionError(f"never reached {state}")


def _kill_executor(driver: CampaignDriver, site: str) -> None:
    pid_file = processing.workflow_dir(driver.cfg.workdir, driver.name, site) / "local" / "executor.pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the executor never started"
        time.sleep(0.05)
    pid = json.loads(pid_file.read_text())["pid"]
    os.kill(pid, signal.SIGKILL)


def _check_books(driver: CampaignDriver, survivor: str, root: Path) -> None:
    with driver.db.session() as s:
        files = s.execute(text("SELECT id, name, size, adler32 FROM files")).all()
        at = {
            int(f)
            for (f,) in s.execute(
                text(
                    "SELECT r.file_id FROM replicas r JOIN sites x ON x.id = r.site_id "
                    "WHERE x.name = :n AND r.state = :a"
                ),
                {"n": survivor, "a": int(ReplicaState.AVAILABLE)},
            )
        }
        copying = s.execute(
            text("SELECT count(*) FROM replicas WHERE state = :c"), {"c": int(ReplicaState.COPYING)}
        )
        active = s.execute(text("SELECT count(*) FROM transfers WHERE state IN (1, 2, 3)")).scalar_one()
        rules = s.execute(text("SELECT state, count(*) FROM rules GROUP BY state")).all()
        counts = dict(s.execute(text("SELECT state, sum(n_files) FROM replica_counts GROUP BY state")).all())
        actual = dict(s.execute(text("SELECT state, count(*) FROM replicas GROUP BY state")).all())
    assert files and {f for f, *_ in files} <= at, "every catalogued file is verified at the survivor"
    for _, name, size, adler in files:
        assert adler32_file(root / name) == (adler, size)
    assert copying.scalar_one() == 0 and active == 0
    assert {RuleState(st) for st, _ in rules} <= {RuleState.OK, RuleState.SUSPENDED}
    assert counts == actual, "replica_counts still exact"


def test_failover_mid_campaign_completes_at_the_surviving_site(tmp_path: Path, pristine: Path) -> None:
    driver = _setup(tmp_path, pristine)
    _tick_until(driver, "PROCESSING")
    driver.tick()  # submits both sites' DAGs (detached)
    _kill_executor(driver, "in2p3")
    report = failover(driver, "in2p3", "ncsa")
    assert report.tracts_moved and report.state_after == "REPLICATING"
    with driver.db.session() as s:
        assert s.execute(text("SELECT available FROM sites WHERE name = 'in2p3'")).scalar_one() in (0, False)
        plan = s.execute(text("SELECT max(version) FROM split_plans")).scalar_one()
    assert plan == report.plan_version == 2
    result = driver.run(max_ticks=300)
    assert result.after == "DONE", result
    _check_books(driver, "ncsa", tmp_path / "ncsa")
    with driver.db.session() as s:
        jobs = s.execute(
            text(
                "SELECT x.name, j.state, count(*) FROM jobs j JOIN sites x ON x.id = j.site_id GROUP BY 1, 2"
            )
        ).all()
        st = status(s)
        outputs = {
            int(n.removeprefix("outputs.tract"))
            for (n,) in s.execute(text("SELECT name FROM datasets WHERE name LIKE 'outputs.tract%'"))
        }
        moved_done = s.execute(
            text(
                "SELECT count(*) FROM jobs j JOIN sites x ON x.id = j.site_id WHERE x.name = 'ncsa' "
                "AND j.state = :ok AND j.data_id LIKE :t"
            ),
            {"ok": int(JobState.SUCCEEDED), "t": f'%"tract":{report.tracts_moved[0]}%'},
        ).scalar_one()
    states = {(site, JobState(state)) for site, state, _ in jobs}
    assert ("ncsa", JobState.SUCCEEDED) in states and all(
        st_ in (JobState.SUCCEEDED, JobState.CANCELLED) for _, st_ in states
    ), jobs
    assert all(st_ is JobState.SUCCEEDED for site, st_ in states if site == "ncsa")
    assert moved_done > 0, "ncsa processed a moved tract"
    assert set(report.tracts_moved) <= outputs, "the moved tracts' outputs are in the release"
    assert st.sites == {"in2p3": False, "ncsa": True}


def test_failback_before_processing_gives_the_share_back(tmp_path: Path, pristine: Path) -> None:
    driver = _setup(tmp_path, pristine)
    _tick_until(driver, "REPLICATING")
    with driver.db.session() as s:
        original = dict(s.execute(text("SELECT tract, site_id FROM assignments WHERE NOT overlap")).all())
    from click.testing import CliRunner

    from cli import cli

    env = {"DRP_DB_URL": f"sqlite:///{tmp_path / 'bk.sqlite'}"}
    args = ["dr", "failover", str(tmp_path / "campaign.toml"), "--from", "in2p3", "--to", "ncsa"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    preview = json.loads(dry.stdout)
    nothing = CliRunner().invoke(
        cli, ["dr", "failback", str(tmp_path / "campaign.toml"), "--site", "in2p3"], env=env
    )
    assert nothing.exit_code == 1 and "no active failover" in nothing.output
    fo = failover(driver, "in2p3", "ncsa")
    assert fo.tracts_moved and not fo.tracts_kept and fo.tracts_moved == preview["tracts_moved"]
    with pytest.raises(Exception, match="failed over"):
        failover(driver, "ncsa", "in2p3")
    back = failback(driver, "in2p3")
    assert sorted(back.tracts_moved) == sorted(fo.tracts_moved) and back.plan_version == 3
    with driver.db.session() as s:
        plan3 = dict(
            s.execute(
                text(
                    "SELECT a.tract, a.site_id FROM assignments a JOIN split_plans p ON p.id = a.plan_id "
                    "WHERE p.version = 3 AND NOT a.overlap"
                )
            ).all()
        )
    assert plan3 == original
    assert driver.run(max_ticks=300).after == "DONE"
    _check_books(driver, "in2p3", tmp_path / "in2p3")
    with driver.db.session() as s:
        validated = s.execute(text("SELECT count(*) FROM validations")).scalar_one()
        phase = s.execute(text("SELECT state FROM campaigns")).scalar_one()
    assert validated > 0 and CampaignState(phase) is CampaignState.DONE

"""The campaign driver end to end on a tiny release: plan → register → replicate → process → collect →
validate → consolidate → DONE; every site holds every catalogued file, verified; every job profiled;
the overlap validated. Ticks are exclusive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from bookkeeping.database import Database
from drp.campaign import CampaignDriver
from drp.campaign_config import load_campaign
from drp.locking import CampaignBusy, campaign_lock
from science.synth import generate_release
from sites.catalogue import load_catalogue
from tests.test_local_backend import CFG
from transfer.checksum import adler32_file


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    generate_release(CFG, root)
    return root


def _setup(tmp: Path, pristine: Path) -> CampaignDriver:
    shutil.copytree(pristine, tmp / "ncsa")
    (tmp / "in2p3").mkdir()
    (tmp / "sites.toml").write_text(
        f"""
[[site]]
name = "ncsa"
role = "lead"
share = 0.5
storage = "file://{tmp / "ncsa"}"
[site.compute]
backend = "local"
max_workers = 2

[[site]]
name = "in2p3"
role = "satellite"
share = 0.5
storage = "file://{tmp / "in2p3"}"
[site.compute]
backend = "local"
max_workers = 2

[transfer]
backoff_s = 0
"""
    )
    (tmp / "campaign.toml").write_text(
        """
[campaign]
name = "c1"
release = "tiny"

[split]
overlap = [0]

[ticks]
transfer_seconds = 30
poll_seconds = 0.2
"""
    )
    cfg = load_campaign(tmp / "campaign.toml")
    db = Database(f"sqlite:///{tmp / 'bk.sqlite'}")
    db.upgrade()
    driver = CampaignDriver(db, cfg, load_catalogue(cfg.sites_path))
    assert driver.create() is True and driver.create() is False
    return driver


def test_campaign_end_to_end(tmp_path: Path, pristine: Path) -> None:
    driver = _setup(tmp_path, pristine)
    seen: list[str] = []
    result = driver.run(max_ticks=200, on_tick=lambda r: seen.append(r.after))
    assert result.after == "DONE", (result, seen)
    assert seen[:3] == ["PLANNED", "REGISTERED", "REPLICATING"] and "VALIDATING" in seen
    db = driver.db
    with db.session() as s:
        files = s.execute(text("SELECT name, size, adler32 FROM files")).all()
        sites = dict(s.execute(text("SELECT name, id FROM sites")).all())
        not_available = s.execute(text("SELECT count(*) FROM replicas WHERE state <> 1")).scalar_one()
        per_site = dict(s.execute(text("SELECT site_id, count(*) FROM replicas GROUP BY site_id")).all())
        jobs_without_attempt = s.execute(
            text(
                "SELECT count(*) FROM jobs j "
                "WHERE NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id)"
            )
        ).scalar_one()
        n_jobs = s.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        validations = s.execute(
            text("SELECT count(*), sum(CASE WHEN passed THEN 1 ELSE 0 END) FROM validations")
        ).one()
    assert not_available == 0 and per_site == {sites["ncsa"]: len(files), sites["in2p3"]: len(files)}
    for site in ("ncsa", "in2p3"):
        for name, size, adler in files:
            assert adler32_file(tmp_path / site / name) == (adler, size), (site, name)
    assert n_jobs > 0 and jobs_without_attempt == 0
    # beside each workflow, its inputs as the books hold them at the site (a planner's replica catalogue)
    from drp.processing import workflow_dir
    from science.workflow import WorkflowSpec

    catalogued = {name: (size, adler) for name, size, adler in files}
    for site in ("ncsa", "in2p3"):
        spec = WorkflowSpec.load(workflow_dir(driver.cfg.workdir, "c1", site))
        nodes = list(spec.nodes())
        external = {i for n in nodes for i in n.inputs} - {o for n in nodes for o in n.outputs}
        inputs = json.loads((spec.directory / "inputs.json").read_text())
        assert set(inputs) == external, site
        assert all((v["size"], v["adler32"]) == catalogued[k] for k, v in inputs.items())
    assert validations[0] > 0 and validations[0] == validations[1]
    assert driver.tick().after == "DONE" and driver.tick().exit_code == 0  # idempotent at the end
    from bookkeeping.queries import campaign_status

    with db.session() as s:
        status = campaign_status(s, "c1").to_dict()
    assert [p["phase"] for p in status["phases"]][:3] == ["CREATED", "PLANNED", "REGISTERED"]
    assert status["phases"][-1]["phase"] == "DONE" and all(p["failures"] == 0 for p in status["phases"])
    assert {(st["site"], st["step"]) for st in status["steps"]} >= {("ncsa", "merge"), ("in2p3", "merge")}
    assert all(st["attempts"] > 0 and st["seconds"] is not None for st in status["steps"])
    assert status["data_path"] == "embedded rules; satdrp's transfer engine copies (the link's mover)"
    from drp.report import build_report

    report = build_report(db, driver.cfg, driver.catalogue)
    page = report.html.read_text()
    for image in ("skymap", "jobs", "transfers", "accuracy", "overlap"):
        assert (report.directory / f"{image}.png").stat().st_size > 1000 and f"{image}.png" in page
    assert report.data["validations"] and all(v["passed"] for v in report.data["validations"])
    assert report.data["accuracy"]["n_matched"] > 0 and "DONE" in page
    (overlap,) = status["validations"]
    assert overlap["tract"] == 0 and overlap["sites"] == "ncsa,in2p3" and overlap["checks"] > 5
    assert overlap["failed"] == 0


def test_second_tick_exits_cleanly_while_one_runs(tmp_path: Path, pristine: Path) -> None:
    driver = _setup(tmp_path, pristine)
    with campaign_lock(driver.cfg.workdir, "c1"):
        with pytest.raises(CampaignBusy) as info:
            driver.tick()
    assert info.value.exit_code == 0
    assert driver.tick().after == "PLANNED"


def _snapshot(db: Database) -> dict[str, object]:
    with db.session() as s:
        return {
            "files": sorted(s.execute(text("SELECT name, size, adler32 FROM files")).all()),
            "replicas": sorted(
                s.execute(
                    text("SELECT f.name, r.site_id, r.state FROM replicas r JOIN files f ON f.id = r.file_id")
                ).all()
            ),
            "jobs": sorted(s.execute(text("SELECT site_id, step, data_id, state FROM jobs")).all()),
            "rules": sorted(s.execute(text("SELECT dataset_id, site_expression, state FROM rules")).all()),
            "state": s.execute(text("SELECT state FROM campaigns")).scalar_one(),
        }


@pytest.mark.parametrize("kill_in", ["REPLICATING", "PROCESSING", "VALIDATING", "CONSOLIDATING"])
def test_kill_9_of_run_then_run_again(tmp_path: Path, pristine: Path, kill_in: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    ref_dir.mkdir()
    kill_dir.mkdir()
    reference = _setup(ref_dir, pristine)
    assert reference.run(max_ticks=200).after == "DONE"
    driver = _setup(kill_dir, pristine)
    env = {**os.environ, "DRP_DB_URL": driver.db.url}
    cmd = [
        sys.executable,
        "-c",
        "from cli import main; main()",
        "campaign",
        "run",
        str(kill_dir / "campaign.toml"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if driver.campaign().state.name == kill_in:
                time.sleep(0.3)  # let it get into the phase's work
                break
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    mine, ref = _snapshot(driver.db), _snapshot(reference.db)
    assert mine["state"] == ref["state"] == 9  # DONE
    assert mine == ref
    for site in ("ncsa", "in2p3"):  # storage holds what an uninterrupted run's does: no leftovers
        assert _stored(kill_dir / site) == _stored(ref_dir / site), site
        assert not [p for p in (kill_dir / site).rglob(".*") if p.is_file()], site


def _stored(root: Path) -> set[str]:
    """Every file under a site root but the job logs and reports (a killed run has more attempts)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "jobs" not in p.parts}


def scale_r_flux(site: Path, factor: float) -> tuple[Path, object]:
    """A zero-point fault in a site's tract-0 r fluxes; returns the table's path and its good copy."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = site / "tiny/objectTable/tract0000.parquet"
    good = pq.read_table(path)
    i = good.column_names.index("r_psfFlux")
    pq.write_table(good.set_column(i, "r_psfFlux", pa.array(np.asarray(good["r_psfFlux"]) * factor)), path)
    return path, good


def _run_until(driver: CampaignDriver, state: str) -> None:
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if driver.campaign().state.name == state:
            return
        if driver.tick().after == driver.campaign().state.name:
            time.sleep(0.2)
    raise AssertionError(f"never reached {state}")


def test_zero_point_error_at_one_site_fails_validation_by_name(tmp_path: Path, pristine: Path) -> None:
    import pyarrow.parquet as pq

    driver = _setup(tmp_path, pristine)
    _run_until(driver, "VALIDATING")
    table_path, t = scale_r_flux(tmp_path / "in2p3", 1.01)
    result = driver.tick()
    assert result.after == "FAILED" and result.exit_code == 1
    assert "tract 0 ncsa vs in2p3: flux_bias_mmag[r]" in result.message, result.message
    assert "[g]" not in result.message
    with driver.db.session() as s:
        failed = s.execute(text("SELECT tract, sites, quantity FROM validations WHERE NOT passed")).all()
    assert ("flux_bias_mmag[r]" in {q for _, _, q in failed}) and {(t, s) for t, s, _ in failed} == {
        (0, "ncsa,in2p3")
    }
    # the operator repairs the site's output and retries: validation passes and the campaign completes
    pq.write_table(t, table_path)
    assert "back to VALIDATING" in driver.retry()
    assert driver.run(max_ticks=100).after == "DONE"


def test_missing_patch_at_one_site_fails_validation_by_name(tmp_path: Path, pristine: Path) -> None:
    driver = _setup(tmp_path, pristine)
    _run_until(driver, "VALIDATING")
    for path in (tmp_path / "in2p3" / "tiny/coadd/tract0000/patch001").glob("*.fits"):
        path.unlink()
    result = driver.tick()
    assert result.after == "FAILED"
    assert (
        "tract 0 ncsa vs in2p3: coadd_pull_rms[g]" in result.message
        and "patch 1 missing at in2p3" in result.message
    )


def test_tick_with_rucio_down_exits_3_with_the_reason_and_changes_nothing(
    tmp_path: Path, pristine: Path
) -> None:
    """A Rucio server that does not answer is not a failure of the campaign: the tick says why, exits 3
    (in progress) and leaves the state for the next tick; nothing is registered meanwhile."""
    import socket

    from click.testing import CliRunner

    from cli import cli

    pytest.importorskip("rucio.client", reason="needs satdrp[rucio] (installed by make test)")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = _setup(tmp_path, pristine)
    sites = tmp_path / "sites.toml"
    sites.write_text(
        sites.read_text() + f'\n[replication]\nbackend = "rucio"\nhost = "http://127.0.0.1:{port}"\n'
        'username = "ddmlab"\npassword = "secret"\n'
    )
    env = {"DRP_DB_URL": f"sqlite:///{tmp_path / 'bk.sqlite'}"}
    runner = CliRunner()
    states = []
    for _ in range(3):
        out = runner.invoke(cli, ["campaign", "tick", str(tmp_path / "campaign.toml"), "--json"], env=env)
        assert out.exit_code == 3, out.output
        states.append(json.loads(out.output))
    assert states[-1]["before"] == states[-1]["after"] == "PLANNED"
    assert f"Rucio at http://127.0.0.1:{port} cannot be reached" in states[-1]["message"]
    assert "waiting" in states[-1]["message"] and "secret" not in out.output
    with driver.db.session() as s:
        assert s.execute(text("SELECT count(*) FROM files")).scalar_one() == 0


def test_a_truncated_raw_fails_registration_by_name_and_nothing_is_registered(
    tmp_path: Path, pristine: Path
) -> None:
    """Raw files are checked when they enter: one truncated exposure fails the tick with its name, no
    file at all is catalogued; restored, `campaign retry` registers the release."""
    driver = _setup(tmp_path, pristine)
    raws = sorted((tmp_path / "ncsa").glob("tiny/raw/*/visit*.fits"))
    victim = raws[0]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])
    assert driver.tick().after == "PLANNED"
    failed = driver.tick()
    assert failed.after == "FAILED"
    assert str(victim) in failed.message and "nothing registered" in failed.message
    with driver.db.session() as s:
        assert s.execute(text("SELECT count(*) FROM files")).scalar_one() == 0
    victim.write_bytes(good)
    assert driver.retry() == "c1: back to PLANNED"
    assert driver.tick().after == "REGISTERED"
    with driver.db.session() as s:
        assert s.execute(text("SELECT count(*) FROM files")).scalar_one() > len(raws) // 2


@pytest.mark.parametrize(
    ("flag", "file_mode", "dir_mode"), [([], 0o600, 0o700), (["--group-readable"], 0o640, 0o750)]
)
def test_operators_files_are_private_unless_group_readable(
    tmp_path: Path, pristine: Path, flag: list[str], file_mode: int, dir_mode: int
) -> None:
    """The database, lock files, metrics textfile and report: 0600/0700 by default whatever the umask
    allows (022 here), 0640/0750 with --group-readable."""
    import os
    import stat

    from click.testing import CliRunner

    from cli import cli

    driver = _setup(tmp_path, pristine)
    db_file = tmp_path / "ops.sqlite"
    env = {"DRP_DB_URL": f"sqlite:///{db_file}"}
    old = os.umask(0o022)
    try:
        runner = CliRunner()
        assert runner.invoke(cli, [*flag, "db", "upgrade"], env=env).exit_code == 0
        toml = str(tmp_path / "campaign.toml")
        textfile = tmp_path / "metrics" / "drp.prom"
        out = runner.invoke(cli, [*flag, "campaign", "tick", toml, "--textfile", str(textfile)], env=env)
        assert out.exit_code == 3, out.output
        assert runner.invoke(cli, [*flag, "campaign", "report", toml], env=env).exit_code == 0
    finally:
        os.umask(old)
    work = driver.cfg.workdir
    report = work / "reports" / "c1"
    files = [db_file, work / "locks" / "c1.lock", textfile, report / "index.html", report / "report.json"]
    dirs = [work / "locks", textfile.parent, report]
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        str(p): oct(file_mode) for p in files
    }
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs} == {
        str(p): oct(dir_mode) for p in dirs
    }
    # the work directory holds the workflow directories, which a batch system's job account reads
    assert oct(stat.S_IMODE(work.stat().st_mode)) == oct(0o755)

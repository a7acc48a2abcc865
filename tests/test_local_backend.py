"""The local back-end end to end on a tiny release: reports ingested, resume after kill -9, retries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.jobs import job_detail, step_profiles
from cli import cli
from drp import processing
from science.pipeline.jobs import job_name
from science.synth import generate_release
from science.workflow import WorkflowSpec
from sites.catalogue import SiteCatalogue
from sites.compute import NodeState, RunState, get_backend
from sites.compute.local import LocalBackend, run_dir
from tests.fault_injection import TINY

CFG = TINY


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    generate_release(CFG, root)
    return root


def _catalogue(tmp: Path, release: Path, **compute: object) -> SiteCatalogue:
    sites = []
    for name, role in (("ncsa", "lead"), ("in2p3", "satellite")):
        shutil.copytree(release, tmp / name)
        sites.append(
            {
                "name": name,
                "role": role,
                "share": 0.5,
                "storage": f"file://{tmp / name}",
                "compute": {"backend": "local", "max_workers": 2, **compute},
            }
        )
    return SiteCatalogue.model_validate({"site": sites})


def _reports(root: Path) -> list[Path]:
    return sorted(root.glob("tiny/jobs/*/*.json"))


def test_tiny_release_runs_with_every_report_ingested(db: Database, release: Path, tmp_path: Path) -> None:
    cat = _catalogue(tmp_path, release)
    processing.plan_campaign(db, "c1", "tiny", cat, overlap=[0])
    site = cat.get("ncsa")
    report, ingested = processing.run(db, "c1", site, tmp_path / "ncsa", tmp_path / "work")
    assert report.state is RunState.SUCCEEDED
    spec = WorkflowSpec.load(processing.workflow_dir(tmp_path / "work", "c1", "ncsa"))
    n_jobs = spec.summary["n_jobs"]
    assert ingested.attempts == n_jobs == len(_reports(tmp_path / "ncsa"))
    with db.session() as session:
        states = session.execute(text("SELECT state, count(*) FROM jobs GROUP BY state")).all()
        assert [tuple(r) for r in states] == [(5, n_jobs)]  # all SUCCEEDED
        bad = session.execute(
            text("SELECT count(*) FROM attempts WHERE exit_code <> 0 OR peak_rss <= 0 OR cpu_user IS NULL")
        ).scalar_one()
        assert bad == 0
        profiles = step_profiles(session, "c1")
        assert [p.step for p in profiles] == ["calibrate", "warp", "coadd", "measure", "merge"]
        assert all(p.attempts > 0 and p.peak_rss_max > 10 * 2**20 and p.cpu_s > 0 for p in profiles)
        (merge,) = job_detail(session, "c1", "merge", {"tract": 0}, name_of=job_name)
        assert merge.job.state == "SUCCEEDED" and merge.attempts[0].exit_code == 0
    # a second run re-runs nothing and ingests nothing twice
    report, ingested = processing.run(db, "c1", site, tmp_path / "ncsa", tmp_path / "work")
    assert report.state is RunState.SUCCEEDED and ingested.attempts == 0
    assert len(_reports(tmp_path / "ncsa")) == n_jobs
    # the operator's commands read the same books
    env = {"DRP_DB_URL": db.url}
    res = CliRunner().invoke(cli, ["jobs", "ls", "--campaign", "c1", "--step", "merge", "--json"], env=env)
    assert res.exit_code == 0 and [j["name"] for j in json.loads(res.output)] == ["merge_t0"]
    res = CliRunner().invoke(cli, ["jobs", "logs", "--campaign", "c1", "merge_t0", "--json"], env=env)
    assert res.exit_code == 0 and '"n_primary"' in json.loads(res.output)["stdout"]["text"]
    res = CliRunner().invoke(cli, ["plan", "show", "--campaign", "c1", "--json"], env=env)
    plan = json.loads(res.output)
    assert plan["site_tracts"]["ncsa"] == list(spec.tracts) and plan["overlap"] == [0]


def test_resume_after_kill_reruns_only_unfinished_jobs(release: Path, tmp_path: Path) -> None:
    cat = _catalogue(tmp_path, release)
    db = Database(f"sqlite:///{tmp_path / 'b.sqlite'}")
    db.upgrade()
    processing.plan_campaign(db, "c1", "tiny", cat, overlap=[0])
    site = cat.get("ncsa")
    report, _ = processing.run(db, "c1", site, tmp_path / "ncsa", tmp_path / "work", wait=False)
    assert report.state is RunState.RUNNING
    spec = WorkflowSpec.load(processing.workflow_dir(tmp_path / "work", "c1", "ncsa"))
    pid = int(report.run_id or 0)
    deadline = time.monotonic() + 60
    while len(_reports(tmp_path / "ncsa")) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    before = {p.name for p in _reports(tmp_path / "ncsa")}
    assert 10 <= len(before) < spec.summary["n_jobs"], "killed mid-run"
    backend = get_backend("local", {"max_workers": 2})
    polled = backend.poll(spec)
    assert polled.state is RunState.FAILED and "restart resumes" in polled.message
    report, ingested = processing.run(db, "c1", site, tmp_path / "ncsa", tmp_path / "work", restart=True)
    assert report.state is RunState.SUCCEEDED
    after = _reports(tmp_path / "ncsa")
    assert ingested.attempts == len(after), "every report ingested, including those from before the kill"
    names = [p.name.rsplit(".", 2)[0] for p in after]
    finished_before = {n.rsplit(".", 2)[0] for n in before}
    assert all(names.count(n) == 1 for n in finished_before), "a job finished before the kill ran again"
    assert len(set(names)) == spec.summary["n_jobs"]
    with db.session() as session:
        assert session.execute(text("SELECT count(*) FROM jobs WHERE state <> 5")).scalar_one() == 0


def test_retry_unless_exit(release: Path, tmp_path: Path) -> None:
    cat = _catalogue(tmp_path, release)
    root = tmp_path / "ncsa"
    (root / "tiny" / "raw" / "g" / "visit001000.fits").write_bytes(b"SIMPLE  = garbage")
    db = Database(f"sqlite:///{tmp_path / 'c.sqlite'}")
    db.upgrade()
    processing.plan_campaign(db, "c1", "tiny", cat, overlap=[0])
    report, _ = processing.run(db, "c1", cat.get("ncsa"), root, tmp_path / "work")
    assert report.state is RunState.FAILED
    reports = sorted((root / "tiny/jobs/calibrate").glob("calibrate_v001000.*.json"))
    assert len(reports) == 1, "exit 2 (bad input) is in retry_unless_exit: not retried"
    data = json.loads(reports[0].read_text())
    assert data["exit_code"] == 2 and not data["will_retry"] and "truncated" in data["error"]
    # with exit 2 retryable, the job is run 1 + retries times
    spec = WorkflowSpec.load(processing.workflow_dir(tmp_path / "work", "c1", "ncsa"))
    backend = get_backend("local", {"max_workers": 2, "retries": 2, "retry_unless_exit": []})
    assert isinstance(backend, LocalBackend)
    assert backend.restart(spec, wait=True).state is RunState.FAILED
    assert len(list((root / "tiny/jobs/calibrate").glob("calibrate_v001000.*.json"))) == 1 + 3
    with db.session() as session:
        ingested = processing.ingest(session, "c1", "ncsa", spec)
        assert ingested.attempts > 0
        (detail,) = job_detail(session, "c1", "calibrate", {"visit": 1000}, name_of=job_name)
        assert detail.job.state == "FAILED" and len(detail.attempts) == 4
        assert all(a.exit_code == 2 and "truncated" in (a.error or "") for a in detail.attempts)
    state = json.loads((run_dir(spec) / "state.json").read_text())
    assert state["state"] == "failed" and state["counts"]["calibrate"]["failed"] == 1


def test_sigterm_cancels_cleanly(release: Path, tmp_path: Path) -> None:
    cat = _catalogue(tmp_path, release, grace_s=2)
    db = Database(f"sqlite:///{tmp_path / 'd.sqlite'}")
    db.upgrade()
    processing.plan_campaign(db, "c1", "tiny", cat, overlap=[0])
    site = cat.get("ncsa")
    processing.run(db, "c1", site, tmp_path / "ncsa", tmp_path / "work", wait=False)
    deadline = time.monotonic() + 60
    while len(_reports(tmp_path / "ncsa")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    report = processing.cancel("c1", site, tmp_path / "work")
    assert report.state is RunState.CANCELLED
    assert report.total(NodeState.RUNNING) == 0 and report.total(NodeState.SUCCEEDED) >= 3
    processing.run(db, "c1", site, tmp_path / "ncsa", tmp_path / "work", restart=True)
    with db.session() as session:
        assert session.execute(text("SELECT count(*) FROM jobs WHERE state <> 5")).scalar_one() == 0

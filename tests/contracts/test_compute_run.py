"""The compute contract, running: the same scenarios and the same assertions on ``local`` (a process
pool here) and ``htcondor`` (DAGMan on the real pool the suite starts, jobs as an unprivileged user).

Every job is ``tests/compute_job.py`` told by a plan file how to behave (fail, kill itself, sleep,
burn CPU), so the scenarios exercise the back-ends, not the pipeline: success, a failing job with
retries and one that is not retried (``retry_unless_exit``), a job killed by a signal, a driver
killed with SIGKILL and resumed, cancel and restart, and the job reports (profiles) they leave.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from instrumentation.profiler import JobReport, read_report
from science.layout import Layout
from science.pipeline.jobs import ReleaseContext
from science.synth import ReleaseConfig, plan_manifest
from science.workflow import Node, WorkflowSpec, write_workflow
from sites.compute import ComputeBackend, NodeState, RunState, get_backend

SMALL = ReleaseConfig(name="plan", bands=("g",), visits_per_band=2)  # 35 jobs, every step
JOB = Path(__file__).resolve().parent.parent / "compute_job.py"
DRIVER = """
import json, sys
from science.workflow import WorkflowSpec
from sites.compute import get_backend
be = get_backend(sys.argv[1], json.loads(sys.argv[2]))
print(be.submit(WorkflowSpec.load(__import__("pathlib").Path(sys.argv[3])), wait=True).state, flush=True)
"""


@dataclass
class Scenario:
    backend_name: str
    spec: WorkflowSpec
    settings: dict[str, Any]
    plan_file: Path
    plan: dict[str, Any]

    def backend(self, **extra: Any) -> ComputeBackend:
        return get_backend(self.backend_name, {**self.settings, **extra})

    def set_plan(self, **changes: Any) -> None:
        self.plan.update(changes)
        self.plan_file.write_text(json.dumps(self.plan))

    def nodes(self, step: str | None = None) -> list[Node]:
        return [n for n in self.spec.nodes() if step is None or n.step == step]

    def reports(self, node: Node) -> list[JobReport]:
        d = self.spec.root / Layout(self.spec.release).job_dir(node.step)
        found = sorted(d.glob(f"{node.name}.*.json"), key=lambda p: int(p.stem.rsplit(".", 1)[1]))
        return [read_report(p) for p in found]

    def all_reports(self) -> dict[str, list[JobReport]]:
        return {n.name: self.reports(n) for n in self.nodes()}


@pytest.fixture(params=["local", "htcondor"])
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Scenario:
    name = request.param
    if name == "htcondor":
        pool = request.getfixturevalue("condor_pool")
        base: Path = request.getfixturevalue("condor_workspace")
        settings: dict[str, Any] = {
            "schedd": "127.0.0.1:9618",  # the collector behind the shared port: the schedd is located
            "dagman": "/usr/bin/condor_dagman",  # on the schedd's host (the chroot); not on this PATH
            "job_user": str(pool.uid),
            "poll_interval_s": 0.5,
        }
    else:
        base = tmp_path
        settings = {"max_workers": 2, "preload": False, "grace_s": 2.0}
    ctx = ReleaseContext(base / "root", "plan", plan_manifest(SMALL))
    spec = write_workflow(ctx, "in2p3", [0], base / "wf")
    state = base / "state"
    state.mkdir()
    os.chmod(state, 0o777)  # the job user (HTCondor) counts its runs here
    plan_file = base / "plan.json"
    plan: dict[str, Any] = {
        "state": str(state),
        "outputs": {n.name: [str(spec.root / o) for o in n.outputs] for n in spec.nodes()},
    }
    plan_file.write_text(json.dumps(plan))
    settings |= {"retries": 2, "command": [sys.executable, str(JOB), str(plan_file)]}
    return Scenario(name, spec, settings, plan_file, plan)


def _runs(s: Scenario, node: Node) -> int:
    f = Path(s.plan["state"]) / f"{node.name}.runs"
    return len(f.read_text().splitlines()) if f.exists() else 0


def test_success_runs_every_job_once_and_profiles_it(scenario: Scenario) -> None:
    s = scenario
    busy = s.nodes("coadd")[0]
    s.set_plan(cpu_s={busy.name: 0.5})
    report = s.backend().submit(s.spec, wait=True)
    assert report.state is RunState.SUCCEEDED, report
    assert s.backend().poll(s.spec).state is RunState.SUCCEEDED
    fields = set(JobReport.__dataclass_fields__)
    for node in s.nodes():
        reports = s.reports(node)
        assert [r.succeeded for r in reports] == [True], node.name
        r = reports[0]
        assert set(r.to_dict()) >= fields
        assert (r.job, r.step, r.data_id, r.attempt) == (node.name, node.step, node.data_id, 1)
        assert r.wall_seconds > 0 and r.usage.peak_rss_bytes > 0 and r.host
        assert all((s.spec.root / o).is_file() for o in node.outputs)
    hot = s.reports(busy)[0]
    assert hot.usage.cpu_user + hot.usage.cpu_sys >= 0.4, "CPU of the job's process tree is measured"


def test_failures_are_retried_unless_their_exit_code_says_not(scenario: Scenario) -> None:
    s = scenario
    flaky, bad = s.nodes("calibrate")[:2]
    s.set_plan(fail={flaky.name: [1, 1], bad.name: [99, 2]})
    report = s.backend().submit(s.spec, wait=True)
    assert report.state is RunState.FAILED
    assert [(r.exit_code, r.succeeded) for r in s.reports(flaky)] == [(1, False), (0, True)]
    assert [r.exit_code for r in s.reports(bad)] == [2], "exit 2 is in retry_unless_exit: not retried"
    blocked = [n for n in s.nodes() if bad.name in n.parents]
    assert blocked and all(_runs(s, n) == 0 for n in blocked), "children of a failed job never start"
    counts = s.backend().poll(s.spec).counts
    assert counts["calibrate"].get(NodeState.FAILED.value) == 1
    # the operator fixes the input; a restart runs what did not succeed, nothing else
    s.set_plan(fail={})
    runs_before = {n.name: _runs(s, n) for n in s.nodes()}
    report = s.backend().restart(s.spec, wait=True)
    assert report.state is RunState.SUCCEEDED, report
    for n in s.nodes():
        if runs_before[n.name] and n.name != bad.name:
            assert _runs(s, n) == runs_before[n.name], f"{n.name} succeeded before and was run again"
    assert [r.exit_code for r in s.reports(bad)] == [2, 0]


def test_a_job_killed_by_a_signal_is_reported_and_retried(scenario: Scenario) -> None:
    s = scenario
    victim = s.nodes("warp")[0]
    s.set_plan(signal={victim.name: [1, signal.SIGKILL]})
    report = s.backend().submit(s.spec, wait=True)
    assert report.state is RunState.SUCCEEDED, report
    first, second = s.reports(victim)
    assert (first.signal, first.exit_code, first.succeeded) == (signal.SIGKILL, None, False)
    assert second.succeeded and second.attempt == 2


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _successes(s: Scenario) -> int:
    return sum(1 for reports in s.all_reports().values() if any(r.succeeded for r in reports))


def test_a_driver_killed_mid_run_is_resumed_without_rerunning_jobs(scenario: Scenario) -> None:
    s = scenario
    s.set_plan(sleep_all=0.2)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, s.backend_name, json.dumps(s.settings), str(s.spec.directory)],
        cwd=Path(__file__).resolve().parent.parent.parent,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _successes(s) >= 10, 120, "10 jobs to finish")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    report = s.backend().submit(s.spec, wait=True)  # a new driver: resumes (local) or re-attaches (DAGMan)
    assert report.state is RunState.SUCCEEDED, report
    for name, reports in s.all_reports().items():
        assert sum(r.succeeded for r in reports) == 1, f"{name}: {[r.attempt for r in reports]}"


def test_cancel_stops_the_run_and_restart_finishes_it(scenario: Scenario) -> None:
    s = scenario
    s.set_plan(sleep_all=1.5)
    be = s.backend()
    started = be.submit(s.spec, wait=False)
    assert started.state is RunState.RUNNING
    _wait_for(lambda: _successes(s) >= 2, 120, "two jobs to finish")
    report = be.cancel(s.spec)
    assert report.state is RunState.CANCELLED, report
    assert be.poll(s.spec).state is RunState.CANCELLED, "cancelled stays cancelled"
    done_at_cancel = _successes(s)
    time.sleep(3)
    assert _successes(s) == done_at_cancel, "no job finishes after the cancel"
    runs_before = {n.name: _runs(s, n) for n in s.nodes()}
    succeeded_before = {n for n, rs in s.all_reports().items() if any(r.succeeded for r in rs)}
    s.set_plan(sleep_all=0)
    report = s.backend().restart(s.spec, wait=True)
    assert report.state is RunState.SUCCEEDED, report
    for n in s.nodes():
        if n.name in succeeded_before:
            assert _runs(s, n) == runs_before[n.name], f"{n.name} succeeded before the cancel and ran again"

"""The htcondor back-end on the real pool: what only a real schedd and DAGMan show.

Each test here failed against the back-end as it was before it met a pool: a submitting host
without condor_dagman, with no HTCondor config file (the bindings set ``CONDOR_CONFIG=/dev/null``)
and submitting from another directory; memory holds released with a raised request that a restart
keeps; per-step MAXJOBS; the doctor's probe finding the schedd through the collector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from common.probes import Health
from instrumentation.profiler import read_report
from science.layout import Layout
from science.pipeline.jobs import ReleaseContext
from science.synth import ReleaseConfig, plan_manifest
from science.workflow import Node, WorkflowSpec, write_workflow
from sites.compute import RunState, get_backend
from sites.compute.htcondor import HTCondorBackend
from sites.compute.htcondor_events import DagmanEnd, dagman_outcome

SMALL = ReleaseConfig(name="plan", bands=("g",), visits_per_band=2)  # 35 jobs, every step
JOB = Path(__file__).resolve().parent / "compute_job.py"
CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spec(condor_workspace: Path) -> WorkflowSpec:
    ctx = ReleaseContext(condor_workspace / "root", "plan", plan_manifest(SMALL))
    return write_workflow(ctx, "in2p3", [0], condor_workspace / "wf")


def _plan(spec: WorkflowSpec, work: Path, **behaviour: Any) -> list[str]:
    state = work / "state"
    state.mkdir(exist_ok=True)
    os.chmod(state, 0o777)
    plan = {
        "state": str(state),
        "outputs": {n.name: [str(spec.root / o) for o in n.outputs] for n in spec.nodes()},
        **behaviour,
    }
    (work / "plan.json").write_text(json.dumps(plan))
    return [sys.executable, str(JOB), str(work / "plan.json")]


def _settings(pool: Any, command: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "schedd": "127.0.0.1:9618",
        "dagman": "/usr/bin/condor_dagman",
        "job_user": str(pool.uid),
        "poll_interval_s": 0.5,
        "command": command,
        **extra,
    }


def _reports(spec: WorkflowSpec, node: Node) -> list[Any]:
    d = spec.root / Layout(spec.release).job_dir(node.step)
    return [read_report(p) for p in sorted(d.glob(f"{node.name}.*.json"))]


def test_submits_with_no_config_file_no_dagman_on_path_from_another_directory(
    condor_pool: Any, condor_workspace: Path, spec: WorkflowSpec
) -> None:
    """The three submit-side failures met on first contact, in one real run: condor_dagman is not on
    this host (it is in the pool's chroot), there is no HTCondor config file (CONDOR_CONFIG=/dev/null,
    as the bindings set it; the token and the collector come from _CONDOR_* and the setting), and the
    driver's working directory is not the DAG's."""
    command = _plan(spec, condor_workspace)
    settings = _settings(condor_pool, command)
    tokens = condor_pool.state / "tokens.d"
    env = {
        "PATH": "/usr/bin:/bin",  # no condor_dagman: compute.dagman names it on the schedd's host
        "CONDOR_CONFIG": "/dev/null",
        "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
        "_CONDOR_SEC_TOKEN_DIRECTORY": str(tokens),
        "PYTHONPATH": str(CHECKOUT),
    }
    elsewhere = condor_workspace / "elsewhere"
    elsewhere.mkdir()
    driver = (
        "import json, sys; from pathlib import Path; from science.workflow import WorkflowSpec; "
        "from sites.compute import get_backend; "
        "be = get_backend('htcondor', json.loads(sys.argv[1])); "
        "r = be.submit(WorkflowSpec.load(Path(sys.argv[2])), wait=True); "
        "print(r.state.value, r.message)"
    )
    out = subprocess.run(
        [sys.executable, "-c", driver, json.dumps(settings), str(spec.directory)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "succeeded", out.stdout + out.stderr[-2000:]
    # the jobs' reports say succeeded; DAGMan itself ran with the pool's configuration and exits 0
    be = get_backend("htcondor", settings)
    assert isinstance(be, HTCondorBackend)
    record = be.submitted(spec)
    assert record is not None
    deadline = time.monotonic() + 60
    while (
        end := dagman_outcome(Path(record["dag"] + ".dagman.log"), record["cluster"])[0]
    ) is DagmanEnd.RUNNING:
        assert time.monotonic() < deadline, "DAGMan did not exit"
        time.sleep(0.5)
    assert end is DagmanEnd.SUCCEEDED


def test_a_job_over_its_memory_is_held_released_bigger_and_the_raise_survives_a_restart(
    condor_pool: Any, condor_workspace: Path, spec: WorkflowSpec
) -> None:
    hog = next(n for n in spec.nodes() if n.step == "calibrate")
    # 300 MB resident against a 128 MB request: held (3/34, the back-end's own policy: no cgroups
    # here), released with 128 × 4 = 512 MB, and then it fits
    command = _plan(spec, condor_workspace, memory_mb={hog.name: [1, 300]}, hold_s=6)
    settings = _settings(
        condor_pool, command, request_memory_mb={"calibrate": 128}, memory_multiplier=4.0, retries=2
    )
    be = get_backend("htcondor", settings)
    assert isinstance(be, HTCondorBackend)
    report = be.submit(spec, wait=True)
    assert report.state is RunState.SUCCEEDED, (report, condor_pool.queue())
    (attempt,) = [a for a in be.attempts(spec) if a.node == hog.name]
    assert attempt.oom_holds == 1 and attempt.memory_requested_mb == 512
    reports = _reports(spec, hog)
    assert [r.succeeded for r in reports] == [False, True], "the held run was killed, the released one ran"
    assert reports[1].usage.peak_rss_bytes < 512 * 2**20
    assert be.raised_memory(spec) == {hog.name: 512}
    # a restart (here: of a finished run) writes the raised request into the new DAG and keeps it
    be.restart(spec, wait=True)
    dag = be.dag_path(spec).read_text()
    assert f'VARS {hog.name} job="{hog.name}" satdrp_memory_mb="512"' in dag
    assert be.memory_requests(spec) == {hog.name: 512}
    other = next(n for n in spec.nodes() if n.step == "calibrate" and n.name != hog.name)
    assert f'VARS {other.name} job="{other.name}" satdrp_memory_mb="128"' in dag


def _max_concurrent(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = peak = 0
    for _, d in edges:
        now += d
        peak = max(peak, now)
    return peak


def test_maxjobs_limits_a_step(condor_pool: Any, condor_workspace: Path, spec: WorkflowSpec) -> None:
    # calibrate jobs last long enough that a slow start rate (one job per ~1 s on a loaded machine)
    # still overlaps three of them: the assertion is about MAXJOBS, not about the schedd's speed
    slow = {
        n.name: 5.0 if n.step == "calibrate" else 0.5 for n in spec.nodes() if n.step in ("calibrate", "warp")
    }
    command = _plan(spec, condor_workspace, sleep=slow)
    be = get_backend("htcondor", _settings(condor_pool, command, max_jobs={"warp": 2}))
    assert be.submit(spec, wait=True).state is RunState.SUCCEEDED
    spans: dict[str, list[tuple[float, float]]] = {}
    for n in spec.nodes():
        for r in _reports(spec, n):
            spans.setdefault(n.step, []).append((r.started_at, r.ended_at))
    assert _max_concurrent(spans["warp"]) <= 2
    assert _max_concurrent(spans["calibrate"]) >= 3, "the other steps use the pool's 4 slots"


def test_probe_finds_the_schedd_through_the_collector(condor_pool: Any) -> None:
    probes = get_backend("htcondor", {"schedd": "127.0.0.1:9618"}).probe()
    assert [(p.check, p.health) for p in probes] == [("collector", Health.OK), ("schedd", Health.OK)]
    assert get_backend("htcondor", {"schedd": "local"}).probe()[0].health is Health.OK

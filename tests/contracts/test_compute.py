"""The compute back-end contract: the same scenario and the same assertions on local, htcondor and pegasus.

What every back-end must do whether or not its scheduler runs here: account for every job of the DAG
exactly once, count a job SUCCEEDED when (and only when) its job report on storage says so and its
outputs are there (that is how runs resume), run the DAG or say how to submit it, cancel harmlessly
when nothing runs, and probe its scheduler without raising. (htcondor runs without a schedd here and
pegasus without a planner: both then write and check their files and report NOT_SUBMITTED.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.probes import Health, Probe
from instrumentation.profiler import JobReport, Usage
from science.pipeline.jobs import ReleaseContext
from science.synth import ReleaseConfig, plan_manifest
from science.workflow import Node, WorkflowSpec, write_workflow
from sites.compute import ComputeBackend, NodeState, RunState, get_backend
from sites.compute.base import RunReport

SETTINGS: dict[str, dict[str, object]] = {
    # every job "succeeds": /bin/true, with the outputs put on storage beforehand by the test
    "local": {"max_workers": 2, "preload": False, "command": ["/bin/true"]},
    "htcondor": {},  # no schedd: files only
    "pegasus": {"pegasus_plan": "no-such-pegasus-plan"},  # no planner: files only
}


@pytest.fixture(params=sorted(SETTINGS))
def backend(request: pytest.FixtureRequest) -> ComputeBackend:
    return get_backend(request.param, SETTINGS[request.param])


@pytest.fixture
def spec(tmp_path: Path) -> WorkflowSpec:
    ctx = ReleaseContext(tmp_path / "root", "plan", plan_manifest(ReleaseConfig(name="plan")))
    return write_workflow(ctx, "in2p3", [0], tmp_path / "wf")


def _jobs(report: RunReport) -> dict[str, int]:
    """Node state → jobs, summed over steps."""
    out: dict[str, int] = {}
    for by_state in report.counts.values():
        for state, n in by_state.items():
            out[state] = out.get(state, 0) + n
    return out


def _outputs(spec: WorkflowSpec, nodes: list[Node]) -> None:
    for node in nodes:
        for out in node.outputs:
            (spec.root / out).parent.mkdir(parents=True, exist_ok=True)
            (spec.root / out).write_bytes(b"x")


def _succeeded_on_storage(spec: WorkflowSpec) -> str:
    """Write what a successful run of the first calibrate job leaves on storage; returns its name."""
    node = next(n for n in spec.nodes() if n.step == "calibrate")
    _outputs(spec, [node])
    reports = spec.root / "plan" / "jobs" / "calibrate"
    reports.mkdir(parents=True, exist_ok=True)
    usage = Usage(1, 0, 1, 0, 0, 0, 0)
    JobReport(
        node.name, "calibrate", node.data_id, 1, [], "h", 0.0, 1.0, 1.0, 0, None, usage, "o", "e", "", ""
    ).write(reports / f"{node.name}.1.json")
    return node.name


def test_every_job_is_accounted_for_once(backend: ComputeBackend, spec: WorkflowSpec) -> None:
    report = backend.poll(spec)
    assert report.state is RunState.NOT_SUBMITTED
    assert _jobs(report) == {NodeState.PENDING.value: spec.summary["n_jobs"]}
    assert set(report.counts) == {n.step for n in spec.nodes()}


def test_a_job_done_on_storage_counts_as_done(backend: ComputeBackend, spec: WorkflowSpec) -> None:
    _succeeded_on_storage(spec)
    jobs = _jobs(backend.poll(spec))
    assert jobs[NodeState.SUCCEEDED.value] == 1
    assert jobs[NodeState.PENDING.value] == spec.summary["n_jobs"] - 1


def test_submit_runs_the_dag_or_says_how(backend: ComputeBackend, spec: WorkflowSpec) -> None:
    _outputs(spec, list(spec.nodes()))  # outputs alone are not "done": no job report says so yet
    assert _jobs(backend.poll(spec)) == {NodeState.PENDING.value: spec.summary["n_jobs"]}
    report = backend.submit(spec, wait=True)
    after = backend.poll(spec)
    if report.state is RunState.NOT_SUBMITTED:
        assert report.message, "a back-end that cannot submit here says how to"
        assert after.state is RunState.NOT_SUBMITTED
        assert _jobs(after) == {NodeState.PENDING.value: spec.summary["n_jobs"]}
    else:
        assert report.state is RunState.SUCCEEDED and report.exit_code == 0
        assert after.state is RunState.SUCCEEDED
        assert _jobs(after) == {NodeState.SUCCEEDED.value: spec.summary["n_jobs"]}


def test_cancel_when_nothing_runs_is_harmless(backend: ComputeBackend, spec: WorkflowSpec) -> None:
    report = backend.cancel(spec)
    assert report.state is not RunState.RUNNING
    assert backend.poll(spec).state is RunState.NOT_SUBMITTED


def test_probe_is_typed_and_never_raises(backend: ComputeBackend) -> None:
    probes = backend.probe()
    assert probes and all(isinstance(p, Probe) and isinstance(p.health, Health) for p in probes)

"""The workflow builder: DAG structure (fan-out, fan-in, order) from the release manifest alone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from common.errors import InvalidInputError
from science.pipeline.jobs import Job, ReleaseContext
from science.synth import ReleaseConfig, plan_manifest
from science.workflow import WorkflowSpec, build, write_workflow


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> ReleaseContext:
    cfg = ReleaseConfig(name="plan")  # the demo's sky map: 2×2 tracts, 2×2 patches, g/r/i
    return ReleaseContext(tmp_path_factory.mktemp("root"), "plan", plan_manifest(cfg))


def test_every_parent_comes_first_and_edges_follow_the_data(ctx: ReleaseContext) -> None:
    seen: dict[str, tuple[str, ...]] = {}
    producers: dict[str, str] = {}
    for node in build(ctx):
        assert node.name not in seen, "job names are unique"
        assert all(p in seen for p in node.parents), f"{node.name}: parent after child"
        # a parent is exactly a job producing one of this job's inputs
        assert set(node.parents) == {producers[i] for i in node.inputs if i in producers}
        assert Job.from_name(node.name) == Job(node.step, node.data_id)
        seen[node.name] = node.parents
        producers.update(dict.fromkeys(node.outputs, node.name))


def test_fan_out_and_fan_in(ctx: ReleaseContext) -> None:
    nodes = {n.name: n for n in build(ctx)}
    steps = Counter(n.step for n in nodes.values())
    assert steps["calibrate"] == len(ctx.visits) and steps["merge"] == 4 and steps["measure"] == 16
    for n in nodes.values():
        d = n.data_id
        if n.step == "warp":
            assert n.parents == (Job("calibrate", {"visit": d["visit"]}).name,)
        elif n.step == "coadd":
            visits = ctx.visits_on(d["tract"], d["patch"], d["band"])
            assert len(n.parents) == len(visits) >= 1
            assert all(nodes[p].data_id["visit"] in visits for p in n.parents)
        elif n.step == "measure":
            assert {nodes[p].data_id["band"] for p in n.parents} == set(ctx.bands)
        elif n.step == "merge":
            assert sorted(nodes[p].data_id["patch"] for p in n.parents) == [0, 1, 2, 3]
    # one calibrate feeds a warp for every patch its visit overlaps
    fan_out = Counter(p for n in nodes.values() if n.step == "warp" for p in n.parents)
    for vid, v in ctx.visits.items():
        assert fan_out[Job("calibrate", {"visit": vid}).name] == len(v["patches"])


def test_a_tract_subset_keeps_only_needed_visits(ctx: ReleaseContext) -> None:
    nodes = list(build(ctx, [3]))
    assert {n.data_id["tract"] for n in nodes if "tract" in n.data_id} == {3}
    calibrated = {n.data_id["visit"] for n in nodes if n.step == "calibrate"}
    assert calibrated == {v for v, rec in ctx.visits.items() if any(t == 3 for t, _ in rec["patches"])}
    names = {n.name for n in nodes}
    assert all(p in names for n in nodes for p in n.parents), "no edge leaves the subset"
    with pytest.raises(InvalidInputError, match=r"tracts \[42\]"):
        list(build(ctx, [42]))


def test_written_workflow_reads_back(ctx: ReleaseContext, tmp_path: Path) -> None:
    spec = write_workflow(ctx, "ncsa", [0, 1], tmp_path / "wf")
    again = WorkflowSpec.load(tmp_path / "wf")
    assert again == spec and again.tracts == (0, 1)
    assert list(again.nodes()) == list(build(ctx, [0, 1]))
    assert spec.summary["n_jobs"] == sum(spec.summary["jobs"].values())
    assert spec.summary["edges"] == sum(len(n.parents) for n in again.nodes())
    assert not list((tmp_path / "wf").glob(".*part*")), "no temporary file left behind"

"""HTCondor and Pegasus back-ends: generated files checked with the real libraries' own parsers."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import classad2
import htcondor2
import pytest
import yaml

from common.errors import EXIT_IN_PROGRESS, ConfigError, ServiceUnavailableError
from instrumentation.profiler import JobReport, Usage
from science.pipeline.jobs import ReleaseContext
from science.synth import ReleaseConfig, plan_manifest
from science.workflow import WorkflowSpec, write_workflow
from sites.compute import RunState, get_backend
from sites.compute.htcondor import HTCondorBackend, read_event_log
from sites.compute.pegasus import PegasusBackend, validate_file


@pytest.fixture
def spec(tmp_path: Path) -> WorkflowSpec:
    ctx = ReleaseContext(tmp_path / "root", "plan", plan_manifest(ReleaseConfig(name="plan")))
    return write_workflow(ctx, "in2p3", [0, 3], tmp_path / "wf")


def _htcondor(**settings: object) -> HTCondorBackend:
    be = get_backend("htcondor", {"retries": 3, "max_jobs": {"warp": 10, "coadd": 4}, **settings})
    assert isinstance(be, HTCondorBackend)
    return be


def test_registry_names_bad_settings() -> None:
    with pytest.raises(ConfigError, match=r"compute.backend: unknown back-end 'slurm'"):
        get_backend("slurm", {})
    with pytest.raises(ConfigError, match=r"compute.max_workers: .*greater than or equal to 1"):
        get_backend("local", {"max_workers": 0})
    with pytest.raises(ConfigError, match=r"compute.schedd_host: unknown key"):
        get_backend("htcondor", {"schedd_host": "x"})


def test_dag_and_submit_files_parse_with_htcondor2(spec: WorkflowSpec) -> None:
    be = _htcondor()
    report = be.submit(spec)  # no schedd configured: files only, and the report says so
    assert report.state is RunState.NOT_SUBMITTED and "condor_submit_dag" in report.message
    d = be.directory(spec)
    lines = be.dag_path(spec).read_text().splitlines()
    assert "MAXJOBS warp 10" in lines and "MAXJOBS coadd 4" in lines
    assert not any(ln.startswith("CATEGORY warp ") for ln in lines), "the htcondor2.dags bug"
    nodes = list(spec.nodes())
    jobs = [ln.split() for ln in lines if ln.startswith("JOB ")]
    assert [j[1] for j in jobs] == [n.name for n in nodes]
    assert all(f"RETRY {n.name} 3 UNLESS-EXIT 2" in lines for n in nodes)
    parents = {
        ln.split(" CHILD ")[1]: ln[len("PARENT ") :].split(" CHILD ")[0].split()
        for ln in lines
        if ln.startswith("PARENT")
    }
    assert parents == {n.name: list(n.parents) for n in nodes if n.parents}
    for step in {n.step for n in nodes}:
        sub = htcondor2.Submit((d / f"{step}.sub").read_text())
        sub["job"] = "warp_v001000_t0_p0"
        sub["satdrp_memory_mb"] = "2048"
        args = sub.expand("arguments")
        assert "--job warp_v001000_t0_p0" in args and "instrumentation.profiler" in args
        assert sub.expand("log") == "nodes.log"
        assert sub.getQArgs() == ""  # one job per node: per-node values come from VARS, not queue items
    # condor_submit_dag's own submit-side logic accepts the DAG (DAGMan itself is not installed here)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        dagman = htcondor2.Submit.from_dag(be.dag_path(spec).name, {"DagmanPath": "/bin/true", "force": True})
    finally:
        os.chdir(cwd)
    assert dagman["universe"] == "scheduler"


def _vars(dag: list[str], node: str) -> dict[str, str]:
    (line,) = [ln for ln in dag if ln.startswith(f"VARS {node} ")]
    return dict(re.findall(r'(\w+)="([^"]*)"', line))


def test_no_dag_variable_reads_as_a_resource_request(spec: WorkflowSpec) -> None:
    """condor_submit reads a submit variable ``request_X`` as a request for a machine resource X: a DAG
    VARS ``request_memory_mb`` made every job unmatchable on a real pool."""
    be = _htcondor()
    be.write(spec)
    lines = be.dag_path(spec).read_text().splitlines()
    names = {k for ln in lines if ln.startswith("VARS ") for k in re.findall(r'(\w+)="', ln)}
    assert names == {"job", "satdrp_memory_mb", "data_id"}
    node = next(n for n in spec.nodes() if n.step == "warp")
    assert _vars(lines, node.name)["data_id"] == ",".join(f"{k}={v}" for k, v in node.data_id.items())
    for step in {n.step for n in spec.nodes()}:
        sub = htcondor2.Submit((be.directory(spec) / f"{step}.sub").read_text())
        assert {k for k in sub.keys() if k.lower().startswith("request_")} == {
            "request_cpus",
            "request_memory",
        }


def test_request_memory_grows_only_after_an_oom_hold(spec: WorkflowSpec) -> None:
    sub = _htcondor(memory_multiplier=2.0, request_memory_max_mb=6000).submit_description(spec, "warp")
    sub["satdrp_memory_mb"] = "2048"
    expr = classad2.ExprTree(sub.expand("request_memory"))

    def mem(**attrs: object) -> object:
        return classad2.ClassAd({"NumJobStarts": 1, **attrs, "M": expr}).eval("M")

    assert mem() == 2048
    assert mem(LastHoldReasonCode=34) == 4096
    assert mem(LastHoldReasonCode=3, LastHoldReasonSubCode=34) == 4096
    assert mem(LastHoldReasonCode=34, NumJobStarts=2) == 6000  # capped
    assert mem(LastHoldReasonCode=12) == 2048  # another hold reason: no growth


EVENT_LOG = """\
000 (101.000.000) 2026-11-22 10:00:00 Job submitted from host: <127.0.0.1:9618?addrs=127.0.0.1-9618>
    DAG Node: {calib}
...
001 (101.000.000) 2026-11-22 10:00:05 Job executing on host: <10.0.0.5:9618?addrs=10.0.0.5-9618>
...
006 (101.000.000) 2026-11-22 10:00:30 Image size of job updated: 24576
\t20  -  MemoryUsage of job (MB)
\t19456  -  ResidentSetSize of job (KB)
...
012 (101.000.000) 2026-11-22 10:00:40 Job was held.
\tError from slot1@worker: memory limit exceeded
\tCode 34 Subcode 0
...
009 (101.000.000) 2026-11-22 10:00:41 Job was aborted.
\tvia condor_rm (by user condor)
...
000 (102.000.000) 2026-11-22 10:01:00 Job submitted from host: <127.0.0.1:9618?addrs=127.0.0.1-9618>
    DAG Node: {calib}
...
001 (102.000.000) 2026-11-22 10:01:05 Job executing on host: <10.0.0.6:9618?addrs=10.0.0.6-9618>
...
005 (102.000.000) 2026-11-22 10:02:00 Job terminated.
\t(1) Normal termination (return value 0)
\t\tUsr 0 00:00:50, Sys 0 00:00:02  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t\tUsr 0 00:00:50, Sys 0 00:00:02  -  Total Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage
\t1024  -  Run Bytes Sent By Job
\t2048  -  Run Bytes Received By Job
\t1024  -  Total Bytes Sent By Job
\t2048  -  Total Bytes Received By Job
\tPartitionable Resources :    Usage  Request Allocated
\t   Cpus                 :     0.98        1         1
\t   Disk (KB)            :     1234  2000000   2100000
\t   Memory (MB)          :       31     2048      2048
...
000 (103.000.000) 2026-11-22 10:00:00 Job submitted from host: <127.0.0.1:9618?addrs=127.0.0.1-9618>
    DAG Node: {warp}
...
001 (103.000.000) 2026-11-22 10:00:02 Job executing on host: <10.0.0.5:9618?addrs=10.0.0.5-9618>
...
005 (103.000.000) 2026-11-22 10:00:09 Job terminated.
\t(0) Abnormal termination (signal 9)
\t(0) No core file
\t\tUsr 0 00:00:05, Sys 0 00:00:01  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t\tUsr 0 00:00:05, Sys 0 00:00:01  -  Total Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage
\t0  -  Run Bytes Sent By Job
\t0  -  Run Bytes Received By Job
\t0  -  Total Bytes Sent By Job
\t0  -  Total Bytes Received By Job
...
000 (104.000.000) 2026-11-22 10:00:00 Job submitted from host: <127.0.0.1:9618?addrs=127.0.0.1-9618>
    DAG Node: {merge}
...
001 (104.000.000) 2026-11-22 10:00:02 Job executing on host: <10.0.0.7:9618?addrs=10.0.0.7-9618>
...
005 (104.000.000) 2026-11-22 10:00:03 Job terminated.
\t(1) Normal termination (return value 2)
\t\tUsr 0 00:00:01, Sys 0 00:00:00  -  Run Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage
\t\tUsr 0 00:00:01, Sys 0 00:00:00  -  Total Remote Usage
\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage
\t0  -  Run Bytes Sent By Job
\t0  -  Run Bytes Received By Job
\t0  -  Total Bytes Sent By Job
\t0  -  Total Bytes Received By Job
...
"""


def _names(spec: WorkflowSpec) -> dict[str, str]:
    nodes = list(spec.nodes())
    return {
        "calib": next(n.name for n in nodes if n.step == "calibrate"),
        "warp": next(n.name for n in nodes if n.step == "warp"),
        "merge": next(n.name for n in nodes if n.step == "merge"),
    }


def test_event_log_becomes_attempts(spec: WorkflowSpec) -> None:
    names = _names(spec)
    be = _htcondor()
    be.write(spec)
    log = be.directory(spec) / "nodes.log"
    log.write_text(EVENT_LOG.format(**names))
    attempts = {(a.node, a.number): a for a in read_event_log(log)}
    first, second = attempts[(names["calib"], 1)], attempts[(names["calib"], 2)]
    assert first.oom_holds == 1 and first.peak_rss == 19456 * 1024 and first.host == "10.0.0.5"
    assert first.exit_code is None and first.state.value == "cancelled"
    assert (second.exit_code, second.cpu_user, second.cpu_sys) == (0, 50, 2)
    assert second.memory_requested_mb == 2048 and second.peak_rss == 31 * 2**20
    assert second.state.value == "succeeded" and second.host == "10.0.0.6"
    warp = attempts[(names["warp"], 1)]
    assert (warp.exit_code, warp.signal, warp.cpu_user, warp.cpu_sys) == (None, 9, 5, 1)
    merge = attempts[(names["merge"], 1)]
    assert merge.exit_code == 2 and merge.state.value == "failed"
    counts = be.poll(spec).counts
    assert counts["merge"].get("failed") == 1, "exit 2 is in UNLESS-EXIT: no retry is coming"
    assert counts["warp"].get("pending", 0) >= 1, "a killed warp will be retried by DAGMan"


def test_raised_memory_survives_restart(spec: WorkflowSpec) -> None:
    names = _names(spec)
    be = _htcondor(memory_multiplier=2.0)
    be.write(spec)
    (be.directory(spec) / "nodes.log").write_text(EVENT_LOG.format(**names))
    # the calibrate job also already succeeded at the site: its report is on storage
    node = next(n for n in spec.nodes() if n.name == names["calib"])
    for out in node.outputs:
        (spec.root / out).parent.mkdir(parents=True, exist_ok=True)
        (spec.root / out).write_bytes(b"x")
    report_dir = spec.root / "plan" / "jobs" / "calibrate"
    report_dir.mkdir(parents=True)
    JobReport(
        node.name,
        "calibrate",
        node.data_id,
        1,
        [],
        "h",
        0.0,
        1.0,
        1.0,
        0,
        None,
        Usage(1, 0, 1, 0, 0, 0, 0),
        "o",
        "e",
        "",
        "",
    ).write(report_dir / f"{node.name}.1.json")
    be.restart(spec)
    dag = be.dag_path(spec).read_text().splitlines()
    assert _vars(dag, names["calib"])["satdrp_memory_mb"] == "2048"  # 1024 × 2
    assert f"JOB {names['calib']} calibrate.sub DONE" in dag
    assert _vars(dag, names["warp"])["satdrp_memory_mb"] == "512"
    assert be.memory_requests(spec) == {names["calib"]: 2048}
    be.restart(spec)  # a second restart with no new OOM keeps the raised value, it does not reset it
    assert _vars(be.dag_path(spec).read_text().splitlines(), names["calib"])["satdrp_memory_mb"] == "2048"


def test_unreachable_schedd_is_a_wait_not_a_failure(spec: WorkflowSpec) -> None:
    """No collector there: ServiceUnavailableError (a campaign tick waits, exit 3), naming the schedd;
    nothing was submitted, so the next tick submits as if for the first time."""
    be = _htcondor(schedd="127.0.0.1:1", dagman="/usr/bin/condor_dagman")
    with pytest.raises(
        ServiceUnavailableError, match=r"HTCondor collector at 127.0.0.1:1 cannot be reached"
    ) as err:
        be.submit(spec)
    assert err.value.exit_code == EXIT_IN_PROGRESS
    assert be.submitted(spec) is None and be.poll(spec).state is RunState.NOT_SUBMITTED


def test_condor_dagman_off_path_names_the_setting(
    spec: WorkflowSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match=r"compute.dagman: condor_dagman is not on this host's PATH"):
        _htcondor(schedd="127.0.0.1:1").submit(spec)


def test_dagman_job_does_not_inherit_the_client_configuration(
    spec: WorkflowSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONDOR_CONFIG=/dev/null (what the bindings set without a config file) or a client-only file,
    and _CONDOR_* overrides, configure this process; DAGMan inherited them and died."""
    monkeypatch.setenv("CONDOR_CONFIG", "/dev/null")
    monkeypatch.setenv("_CONDOR_SEC_TOKEN_DIRECTORY", "/somewhere")
    be = _htcondor(schedd="local", dagman="/usr/bin/condor_dagman")
    dag = be.write(spec)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # submitted from elsewhere: nothing may depend on this directory
    sub = be.dagman_submit(dag)
    getenv = [v.strip() for v in sub["getenv"].split(",")]
    assert "CONDOR_CONFIG" not in getenv and not any(v.startswith("_CONDOR_") for v in getenv)
    assert "PATH" in getenv
    assert sub["initialdir"] == str(dag.parent) and "-UseDagDir" in sub["arguments"]
    assert sub["executable"] == "/usr/bin/condor_dagman"
    assert str(elsewhere) not in str(sub)


def test_pegasus_files_validate_against_pegasus_schemas(spec: WorkflowSpec) -> None:
    be = get_backend("pegasus", {"max_jobs": {"warp": 4}})
    assert isinstance(be, PegasusBackend)
    report = be.submit(spec)
    assert report.state is RunState.NOT_SUBMITTED and "pegasus-plan not found" in report.message
    d = be.directory(spec)
    for name in ("workflow.yml", "sites.yml", "replicas.yml", "transformations.yml"):
        assert validate_file(d / name) == [], name
    wf = yaml.safe_load((d / "workflow.yml").read_text())
    nodes = list(spec.nodes())
    assert [j["id"] for j in wf["jobs"]] == [n.name for n in nodes]
    deps = {dep["id"]: set(dep["children"]) for dep in wf["jobDependencies"]}
    for n in nodes:
        for p in n.parents:
            assert n.name in deps[p]
    assert wf["profiles"]["dagman"] == {"warp.maxjobs": "4"}
    rc = yaml.safe_load((d / "replicas.yml").read_text())
    lfns = {r["lfn"] for r in rc["replicas"]}
    assert "plan/refcat/refcat.parquet" in lfns and not any("calexp" in x for x in lfns)
    # the schemas do catch mistakes
    broken = yaml.safe_load((d / "workflow.yml").read_text())
    broken["bogus"] = 1
    del broken["jobs"][1]["arguments"]
    (d / "workflow.yml").write_text(yaml.safe_dump(broken))
    errors = validate_file(d / "workflow.yml")
    assert any("bogus" in e for e in errors), textwrap.shorten(str(errors), 300)
    assert any(e.startswith("jobs/1") for e in errors), textwrap.shorten(str(errors), 300)


def test_pegasus_plans_for_the_htcondor_site_from_the_books(spec: WorkflowSpec) -> None:
    """With the driver's record of the inputs at the site (bookkeeping's AVAILABLE replicas), the
    replica catalogue lists those and only those, with their adler32; the execution site is the
    HTCondor pool with the operator's accounting group and requirements."""
    nodes = list(spec.nodes())
    external = sorted({i for n in nodes for i in n.inputs} - {o for n in nodes for o in n.outputs})
    known, missing = external[:-1], external[-1]
    (spec.directory / "inputs.json").write_text(
        json.dumps({name: {"size": 10, "adler32": "0badf00d"} for name in known})
    )
    be = get_backend("pegasus", {"accounting_group": "group_lsst.drp", "requirements": 'OpSys == "LINUX"'})
    assert isinstance(be, PegasusBackend)
    files = be.write(spec)
    assert all(validate_file(p) == [] for p in files.values())
    rc = yaml.safe_load(files["replicas.yml"].read_text())
    by_lfn = {r["lfn"]: r for r in rc["replicas"]}
    assert set(by_lfn) == set(known) and missing not in by_lfn
    assert by_lfn[known[0]]["metadata"]["adler32"] == "0badf00d"
    assert by_lfn[known[0]]["pfns"][0]["pfn"] == f"file://{spec.root.resolve() / known[0]}"
    sites = {s["name"]: s for s in yaml.safe_load(files["sites.yml"].read_text())["sites"]}
    profiles = sites[spec.site]["profiles"]
    assert profiles["pegasus"]["style"] == "condor"
    assert profiles["condor"]["accounting_group"] == "group_lsst.drp"
    assert profiles["condor"]["requirements"] == 'OpSys == "LINUX"'
    tc = yaml.safe_load(files["transformations.yml"].read_text())
    wf = yaml.safe_load(files["workflow.yml"].read_text())
    job = wf["jobs"][0]
    args = " ".join(map(str, job["arguments"]))
    assert "-m instrumentation.profiler" in args and "-m cli jobs run --job" in args
    assert {t["name"] for t in tc["transformations"]} == {n.step for n in nodes}


def test_rescue_dag_marks_nodes_done_only_when_their_outputs_exist(spec: WorkflowSpec) -> None:
    """DAGMan's rescue DAG (written when a DAG fails) is folded into the next DAG's DONE marks, but
    storage decides: a node the rescue file calls done whose outputs are gone runs again."""
    be = _htcondor()
    dag = be.write(spec)
    calib = [n for n in spec.nodes() if n.step == "calibrate"][:2]
    for out in calib[0].outputs:
        (spec.root / out).parent.mkdir(parents=True, exist_ok=True)
        (spec.root / out).write_bytes(b"x")
    dag.with_name(dag.name + ".rescue001").write_text(
        "# Rescue DAG file, created after running\nDONE " + calib[0].name + "\nDONE " + calib[1].name + "\n"
    )
    lines = be.write(spec).read_text().splitlines()
    assert f"JOB {calib[0].name} calibrate.sub DONE" in lines
    assert f"JOB {calib[1].name} calibrate.sub" in lines, "its outputs are not on storage"

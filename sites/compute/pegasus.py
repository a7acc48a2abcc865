"""The ``pegasus`` compute back-end: an abstract workflow and its catalogues, written with Pegasus.api.

Under ``<workflow>/pegasus/``: ``workflow.yml`` (one job per node, explicit dependencies, DAGMan
retry and category profiles, per-step ``MAXJOBS``), ``sites.yml`` (the site with its storage root,
plus ``local``), ``replicas.yml`` (the release inputs no job produces, at the site) and
``transformations.yml`` (one transformation per step, installed, with its memory request). Every job
runs ``drp jobs run --job NAME`` under the satdrp profiler, like every other back-end.

Before anything is handed on, each file is validated against Pegasus's own JSON Schemas (draft-07
in YAML, from the Pegasus source tree; they are not shipped in the wheels, so they are bundled in
``pegasus_schema/``). The site catalogue is written as its own file: the inline form that
``Workflow.write`` produces fails Pegasus's schema (it lacks the ``pegasus`` version key).
``pegasus-plan --submit`` runs when it is installed (it is Java and not installable here); otherwise
the report says the workflow is ready to plan.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field

from common.errors import DrpError
from common.probes import Health, Probe
from science.workflow import WorkflowSpec

from .base import (
    INPUTS_FILE,
    BackendSettings,
    ComputeBackend,
    NodeState,
    RunReport,
    RunState,
    count_states,
    job_command,
)
from .local import completed

SCHEMA_DIR = Path(__file__).with_name("pegasus_schema")
SCHEMAS = {
    "workflow.yml": "wf-5.0.yml",
    "sites.yml": "sc-5.0.yml",
    "replicas.yml": "rc-5.0.yml",
    "transformations.yml": "tc-5.0.yml",
}
PLANNED_FILE = "planned"


class PegasusSettings(BackendSettings):
    pegasus_plan: str = Field(default="pegasus-plan", description="planner command (run when found)")
    output_site: str = Field(default="", description="pegasus-plan --output-sites (default: the site)")
    accounting_group: str = Field(default="", description="the HTCondor execution site's accounting group")
    requirements: str = Field(default="", description="ClassAd Requirements of every job at the site")


def _books(path: Path) -> dict[str, dict[str, Any]] | None:
    """The driver's record of the workflow's inputs at the site (None: no driver wrote one)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise DrpError(f"{path}: unreadable inputs record ({err})") from err
    if not isinstance(data, dict):
        raise DrpError(f"{path}: unreadable inputs record (not an object)")
    return data


@cache
def _validators() -> dict[str, Any]:
    import yaml
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    base = "file:///pegasus-schema/"
    registry: Registry[Any] = Registry()
    schemas: dict[str, Any] = {}
    for p in sorted(SCHEMA_DIR.glob("*.yml")):
        schema = yaml.safe_load(p.read_text())
        schema["$id"] = base + p.name
        schemas[p.name] = schema
        registry = registry.with_resource(
            base + p.name, Resource.from_contents(schema, default_specification=DRAFT7)
        )
    return {name: Draft7Validator(schemas[s], registry=registry) for name, s in SCHEMAS.items()}


def validate_file(path: Path) -> list[str]:
    """Schema errors of a written Pegasus YAML file (empty when valid), as 'where: message' lines."""
    import yaml
    from jsonschema.exceptions import best_match

    validator = _validators()[path.name]
    doc = yaml.safe_load(path.read_text())
    out = []
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        if e.context:  # oneOf/anyOf: say what the closest alternative objects to, not just "no match"
            e = best_match(e.context) or e
        out.append(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
    return out


class PegasusBackend(ComputeBackend):
    name = "pegasus"
    Settings = PegasusSettings
    settings: PegasusSettings

    def directory(self, spec: WorkflowSpec) -> Path:
        return spec.directory / "pegasus"

    def probe(self) -> list[Probe]:
        planner = shutil.which(self.settings.pegasus_plan)
        if planner is None:
            detail = (
                f"{self.settings.pegasus_plan} not on PATH: workflows are written and checked, not planned"
            )
            return [Probe("planner", Health.OK, detail)]
        return [Probe("planner", Health.OK, planner)]

    def write(self, spec: WorkflowSpec) -> dict[str, Path]:
        """Write and validate the four files; returns them by name."""
        from Pegasus.api import (
            Arch,
            Directory,
            File,
            FileServer,
            Job,
            Namespace,
            Operation,
            ReplicaCatalog,
            Site,
            SiteCatalog,
            Transformation,
            TransformationCatalog,
            Workflow,
        )

        s = self.settings
        d = self.directory(spec)
        d.mkdir(parents=True, exist_ok=True)
        root = spec.root.resolve()
        nodes = list(spec.nodes())

        sc = SiteCatalog()
        site = Site(spec.site, arch=Arch.X86_64)
        site.add_directories(
            Directory(Directory.SHARED_SCRATCH, str(root / ".pegasus-scratch")).add_file_servers(
                FileServer(f"file://{root}/.pegasus-scratch", Operation.ALL)
            ),
            Directory(Directory.LOCAL_STORAGE, str(root)).add_file_servers(
                FileServer(f"file://{root}", Operation.ALL)
            ),
        )
        site.add_condor_profile(universe="vanilla", requirements=s.requirements or None)
        if s.accounting_group:
            site.add_profiles(Namespace.CONDOR, key="accounting_group", value=s.accounting_group)
        site.add_pegasus_profile(style="condor", data_configuration="sharedfs")
        local = Site("local", arch=Arch.X86_64).add_directories(
            Directory(Directory.SHARED_SCRATCH, str(d / "scratch")).add_file_servers(
                FileServer(f"file://{d / 'scratch'}", Operation.ALL)
            )
        )
        sc.add_sites(site, local)

        tc = TransformationCatalog()
        transformations = {}
        for step in dict.fromkeys(n.step for n in nodes):
            tx = Transformation(step, site=spec.site, pfn=s.python_exe(), is_stageable=False)
            tx.add_profiles(Namespace.CONDOR, key="request_memory", value=str(s.memory_for(step)))
            tc.add_transformations(tx)
            transformations[step] = tx

        produced = {o for n in nodes for o in n.outputs}
        external = sorted({i for n in nodes for i in n.inputs} - produced)
        books = _books(spec.directory / INPUTS_FILE)
        rc = ReplicaCatalog()
        for lfn in external:
            if books is None:  # not prepared by the driver: the storage layout is all there is
                rc.add_replica(spec.site, lfn, f"file://{root / lfn}")
            elif lfn in books:  # absent from the books at this site: no replica to plan with
                meta = {"adler32": str(books[lfn]["adler32"]), "size": str(books[lfn]["size"])}
                rc.add_replica(spec.site, lfn, f"file://{root / lfn}", metadata=meta)

        wf = Workflow(f"satdrp-{spec.release}-{spec.site}", infer_dependencies=False)
        jobs: dict[str, Any] = {}
        for node in nodes:
            argv = job_command(spec, node, s, profiled=True)
            job = Job(transformations[node.step], _id=node.name, node_label=node.step)
            job.add_args(*argv[1:])
            job.add_inputs(*(File(i) for i in node.inputs))
            job.add_outputs(*(File(o) for o in node.outputs), stage_out=False, register_replica=False)
            job.add_dagman_profile(retry=str(s.retries), category=node.step)
            wf.add_jobs(job)
            jobs[node.name] = job
        for node in nodes:
            parents = [jobs[p] for p in node.parents if p in jobs]
            if parents:
                wf.add_dependency(jobs[node.name], parents=parents)
        for step, limit in s.max_jobs.items():
            wf.add_profiles(Namespace.DAGMAN, key=f"{step}.maxjobs", value=str(limit))

        out = {name: d / name for name in SCHEMAS}
        wf.write(str(out["workflow.yml"]))
        sc.write(str(out["sites.yml"]))
        rc.write(str(out["replicas.yml"]))
        tc.write(str(out["transformations.yml"]))
        problems = [f"{p.name}: {e}" for p in out.values() for e in validate_file(p)]
        if problems:
            raise DrpError(
                f"pegasus: generated files fail Pegasus's schema ({len(problems)}): "
                + "; ".join(problems[:5])
            )
        (d / "pegasus.properties").write_text(
            "pegasus.catalog.site.file = sites.yml\n"
            "pegasus.catalog.replica = YAML\npegasus.catalog.replica.file = replicas.yml\n"
            "pegasus.catalog.transformation.file = transformations.yml\n"
        )
        return out

    def submit(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        files = self.write(spec)
        planner = shutil.which(self.settings.pegasus_plan)
        if planner is None:
            return RunReport(
                self.name,
                None,
                RunState.NOT_SUBMITTED,
                self.poll(spec).counts,
                f"workflow written and validated in {files['workflow.yml'].parent}; "
                f"{self.settings.pegasus_plan} not found: plan and submit it where Pegasus is installed",
            )
        d = self.directory(spec)
        cmd = [
            planner,
            "--conf",
            "pegasus.properties",
            "--dir",
            "submit",
            "--sites",
            spec.site,
            "--output-sites",
            self.settings.output_site or spec.site,
            "--submit",
            "workflow.yml",
        ]
        proc = subprocess.run(cmd, cwd=d, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DrpError(f"pegasus-plan failed (exit {proc.returncode}): {' | '.join(tail)}")
        (d / PLANNED_FILE).write_text(proc.stdout)
        return RunReport(self.name, str(d / "submit"), RunState.RUNNING, {}, "planned and submitted")

    def poll(self, spec: WorkflowSpec) -> RunReport:
        nodes = list(spec.nodes())
        done = completed(spec, nodes)
        states = [(n.step, NodeState.SUCCEEDED if n.name in done else NodeState.PENDING) for n in nodes]
        planned = (self.directory(spec) / PLANNED_FILE).is_file()
        if len(done) == len(nodes):
            state = RunState.SUCCEEDED
        else:
            state = RunState.RUNNING if planned else RunState.NOT_SUBMITTED
        return RunReport(self.name, None, state, count_states(states))

    def cancel(self, spec: WorkflowSpec) -> RunReport:
        remove = shutil.which("pegasus-remove")
        submit_dir = self.directory(spec) / "submit"
        if remove is None or not (self.directory(spec) / PLANNED_FILE).is_file():
            report = self.poll(spec)
            return RunReport(self.name, None, report.state, report.counts, "nothing submitted to cancel")
        subprocess.run([remove, str(submit_dir)], check=False, capture_output=True)
        return RunReport(self.name, str(submit_dir), RunState.CANCELLED, self.poll(spec).counts)

    def restart(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        """Re-plan: Pegasus skips jobs whose outputs exist (data reuse), so finished work is kept."""
        (self.directory(spec) / PLANNED_FILE).unlink(missing_ok=True)
        return self.submit(spec, wait=wait)

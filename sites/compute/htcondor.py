"""The ``htcondor`` compute back-end: a DAGMan workflow written with the htcondor2 bindings.

What is written under ``<workflow>/htcondor/``:

- one submit file per step (``calibrate.sub`` …), built as :class:`htcondor2.Submit` objects and
  written from them; every job runs ``drp jobs run --job $(job)`` under the satdrp profiler, so a
  job report lands beside the outputs exactly as with the local back-end;
- the DAG, streamed line by line (``htcondor2.dags`` holds a Python object per node and only knows
  regular edge patterns, and writes ``CATEGORY cat N`` where DAGMan needs ``MAXJOBS cat N``; the
  LSST ctrl_bps plugin also writes its DAG itself): ``JOB``/``VARS``/``RETRY … UNLESS-EXIT``/
  ``CATEGORY`` per node, one ``PARENT … CHILD`` line per node with parents, ``MAXJOBS`` per step,
  ``DONE`` for nodes that already succeeded (from the job reports on storage and DAGMan's rescue DAG:
  that is how a restart skips them);
- ``dagman.config``.

Memory: a job held for exceeding its memory (HoldReasonCode 34 from a cgroup-enforcing startd, or
3/34 from this back-end's own ``periodic_hold``, which works without cgroups) is released with
``request_memory`` × ``memory_multiplier`` per start, up to ``request_memory_max_mb``; past that it
is removed and the node fails. The ctrl_bps pain point is that a restart forgets the raised value;
here a resubmission reads the job event log, raises the node's base request for every out-of-memory
hold, keeps it in ``memory.json`` (and the driver in bookkeeping), and writes it into the new DAG's
``VARS``. The DAG variable is ``satdrp_memory_mb``: a submit variable named ``request_*`` is read by
condor_submit as a request for a custom machine resource, and no slot would ever match.

Submission needs a pool: ``schedd = "local"`` (the pool of this host's HTCondor configuration) or
the pool's collector ``host[:port]``; the schedd is located through the collector (behind a shared
port, a bare address is the collector, not the schedd). The DAGMan job is submitted from the DAG's
own directory (``-usedagdir`` and an absolute ``initialdir``) and never inherits ``CONDOR_CONFIG``
or ``_CONDOR_*`` from the submitting process: they configure this client (the bindings set
``CONDOR_CONFIG=/dev/null`` when there is no config file) and DAGMan runs with its host's own.
Status: the nodes' job event log for the jobs, DAGMan's own event log for the end of the run.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from common.atomic import atomic_write, write_bytes_atomic, write_json_atomic
from common.errors import ConfigError, DrpError, ServiceUnavailableError
from common.probes import TIMEOUT_S, Health, Probe, tcp
from science.layout import Layout
from science.pipeline.jobs import STEPS
from science.workflow import Node, WorkflowSpec

from .base import (
    BackendSettings,
    ComputeBackend,
    NodeState,
    RunReport,
    RunState,
    count_states,
    data_id_text,
    job_command,
)
from .htcondor_events import DagmanEnd, EventAttempt, dagman_outcome, read_event_log, rescued
from .local import completed

NODES_LOG = "nodes.log"
MEMORY_FILE = "memory.json"
SUBMITTED_FILE = "submitted.json"
MEMORY_VAR = "satdrp_memory_mb"
OOM_HOLD = "(HoldReasonCode =?= 34 || (HoldReasonCode =?= 3 && HoldReasonSubCode =?= 34))"
OOM_LAST_HOLD = "(LastHoldReasonCode =?= 34 || (LastHoldReasonCode =?= 3 && LastHoldReasonSubCode =?= 34))"
CANCEL_WAIT_S = 60.0

__all__ = ["EventAttempt", "HTCondorBackend", "HTCondorSettings", "read_event_log"]


class HTCondorSettings(BackendSettings):
    schedd: str = Field(
        default="",
        description='"" (write the files only), "local" (this host\'s HTCondor configuration), or the '
        'pool\'s collector "host[:port]" through which the schedd is located',
    )
    schedd_name: str = Field(default="", description="which schedd, when the collector knows several")
    dagman: str = Field(
        default="", description="condor_dagman's path on the schedd's host (default: found on this PATH)"
    )
    universe: str = "vanilla"
    accounting_group: str = ""
    requirements: str = Field(default="", description="ClassAd expression added to every job's Requirements")
    max_idle: int = Field(default=1000, ge=1, description="DAGMAN_MAX_JOBS_IDLE")
    batch_name: str = ""
    job_user: str = Field(
        default="",
        description="the account jobs run as, when it is not the submitting one (a name or a uid): it is "
        "given the workflow's and the outputs' directories before submission",
    )
    hold_over_memory: bool = Field(
        default=True, description="hold a job whose memory use passes its request (pools without cgroups)"
    )
    poll_interval_s: float = Field(default=2.0, gt=0, description="between status reads when waiting")


def _arguments(args: list[str]) -> str:
    """HTCondor's new argument syntax: the whole list in double quotes, an argument with spaces in
    single quotes (a single quote doubled)."""
    out = []
    for a in args:
        if '"' in a:
            raise ValueError(f"argument {a!r}: double quotes cannot be passed through HTCondor arguments")
        out.append("'" + a.replace("'", "''") + "'" if (" " in a or "'" in a or not a) else a)
    return '"' + " ".join(out) + '"'


def _dag_value(value: str) -> str:
    if '"' in value or "\\" in value or "\n" in value:
        raise ValueError(f"DAG VARS value {value!r} needs quoting this writer does not do")
    return value


class HTCondorBackend(ComputeBackend):
    name = "htcondor"
    Settings = HTCondorSettings
    settings: HTCondorSettings

    # -- files -----------------------------------------------------------------------------------
    def directory(self, spec: WorkflowSpec) -> Path:
        return spec.directory / "htcondor"

    def dag_path(self, spec: WorkflowSpec) -> Path:
        return self.directory(spec) / f"satdrp_{spec.site}.dag"

    def submit_description(self, spec: WorkflowSpec, step: str) -> Any:
        """The step's submit description; per-node values come from the DAG's VARS."""
        import htcondor2

        s = self.settings
        template = Node("$(job)", step, {}, (), (), ())
        argv = job_command(spec, template, s, profiled=True, data_id="$(data_id)")
        base = f"$({MEMORY_VAR})"
        grown = f"int({base} * pow({s.memory_multiplier:g}, NumJobStarts))"
        desc: dict[str, str] = {
            "universe": s.universe,
            "executable": argv[0],
            "arguments": _arguments(argv[1:]),
            "log": NODES_LOG,
            "output": f"logs/{step}/$(job).condor.out",
            "error": f"logs/{step}/$(job).condor.err",
            "request_cpus": "1",
            "request_memory": f"ifThenElse({OOM_LAST_HOLD}, "
            f"min({{{grown}, {s.request_memory_max_mb}}}), {base})",
            "periodic_release": f"{OOM_HOLD} && NumJobStarts <= {s.retries} && "
            f"{grown} <= {s.request_memory_max_mb}",
            "periodic_remove": f"JobStatus == 5 && !({OOM_HOLD} && NumJobStarts <= {s.retries} && "
            f"{grown} <= {s.request_memory_max_mb})",
            "getenv": "false",
            "My.SatdrpRelease": f'"{spec.release}"',
            "My.SatdrpSite": f'"{spec.site}"',
            "My.SatdrpStep": f'"{step}"',
            "My.SatdrpJob": '"$(job)"',
        }
        if s.hold_over_memory:
            desc["periodic_hold"] = "MemoryUsage =!= undefined && MemoryUsage > RequestMemory"
            desc["periodic_hold_reason"] = '"memory usage exceeded request_memory"'
            desc["periodic_hold_subcode"] = "34"
        if s.accounting_group:
            desc["accounting_group"] = s.accounting_group
        if s.requirements:
            desc["requirements"] = s.requirements
        return htcondor2.Submit(desc)

    def memory(self, spec: WorkflowSpec) -> dict[str, int]:
        """Per-node memory requests kept across restarts (the driver's and our own, the larger)."""
        out: dict[str, int] = {}
        for path in (spec.directory / MEMORY_FILE, self.directory(spec) / MEMORY_FILE):
            try:
                for k, v in json.loads(path.read_text()).items():
                    out[k] = max(out.get(k, 0), int(v))
            except FileNotFoundError:
                continue
            except (ValueError, TypeError, AttributeError) as err:
                raise DrpError(f"{path}: unreadable memory record ({err})") from err
        return out

    def dag_lines(self, spec: WorkflowSpec, done: set[str], memory: dict[str, int]) -> Iterator[str]:
        s = self.settings
        d = self.directory(spec)
        yield "# satdrp workflow for site " + spec.site + ", release " + spec.release
        yield "CONFIG dagman.config"
        yield f"NODE_STATUS_FILE {d / 'satdrp.node_status'} 60"
        yield f"JOBSTATE_LOG {d / 'jobstate.log'}"
        for step in STEPS:
            if step in s.max_jobs:
                yield f"MAXJOBS {step} {s.max_jobs[step]}"
        unless = f" UNLESS-EXIT {s.retry_unless_exit[0]}" if s.retry_unless_exit else ""
        for node in spec.nodes():
            mem = memory.get(node.name, s.memory_for(node.step))
            yield f"JOB {node.name} {node.step}.sub" + (" DONE" if node.name in done else "")
            yield (
                f'VARS {node.name} job="{_dag_value(node.name)}" {MEMORY_VAR}="{mem}" '
                f'data_id="{_dag_value(data_id_text(node.data_id))}"'
            )
            if s.retries:
                yield f"RETRY {node.name} {s.retries}{unless}"
            yield f"CATEGORY {node.name} {node.step}"
            if node.parents:
                yield f"PARENT {' '.join(node.parents)} CHILD {node.name}"

    def done(self, spec: WorkflowSpec, nodes: list[Node]) -> set[str]:
        """Nodes that need not run again: their reports say so, or DAGMan's rescue DAG does and their
        outputs are on storage."""
        found = completed(spec, nodes)
        rescue = rescued(self.dag_path(spec))
        if rescue:
            by_name = {n.name: n for n in nodes}
            for name in rescue - found:
                node = by_name.get(name)
                if node is not None and all((spec.root / o).is_file() for o in node.outputs):
                    found.add(name)
        return found

    def write(self, spec: WorkflowSpec) -> Path:
        """Write submit files, dagman.config and the DAG (nodes already done are marked DONE)."""
        d = self.directory(spec)
        d.mkdir(parents=True, exist_ok=True)
        steps = {n.step for n in spec.nodes()}
        for step in sorted(steps):
            (d / "logs" / step).mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(d / f"{step}.sub", (str(self.submit_description(spec, step)) + "\n").encode())
        config = f"DAGMAN_MAX_JOBS_IDLE = {self.settings.max_idle}\n"
        if len(self.settings.retry_unless_exit) > 1:
            config += "# retry_unless_exit: DAGMan takes one UNLESS-EXIT value; the first is used\n"
        write_bytes_atomic(d / "dagman.config", config.encode())
        done = self.done(spec, list(spec.nodes()))
        memory = self.memory(spec)

        def write_dag(tmp: Path) -> None:
            with open(tmp, "w", buffering=1 << 20) as f:
                for line in self.dag_lines(spec, done, memory):
                    f.write(line + "\n")

        atomic_write(self.dag_path(spec), write_dag)
        return self.dag_path(spec)

    # -- the pool --------------------------------------------------------------------------------
    def probe(self) -> list[Probe]:
        where = self.settings.schedd
        if not where:
            return [Probe("schedd", Health.OK, "none configured: DAGs are written for condor_submit_dag")]
        probes = []
        if where != "local":
            host, _, port = where.rpartition(":") if ":" in where else (where, "", "")
            probes.append(tcp("collector", host, int(port) if port.isdigit() else 9618))
            if probes[0].health is not Health.OK:
                return probes
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the bindings have no time-out of their own
            try:
                ad = pool.submit(self._locate).result(timeout=TIMEOUT_S)
            except Exception as err:
                return [
                    *probes,
                    Probe("schedd", Health.UNREACHABLE, f"{type(err).__name__}: {err}".rstrip(": ")),
                ]
        return [*probes, Probe("schedd", Health.OK, f"the collector knows schedd {ad.get('Name', '?')}")]

    def _locate(self) -> Any:
        import htcondor2

        where = self.settings.schedd
        collector = htcondor2.Collector() if where == "local" else htcondor2.Collector(where)
        if self.settings.schedd_name:
            return collector.locate(htcondor2.DaemonType.Schedd, self.settings.schedd_name)
        return collector.locate(htcondor2.DaemonType.Schedd)

    def _schedd(self) -> Any:
        """The schedd, located through the collector; ServiceUnavailableError when the collector is not
        there (checked over TCP first: the bindings can block a long time on a dead address)."""
        import htcondor2

        where = self.settings.schedd
        if where != "local":
            host, _, port = where.rpartition(":") if ":" in where else (where, "", "")
            reach = tcp("collector", host, int(port) if port.isdigit() else 9618)
            if reach.health is not Health.OK:
                raise ServiceUnavailableError(
                    f"the HTCondor collector at {where} cannot be reached: {reach.detail}"
                )
        try:
            ad = self._locate()  # bounded by HTCondor's own query time-out (the call holds the GIL)
        except Exception as err:
            raise ServiceUnavailableError(f"the HTCondor schedd ({where}) cannot be located: {err}") from err
        return htcondor2.Schedd(ad)

    def dagman_submit(self, dag: Path) -> Any:
        """The DAGMan job's submit description, independent of this process's working directory and of
        its HTCondor client configuration."""
        import htcondor2

        dagman = self.settings.dagman or shutil.which("condor_dagman")
        if not dagman:
            raise ConfigError(
                "site catalogue",
                "compute.dagman",
                "condor_dagman is not on this host's PATH: give its path on the schedd's host "
                "(for example /usr/bin/condor_dagman)",
            )
        options = {"force": True, "usedagdir": True, "DagmanPath": dagman}
        options["batch-name"] = self.settings.batch_name or f"satdrp-{dag.stem.removeprefix('satdrp_')}"
        sub = htcondor2.Submit.from_dag(str(dag.resolve()), options)
        sub["initialdir"] = str(dag.parent.resolve())
        keep = [v.strip() for v in str(sub.get("getenv", "")).split(",")]
        sub["getenv"] = ",".join(
            v for v in keep if v and v != "CONDOR_CONFIG" and not v.startswith("_CONDOR_")
        )
        return sub

    def _hand_over(self, spec: WorkflowSpec) -> None:
        """Give ``job_user`` the directories its jobs and DAGMan write (created here if missing)."""
        user = self.settings.job_user
        if not user:
            return
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError as err:
            raise ConfigError("site catalogue", "compute.job_user", f"no user {user!r} on this host") from err
        if uid == os.geteuid():
            return
        layout = Layout(spec.release)
        dirs: set[Path] = set()
        for node in spec.nodes():
            dirs.add(spec.root / layout.job_dir(node.step))
            for out in node.outputs:
                dirs.add((spec.root / out).parent)
        d = self.directory(spec)
        dirs |= {d, *(p for p in (d / "logs").iterdir() if p.is_dir()), d / "logs"}
        expanded = set(dirs)
        for p in dirs:
            for parent in p.parents:
                if parent == spec.root.parent or parent == d.parent:
                    break
                expanded.add(parent)
        try:
            for p in sorted(expanded):
                p.mkdir(parents=True, exist_ok=True)
                os.chown(p, uid, -1)
            for f in d.iterdir():
                if f.is_file():
                    os.chown(f, uid, -1)
        except PermissionError as err:
            raise DrpError(
                f"htcondor: cannot give {p} to job_user {user} ({err}): run as root or unset it"
            ) from err

    # -- the interface ---------------------------------------------------------------------------
    def submitted(self, spec: WorkflowSpec) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads((self.directory(spec) / SUBMITTED_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError as err:
            raise DrpError(f"{self.directory(spec) / SUBMITTED_FILE}: unreadable ({err})") from err
        return record

    def submit(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        """Submit the DAG; a DAG already running is left alone (a driver that died and came back
        resumes watching it), and one that ended is resubmitted with its finished nodes DONE."""
        current = self.poll(spec) if self.submitted(spec) is not None else None
        if current is not None and current.state is RunState.RUNNING:
            return self.wait(spec) if wait else current
        if current is not None:
            self._retire(spec)
        dag = self.write(spec)
        if not self.settings.schedd:
            return RunReport(
                self.name,
                None,
                RunState.NOT_SUBMITTED,
                self.poll(spec).counts,
                f"no schedd configured: submit with `condor_submit_dag {dag.name}` in {dag.parent}",
            )
        self._hand_over(spec)
        sub = self.dagman_submit(dag)
        schedd = self._schedd()  # no collector or no schedd: a wait for the campaign, not a failure
        try:
            result = schedd.submit(sub)
        except Exception as err:  # the bindings raise HTCondorException and plain RuntimeErrors
            raise DrpError(f"htcondor: submitting {dag} failed: {err}") from err
        cluster = result.cluster()
        record = {"cluster": cluster, "dag": str(dag), "submitted_at": time.time()}
        write_json_atomic(self.directory(spec) / SUBMITTED_FILE, record)
        if wait:
            return self.wait(spec)
        return RunReport(self.name, str(cluster), RunState.RUNNING, {}, f"DAGMan job {cluster} submitted")

    def wait(self, spec: WorkflowSpec) -> RunReport:
        while True:
            report = self.poll(spec)
            if report.state is not RunState.RUNNING:
                return report
            time.sleep(self.settings.poll_interval_s)

    def attempts(self, spec: WorkflowSpec) -> list[EventAttempt]:
        log = self.directory(spec) / NODES_LOG
        return read_event_log(log) if log.is_file() else []

    def poll(self, spec: WorkflowSpec) -> RunReport:
        record = self.submitted(spec)
        end, why = DagmanEnd.RUNNING, ""
        if record is not None:
            end, why = dagman_outcome(Path(record["dag"] + ".dagman.log"), int(record["cluster"]))
        latest: dict[str, EventAttempt] = {}
        for a in self.attempts(spec):
            if a.node not in latest or a.number > latest[a.node].number:
                latest[a.node] = a
        nodes = list(spec.nodes())
        done = completed(spec, nodes)
        states: list[tuple[str, NodeState]] = []
        s = self.settings
        for n in nodes:
            found = latest.get(n.name)
            if n.name in done:
                st = NodeState.SUCCEEDED
            elif found is None:
                st = NodeState.PENDING
            elif (
                found.state is NodeState.FAILED
                and found.number <= s.retries
                and found.exit_code not in s.retry_unless_exit
            ):
                st = NodeState.PENDING  # DAGMan will retry it
            else:
                st = found.state
            if (
                end is not DagmanEnd.RUNNING
                and found is not None
                and st in (NodeState.PENDING, NodeState.RUNNING)
            ):
                st = NodeState.CANCELLED if end is DagmanEnd.REMOVED else NodeState.FAILED
            states.append((n.step, st))
        if all(st is NodeState.SUCCEEDED for _, st in states):
            state = RunState.SUCCEEDED
        elif record is None:
            state = RunState.NOT_SUBMITTED
        elif end is DagmanEnd.RUNNING:
            state = RunState.RUNNING
        elif end is DagmanEnd.REMOVED:
            state = RunState.CANCELLED
        else:
            state = RunState.FAILED
            if end is DagmanEnd.SUCCEEDED:
                why = "DAGMan finished but not every job's report and outputs are on storage"
        run_id = str(record["cluster"]) if record is not None else None
        return RunReport(self.name, run_id, state, count_states(states), why)

    def cancel(self, spec: WorkflowSpec) -> RunReport:
        """Remove the DAGMan job (DAGMan removes its node jobs) and wait until its log says it ended."""
        import htcondor2

        report = self.poll(spec)
        if report.state is not RunState.RUNNING or not self.settings.schedd:
            what = "nothing submitted to cancel" if report.run_id is None else f"DAG {report.state.value}"
            return RunReport(self.name, report.run_id, report.state, report.counts, what)
        try:
            self._schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {report.run_id}")
        except Exception as err:
            raise DrpError(f"htcondor: removing DAGMan job {report.run_id} failed: {err}") from err
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            report = self.poll(spec)
            if report.state is not RunState.RUNNING:
                return report
            time.sleep(0.5)
        return RunReport(
            self.name,
            report.run_id,
            report.state,
            report.counts,
            "DAGMan job removed; its end is not logged yet",
        )

    def raised_memory(self, spec: WorkflowSpec) -> dict[str, int]:
        """Node -> memory (MB) for its next run: base × multiplier per out-of-memory hold, capped."""
        s = self.settings
        steps = {n.name: n.step for n in spec.nodes()}
        current = self.memory(spec)
        holds: dict[str, int] = {}
        for a in self.attempts(spec):
            holds[a.node] = holds.get(a.node, 0) + a.oom_holds
        out = dict(current)
        for node, n in holds.items():
            if n and node in steps:
                base = current.get(node, s.memory_for(steps[node]))
                out[node] = min(int(base * s.memory_multiplier**n), s.request_memory_max_mb)
        return out

    def memory_requests(self, spec: WorkflowSpec) -> dict[str, int]:
        return self.memory(spec)

    def _retire(self, spec: WorkflowSpec) -> None:
        """Fold the last run into memory.json and start fresh logs (the old ones are kept, numbered)."""
        write_json_atomic(self.directory(spec) / MEMORY_FILE, self.raised_memory(spec))
        log = self.directory(spec) / NODES_LOG
        if log.is_file():  # the old log's holds are now in memory.json: the next run starts a fresh one
            n = 1
            while (log.with_name(f"{NODES_LOG}.{n}")).exists():
                n += 1
            log.rename(log.with_name(f"{NODES_LOG}.{n}"))
        (self.directory(spec) / SUBMITTED_FILE).unlink(missing_ok=True)

    def restart(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        """Resubmit what did not succeed, with succeeded nodes DONE and raised memory kept."""
        if self.submitted(spec) is None:
            self._retire(spec)  # nothing recorded as submitted: still fold any log left into memory.json
        return self.submit(spec, wait=wait)


def node_names(lines: Iterable[str]) -> list[str]:
    """JOB names in DAG text (for tests and tools)."""
    return [ln.split()[1] for ln in lines if ln.startswith("JOB ")]

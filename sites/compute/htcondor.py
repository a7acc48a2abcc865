"""The ``htcondor`` compute back-end: a DAGMan workflow written with the htcondor2 bindings.

What is written under ``<workflow>/htcondor/``:

- one submit file per step (``calibrate.sub`` …), built as :class:`htcondor2.Submit` objects and
  written from them; every job runs ``drp jobs run --job $(job)`` under the satdrp profiler, so a
  job report lands beside the outputs exactly as with the local back-end;
- the DAG, streamed line by line (``htcondor2.dags`` holds a Python object per node and only knows
  regular edge patterns, and writes ``CATEGORY cat N`` where DAGMan needs ``MAXJOBS cat N``; the
  LSST ctrl_bps plugin also writes its DAG itself): ``JOB``/``VARS``/``RETRY … UNLESS-EXIT``/
  ``CATEGORY`` per node, one ``PARENT … CHILD`` line per node with parents, ``MAXJOBS`` per step,
  ``DONE`` for nodes that already succeeded (that is how a restart skips them);
- ``dagman.config``.

Memory: a job held for exceeding its memory (HoldReasonCode 34, or 3/34) is released with
``request_memory`` × ``memory_multiplier`` per start, up to ``request_memory_max_mb``; past that it
is removed and the node fails. The ctrl_bps pain point is that a restart forgets the raised value;
here :meth:`HTCondorBackend.restart` reads the job event log, raises the node's base request for
every out-of-memory hold, keeps it in ``memory.json`` (and the driver in bookkeeping), and writes it
into the new DAG's ``VARS``.

Submission needs a pool: with ``schedd`` set (``"local"`` or a ``host:port`` address) the DAG is
submitted through ``htcondor2.Submit.from_dag`` and ``Schedd.submit``; without it the files are
written and the report says how to submit them. Status comes from the nodes' job event log, read
with ``htcondor2.JobEventLog``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from common.atomic import atomic_write, write_bytes_atomic, write_json_atomic
from common.errors import DrpError
from common.probes import TIMEOUT_S, Health, Probe, tcp
from science.pipeline.jobs import STEPS
from science.workflow import Node, WorkflowSpec

from .base import BackendSettings, ComputeBackend, NodeState, RunReport, RunState, count_states, job_command
from .local import completed

NODES_LOG = "nodes.log"
MEMORY_FILE = "memory.json"
SUBMITTED_FILE = "submitted.json"
OOM_HOLD = "(HoldReasonCode =?= 34 || (HoldReasonCode =?= 3 && HoldReasonSubCode =?= 34))"
OOM_LAST_HOLD = "(LastHoldReasonCode =?= 34 || (LastHoldReasonCode =?= 3 && LastHoldReasonSubCode =?= 34))"
_USAGE = re.compile(r"Usr (\d+) (\d+):(\d+):(\d+), Sys (\d+) (\d+):(\d+):(\d+)")


class HTCondorSettings(BackendSettings):
    schedd: str = Field(default="", description='"" (write files only), "local", or a schedd host:port')
    universe: str = "vanilla"
    accounting_group: str = ""
    max_idle: int = Field(default=1000, ge=1, description="DAGMAN_MAX_JOBS_IDLE")
    batch_name: str = ""


@dataclass(frozen=True)
class EventAttempt:
    """One execution of a DAG node, as the job event log tells it."""

    node: str
    cluster: int
    number: int  # 1-based, in submission order for the node
    exit_code: int | None
    signal: int | None
    cpu_user: float | None
    cpu_sys: float | None
    peak_rss: int | None  # bytes (largest ResidentSetSize seen)
    memory_requested_mb: int | None
    oom_holds: int
    host: str | None
    state: NodeState
    started_at: float | None
    ended_at: float | None


def _seconds(usage: str) -> tuple[float, float] | None:
    m = _USAGE.search(usage or "")
    if not m:
        return None
    d1, h1, m1, s1, d2, h2, m2, s2 = map(int, m.groups())
    return d1 * 86400 + h1 * 3600 + m1 * 60 + s1, d2 * 86400 + h2 * 3600 + m2 * 60 + s2


def _host(addr: str | None) -> str | None:
    if not addr:
        return None
    return addr.strip("<>").split("?")[0].rsplit(":", 1)[0]


def read_event_log(path: Path) -> list[EventAttempt]:
    """Attempts of every DAG node in a job event log (nodes are named by DAGMan's ``DAG Node:`` note)."""
    import htcondor2

    jobs: dict[int, dict[str, Any]] = {}
    per_node: dict[str, int] = {}
    T = htcondor2.JobEventType
    for ev in htcondor2.JobEventLog(str(path)).events(stop_after=0):
        key = ev.cluster
        if ev.type == T.SUBMIT:
            note = str(ev.get("LogNotes", ""))
            node = note.split("DAG Node:", 1)[1].strip() if "DAG Node:" in note else f"cluster{ev.cluster}"
            per_node[node] = per_node.get(node, 0) + 1
            jobs[key] = {
                "node": node,
                "number": per_node[node],
                "state": NodeState.PENDING,
                "oom": 0,
                "rss": None,
            }
            continue
        job = jobs.get(key)
        if job is None:
            continue
        if ev.type == T.EXECUTE:
            job.update(state=NodeState.RUNNING, host=_host(ev.get("ExecuteHost")), started=ev.timestamp)
        elif ev.type == T.IMAGE_SIZE:
            rss = ev.get("ResidentSetSize")
            if rss is not None:
                job["rss"] = max(job["rss"] or 0, int(rss) * 1024)
        elif ev.type == T.JOB_HELD:
            job["state"] = NodeState.PENDING
            code, sub = ev.get("HoldReasonCode"), ev.get("HoldReasonSubCode")
            if code == 34 or (code == 3 and sub == 34):
                job["oom"] += 1
        elif ev.type == T.JOB_RELEASED:
            job["state"] = NodeState.PENDING
        elif ev.type == T.JOB_TERMINATED:
            normal = bool(ev.get("TerminatedNormally"))
            job["exit"] = int(ev["ReturnValue"]) if normal else None
            job["signal"] = None if normal else int(ev.get("TerminatedBySignal", 0))
            job["state"] = NodeState.SUCCEEDED if normal and job["exit"] == 0 else NodeState.FAILED
            cpu = _seconds(str(ev.get("RunRemoteUsage", "")))
            job["cpu"] = cpu
            job["memory"] = ev.get("RequestMemory")
            if job["rss"] is None and ev.get("MemoryUsage") is not None:
                job["rss"] = int(ev["MemoryUsage"]) * 2**20
            job["ended"] = ev.timestamp
        elif ev.type == T.JOB_ABORTED:
            job.update(state=NodeState.CANCELLED, ended=ev.timestamp)
    out = []
    for cluster, j in jobs.items():
        cpu = j.get("cpu")
        out.append(
            EventAttempt(
                node=j["node"],
                cluster=cluster,
                number=j["number"],
                exit_code=j.get("exit"),
                signal=j.get("signal"),
                cpu_user=cpu[0] if cpu else None,
                cpu_sys=cpu[1] if cpu else None,
                peak_rss=j["rss"],
                memory_requested_mb=int(j["memory"]) if j.get("memory") is not None else None,
                oom_holds=j["oom"],
                host=j.get("host"),
                state=j["state"],
                started_at=j.get("started"),
                ended_at=j.get("ended"),
            )
        )
    return out


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
        argv = job_command(spec, template, s, profiled=True)
        base = "$(request_memory_mb)"
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
        if s.accounting_group:
            desc["accounting_group"] = s.accounting_group
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
            yield f'VARS {node.name} job="{_dag_value(node.name)}" request_memory_mb="{mem}"'
            if s.retries:
                yield f"RETRY {node.name} {s.retries}{unless}"
            yield f"CATEGORY {node.name} {node.step}"
            if node.parents:
                yield f"PARENT {' '.join(node.parents)} CHILD {node.name}"

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
        done = completed(spec, list(spec.nodes()))
        memory = self.memory(spec)

        def write_dag(tmp: Path) -> None:
            with open(tmp, "w", buffering=1 << 20) as f:
                for line in self.dag_lines(spec, done, memory):
                    f.write(line + "\n")

        atomic_write(self.dag_path(spec), write_dag)
        return self.dag_path(spec)

    # -- the interface ---------------------------------------------------------------------------
    def probe(self) -> list[Probe]:
        where = self.settings.schedd
        if not where:
            return [Probe("schedd", Health.OK, "none configured: DAGs are written for condor_submit_dag")]
        if where != "local":
            host, _, port = where.rpartition(":")
            return [tcp("schedd", host, int(port) if port.isdigit() else 9618)]
        import concurrent.futures

        import htcondor2

        def locate() -> str:
            return str(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd).get("Name", "?"))

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the bindings have no time-out of their own
            try:
                name = pool.submit(locate).result(timeout=TIMEOUT_S)
            except Exception as err:
                return [
                    Probe("schedd local", Health.UNREACHABLE, f"{type(err).__name__}: {err}".rstrip(": "))
                ]
        return [Probe("schedd local", Health.OK, f"the collector knows schedd {name}")]

    def _schedd(self) -> Any:
        import classad2
        import htcondor2

        where = self.settings.schedd
        if where == "local":
            return htcondor2.Schedd()
        return htcondor2.Schedd(classad2.ClassAd({"MyAddress": f"<{where}>", "CondorVersion": ""}))

    def submit(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        import htcondor2

        dag = self.write(spec)
        if not self.settings.schedd:
            return RunReport(
                self.name,
                None,
                RunState.NOT_SUBMITTED,
                self.poll(spec).counts,
                f"no schedd configured: submit with `condor_submit_dag {dag.name}` in {dag.parent}",
            )
        try:
            sub = htcondor2.Submit.from_dag(
                str(dag), {"force": True, "BatchName": self.settings.batch_name or f"satdrp-{spec.site}"}
            )
            result = self._schedd().submit(sub)
        except Exception as err:  # the bindings raise HTCondorException and plain RuntimeErrors
            raise DrpError(f"htcondor: submitting {dag} failed: {err}") from err
        cluster = result.cluster()
        write_json_atomic(self.directory(spec) / SUBMITTED_FILE, {"cluster": cluster, "dag": str(dag)})
        return RunReport(self.name, str(cluster), RunState.RUNNING, {}, f"DAGMan job {cluster} submitted")

    def attempts(self, spec: WorkflowSpec) -> list[EventAttempt]:
        log = self.directory(spec) / NODES_LOG
        return read_event_log(log) if log.is_file() else []

    def poll(self, spec: WorkflowSpec) -> RunReport:
        latest: dict[str, EventAttempt] = {}
        for a in self.attempts(spec):
            if a.node not in latest or a.number > latest[a.node].number:
                latest[a.node] = a
        nodes = list(spec.nodes())
        done = completed(spec, nodes)
        states: list[tuple[str, NodeState]] = []
        for n in nodes:
            found = latest.get(n.name)
            if n.name in done:
                st = NodeState.SUCCEEDED
            elif found is None:
                st = NodeState.PENDING
            elif (
                found.state is NodeState.FAILED
                and found.number <= self.settings.retries
                and (found.exit_code not in self.settings.retry_unless_exit)
            ):
                st = NodeState.PENDING  # DAGMan will retry it
            else:
                st = found.state
            states.append((n.step, st))
        submitted = (self.directory(spec) / SUBMITTED_FILE).is_file()
        if all(st is NodeState.SUCCEEDED for _, st in states):
            state = RunState.SUCCEEDED
        elif not submitted:
            state = RunState.NOT_SUBMITTED
        elif any(st in (NodeState.PENDING, NodeState.RUNNING) for _, st in states):
            state = RunState.RUNNING
        elif any(st is NodeState.CANCELLED for _, st in states):
            state = RunState.CANCELLED
        else:
            state = RunState.FAILED
        run_id = None
        if submitted:
            run_id = str(json.loads((self.directory(spec) / SUBMITTED_FILE).read_text())["cluster"])
        return RunReport(self.name, run_id, state, count_states(states))

    def cancel(self, spec: WorkflowSpec) -> RunReport:
        import htcondor2

        report = self.poll(spec)
        if report.run_id is None or not self.settings.schedd:
            return RunReport(
                self.name, report.run_id, report.state, report.counts, "nothing submitted to cancel"
            )
        try:
            self._schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {report.run_id}")
        except Exception as err:
            raise DrpError(f"htcondor: removing DAGMan job {report.run_id} failed: {err}") from err
        return RunReport(self.name, report.run_id, RunState.CANCELLED, report.counts, "DAGMan job removed")

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

    def restart(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        """Rewrite the DAG with succeeded nodes DONE and raised memory kept, then submit it again."""
        memory = self.raised_memory(spec)
        write_json_atomic(self.directory(spec) / MEMORY_FILE, memory)
        log = self.directory(spec) / NODES_LOG
        if log.is_file():  # the old log's holds are now folded into memory.json: start a fresh one
            n = 1
            while (log.with_name(f"{NODES_LOG}.{n}")).exists():
                n += 1
            log.rename(log.with_name(f"{NODES_LOG}.{n}"))
        (self.directory(spec) / SUBMITTED_FILE).unlink(missing_ok=True)
        return self.submit(spec, wait=wait)


def node_names(lines: Iterable[str]) -> list[str]:
    """JOB names in DAG text (for tests and tools)."""
    return [ln.split()[1] for ln in lines if ln.startswith("JOB ")]

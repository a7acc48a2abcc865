"""What HTCondor's own records say about a DAG run: the nodes' job event log, DAGMan's own event log,
and the rescue DAG.

The nodes' log alone cannot tell when a DAG ends: nodes DAGMan never submitted (because the run was
cancelled or a parent failed for good) leave no trace there, so a status read only from it would call
a removed DAG "running" for ever. DAGMan's own job (its log, ``<dag>.dagman.log``) terminates or is
aborted when the run ends; :func:`dagman_outcome` reads that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .base import NodeState

_USAGE = re.compile(r"Usr (\d+) (\d+):(\d+):(\d+), Sys (\d+) (\d+):(\d+):(\d+)")


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


class DagmanEnd(Enum):
    """How DAGMan's own job ended (``RUNNING``: it has not, or its log does not say yet)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  # exit 0: every node done
    FAILED = "failed"  # exit 1: some node failed for good (a rescue DAG was written)
    REMOVED = "removed"  # condor_rm / Schedd.act(Remove): aborted, or exit 2 after SIGUSR1


def dagman_outcome(path: Path, cluster: int) -> tuple[DagmanEnd, str]:
    """The end of DAGMan job ``cluster`` as its own event log records it, and a word on why (a hold
    reason while it is held)."""
    import htcondor2

    if not path.is_file():
        return DagmanEnd.RUNNING, ""
    T = htcondor2.JobEventType
    end, why = DagmanEnd.RUNNING, ""
    for ev in htcondor2.JobEventLog(str(path)).events(stop_after=0):
        if ev.cluster != cluster:
            continue
        if ev.type == T.JOB_ABORTED:
            end, why = DagmanEnd.REMOVED, str(ev.get("Reason", "removed"))
        elif ev.type == T.JOB_HELD:
            why = f"DAGMan job held: {ev.get('HoldReason', '?')}"
        elif ev.type == T.JOB_RELEASED:
            why = ""
        elif ev.type == T.JOB_TERMINATED and end is not DagmanEnd.REMOVED:
            code = int(ev.get("ReturnValue", 1)) if ev.get("TerminatedNormally") else 1
            end = {0: DagmanEnd.SUCCEEDED, 2: DagmanEnd.REMOVED}.get(code, DagmanEnd.FAILED)
            why = f"DAGMan exited with status {code}"
    return end, why


def rescued(dag: Path) -> set[str]:
    """Nodes the newest rescue DAG (``<dag>.rescueNNN``) records as DONE."""
    found = sorted(dag.parent.glob(dag.name + ".rescue[0-9][0-9][0-9]"))
    if not found:
        return set()
    done = set()
    for line in found[-1].read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "DONE":
            done.add(parts[1])
    return done

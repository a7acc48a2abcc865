"""The compute back-end interface: submit a workflow, poll it, cancel it, restart it.

Back-ends are chosen by name in the site catalogue (``[site.compute] backend = "htcondor"``) through
:mod:`sites.compute.registry`; core code only sees :class:`ComputeBackend` and the typed reports here.
Every back-end runs the same job command (:func:`job_command`): ``drp jobs run --job NAME`` under the
profiler, which writes the job report beside the outputs. The driver ingests reports; a back-end only
says where its run stands.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.errors import EXIT_FAILED, EXIT_IN_PROGRESS, EXIT_OK
from common.probes import Probe
from science.layout import Layout
from science.workflow import Node, WorkflowSpec

# Written by the driver beside each workflow: the inputs no job produces, with size and adler32, as
# bookkeeping has them AVAILABLE at the site (what a planner's replica catalogue is built from).
INPUTS_FILE = "inputs.json"
DEFAULT_MEMORY_MB = {"calibrate": 1024, "warp": 512, "coadd": 1024, "measure": 1024, "merge": 512}


class RunState(Enum):
    """Where a submitted workflow stands (the WmsStates of ctrl_bps, reduced to what drives a campaign)."""

    NOT_SUBMITTED = "not_submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # finished, some jobs failed for good: `restart` re-runs them
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # submitted, but the back-end cannot say (e.g. schedd unreachable)


class NodeState(Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunReport:
    """A back-end's view of one workflow run."""

    backend: str
    run_id: str | None
    state: RunState
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # step -> node state -> jobs
    message: str = ""

    @property
    def exit_code(self) -> int:
        """0 succeeded, 3 still running (a detached run), 1 anything else (failed, cancelled, unknown)."""
        if self.state is RunState.SUCCEEDED:
            return EXIT_OK
        return EXIT_IN_PROGRESS if self.state is RunState.RUNNING else EXIT_FAILED

    def total(self, state: NodeState) -> int:
        return sum(c.get(state.value, 0) for c in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "run_id": self.run_id,
            "state": self.state.value,
            "counts": self.counts,
            "message": self.message,
        }


def count_states(pairs: Any) -> dict[str, dict[str, int]]:
    """(step, NodeState) pairs -> step -> state -> count."""
    counter: Counter[tuple[str, str]] = Counter((step, st.value) for step, st in pairs)
    out: dict[str, dict[str, int]] = {}
    for (step, st), n in sorted(counter.items()):
        out.setdefault(step, {})[st] = n
    return out


class BackendSettings(BaseModel):
    """Settings every back-end understands; a back-end's own model adds its keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(default=2, ge=0, le=20, description="re-runs of a failed job")
    retry_unless_exit: tuple[int, ...] = Field(
        default=(2,), description="exit codes that are not retried (2: bad input, a retry cannot help)"
    )
    request_memory_mb: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MEMORY_MB))
    memory_multiplier: float = Field(default=2.0, ge=1.0, le=16.0, description="after an OOM failure")
    request_memory_max_mb: int = Field(default=65536, ge=64)
    max_jobs: dict[str, int] = Field(default_factory=dict, description="per-step throttle")
    sample_interval_s: float = Field(default=0.0, ge=0.0, description="profiler time series (0: off)")
    python: str = Field(default="", description="python on the workers (default: this interpreter)")
    command: tuple[str, ...] = Field(
        default=(), description="run COMMAND… JOB_NAME instead of `drp jobs run` (a site wrapper, tests)"
    )

    @field_validator("request_memory_mb", "max_jobs")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if n <= 0:
                raise ValueError(f"{k}: must be a positive integer (got {n})")
        return v

    def memory_for(self, step: str) -> int:
        return self.request_memory_mb.get(step, DEFAULT_MEMORY_MB.get(step, 1024))

    def python_exe(self) -> str:
        return self.python or sys.executable


_UNQUOTABLE = frozenset(",=\"' \n\\")


def data_id_text(data_id: dict[str, Any]) -> str:
    """A data id as ``key=value,…``: what a batch system's variables carry without quoting."""
    for k, v in data_id.items():
        if any(c in f"{k}{v}" for c in _UNQUOTABLE):
            raise ValueError(f"data id {data_id!r}: {k}={v} cannot be passed unquoted")
    return ",".join(f"{k}={v}" for k, v in data_id.items())


def job_command(
    spec: WorkflowSpec, node: Node, settings: BackendSettings, *, profiled: bool, data_id: str | None = None
) -> list[str]:
    """The command a back-end runs for a node. ``profiled`` wraps it in the profiler (batch systems);
    the local executor profiles its children itself and takes ``profiled=False``. ``data_id``
    replaces the node's (a DAG template passes ``$(data_id)``)."""
    py = settings.python_exe()
    if settings.command:
        run = [*settings.command, node.name]
    else:
        run = [py, "-m", "cli", "jobs", "run", "--job", node.name, "--root", str(spec.root)]
        run += ["--release", spec.release]
    if not profiled:
        return run
    report_dir = spec.root / Layout(spec.release).job_dir(node.step)
    wrap = [py, "-m", "instrumentation.profiler", "--report-dir", str(report_dir), "--job", node.name]
    wrap += ["--step", node.step, "--data-id", data_id if data_id is not None else data_id_text(node.data_id)]
    if settings.sample_interval_s:
        wrap += ["--interval", f"{settings.sample_interval_s:g}"]
    return [*wrap, "--", *run]


class ComputeBackend(ABC):
    """A compute back-end for one site. Subclasses set ``name`` and ``Settings``."""

    name: ClassVar[str]
    Settings: ClassVar[type[BackendSettings]] = BackendSettings

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    @abstractmethod
    def submit(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        """Start running the workflow (``wait``: in the foreground, until it finishes)."""

    @abstractmethod
    def poll(self, spec: WorkflowSpec) -> RunReport:
        """Where the run stands, from the back-end's own records."""

    @abstractmethod
    def cancel(self, spec: WorkflowSpec) -> RunReport:
        """Stop the run; finished jobs stay finished."""

    @abstractmethod
    def restart(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        """Run what did not succeed, never re-running a succeeded job."""

    @abstractmethod
    def probe(self) -> list[Probe]:
        """For `drp doctor`: can this back-end reach its scheduler (short time-outs, no raising)?"""

    def memory_requests(self, spec: WorkflowSpec) -> dict[str, int]:
        """Per-job memory requests (MB) that differ from the step default, for bookkeeping."""
        return {}

"""The ``local`` compute back-end: a process pool on this machine (the embedded default).

One executor runs the DAG: stdlib :mod:`graphlib` says which jobs are ready and its thread decides
what to start, what to retry and when to stop; a launcher (:mod:`.launch`) starts the jobs under the
profiler and hands back their written reports. By default jobs are forked from this process after the
pipeline is imported (1.2 s of imports saved per job), from the executor's one thread; a job that is a
command (``preload = false`` execs ``drp jobs run``, or ``command``) is spawned by one launcher thread
per worker. SIGINT and SIGTERM are blocked and checked on every wake-up (at most ``_TICK_S`` apart), so
a finished job, a Ctrl-C and a scheduler's TERM are all handled in one place.

Resuming: the job reports on storage are the record. A job whose latest report succeeded and whose
outputs exist is done and never re-run; everything else runs again with a fresh retry budget (like a
DAGMan rescue DAG). Retries: a failed job is re-run up to ``retries`` times unless its exit code is in
``retry_unless_exit``. Cancelling (SIGINT/SIGTERM, or :meth:`LocalBackend.cancel`): running jobs get
SIGTERM, then SIGKILL after ``grace_s``; their reports record the signal. Children die with the
executor (PR_SET_PDEATHSIG), so ``kill -9`` of the executor leaves no orphan writing outputs.
"""

from __future__ import annotations

import graphlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from common.atomic import write_json_atomic
from common.probes import Health, Probe
from common.temporaries import pid_exists
from instrumentation.profiler import JobReport, Profiler, read_report
from science.layout import Layout
from science.workflow import Node, WorkflowSpec

from .base import BackendSettings, ComputeBackend, NodeState, RunReport, RunState, count_states
from .launch import Finished, LaunchContext, Launcher, make_launcher

STATE_FILE = "state.json"
PID_FILE = "executor.pid"
_STATE_EVERY_S = 1.0
_TICK_S = 0.25  # longest sleep between checks for SIGINT/SIGTERM
_STOP = frozenset({signal.SIGINT, signal.SIGTERM})


_caught: list[int] = []


def _catch(signum: int, _frame: Any) -> None:
    _caught.append(signum)


def _stop_requested() -> bool:
    """Consume a pending (blocked) SIGINT/SIGTERM, or one caught by :func:`_catch`: a thread started
    before the mask was set (OpenBLAS starts some when numpy is imported) still takes the signal."""
    pending = signal.sigpending() & _STOP
    if pending:
        signal.sigtimedwait(pending, 0)
    caught = bool(_caught)
    _caught.clear()
    return bool(pending) or caught


def _install(handlers: Any) -> dict[int, Any]:
    """Set SIGINT/SIGTERM handlers (one for both, or a dict from a previous call); returns the old
    ones. Outside the main thread Python cannot set handlers: the signal mask alone then applies."""
    old: dict[int, Any] = {}
    for sig in _STOP:
        try:
            old[sig] = signal.signal(sig, handlers[sig] if isinstance(handlers, dict) else handlers)
        except (ValueError, KeyError):
            continue
    return old


class LocalSettings(BackendSettings):
    max_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    preload: bool = Field(default=True, description="fork jobs from a process with the pipeline imported")
    grace_s: float = Field(default=10.0, ge=0.0, description="SIGTERM to SIGKILL on cancel")


def run_dir(spec: WorkflowSpec) -> Path:
    return spec.directory / "local"


def latest_reports(spec: WorkflowSpec, steps: set[str]) -> dict[str, JobReport]:
    """The latest readable report of every job that has one (unreadable ones count as not run)."""
    layout = Layout(spec.release)
    best: dict[str, tuple[int, Path]] = {}
    for step in steps:
        d = spec.root / layout.job_dir(step)
        if not d.is_dir():
            continue
        for p in d.glob("*.json"):
            name, _, num = p.stem.rpartition(".")
            if num.isdigit() and (name not in best or int(num) > best[name][0]):
                best[name] = (int(num), p)
    out: dict[str, JobReport] = {}
    for name, (_, p) in best.items():
        try:
            out[name] = read_report(p)
        except ValueError:
            continue
    return out


def completed(spec: WorkflowSpec, nodes: list[Node]) -> set[str]:
    """Jobs done already: latest report succeeded and every output still on storage."""
    reports = latest_reports(spec, {n.step for n in nodes})
    return {
        n.name
        for n in nodes
        if (r := reports.get(n.name)) is not None
        and r.succeeded
        and all((spec.root / o).is_file() for o in n.outputs)
    }


class Executor:
    """Runs one workflow to the end (or until cancelled) in the calling process."""

    def __init__(self, spec: WorkflowSpec, settings: LocalSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.profiler = Profiler()
        self.states: dict[str, NodeState] = {}
        self.step_of: dict[str, str] = {}
        self.by_name: dict[str, Node] = {}
        self._last_state_write = 0.0
        self._cancelled = False

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> RunReport:
        nodes = list(self.spec.nodes())
        self.by_name = by_name = {n.name: n for n in nodes}
        done = completed(self.spec, nodes)
        self.step_of = {n.name: n.step for n in nodes}
        self.states = {n.name: NodeState.SUCCEEDED if n.name in done else NodeState.PENDING for n in nodes}
        graph: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for n in nodes:
            graph.add(n.name, *(p for p in n.parents if p in by_name))
        graph.prepare()
        preloaded = self.settings.preload and not self.settings.command
        target = self._preloaded_target() if preloaded else None
        queue: deque[Node] = deque()
        tries: Counter[str] = Counter()
        per_step: Counter[str] = Counter()
        old_handlers = _install(_catch)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
        # After the mask: launcher threads inherit it, so SIGINT/SIGTERM reach this thread only.
        ctx = LaunchContext(self.spec, self.settings, self.profiler, self.settings.max_workers, self._started)
        launcher = make_launcher(ctx, target)
        write_json_atomic(run_dir(self.spec) / PID_FILE, {"pid": os.getpid(), "started_at": time.time()})
        interval = self.settings.sample_interval_s
        next_sample = time.monotonic() + interval
        try:
            while True:
                self._take_ready(graph, queue, done)
                self._launch(queue, launcher, per_step, tries)
                self._write_state(RunState.RUNNING)
                if not launcher.running:
                    break
                timeout = min(_TICK_S, max(0.0, next_sample - time.monotonic())) if interval else _TICK_S
                for finished in launcher.collect(timeout):
                    per_step[finished.node.step] -= 1
                    self._finished(finished, graph, queue, done)
                if _stop_requested():
                    self._cancelled = True
                    for finished in launcher.cancel(self.settings.grace_s, _TICK_S):
                        self._finished(finished, graph, queue, done)
                    break
                if interval and time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + interval
                    launcher.sample()
        finally:
            launcher.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            _install(old_handlers)
        if self._cancelled:
            final = RunState.CANCELLED
        elif all(s is NodeState.SUCCEEDED for s in self.states.values()):
            final = RunState.SUCCEEDED
        else:
            final = RunState.FAILED
        report = self._write_state(final, force=True)
        assert report is not None
        return report

    def _preloaded_target(self) -> Callable[[str], Callable[[], int]]:
        from science.pipeline.jobs import ReleaseContext, job_main, preload

        preload()
        ctx = ReleaseContext(self.spec.root, self.spec.release)
        _ = ctx.skymap, ctx.visits_on(0, 0)  # build caches once, before forking

        def target(name: str) -> Callable[[], int]:
            return lambda: job_main(ctx, name)

        return target

    def _take_ready(self, graph: graphlib.TopologicalSorter[str], queue: deque[Node], done: set[str]) -> None:
        nodes_ready = list(graph.get_ready())
        while nodes_ready:
            follow: list[str] = []
            for name in nodes_ready:
                if name in done:
                    graph.done(name)
                    follow.extend(graph.get_ready())
                else:
                    queue.append(self.by_name[name])
            nodes_ready = follow

    def _launch(
        self, queue: deque[Node], launcher: Launcher, per_step: Counter[str], tries: Counter[str]
    ) -> None:
        deferred: list[Node] = []
        while queue and launcher.running < launcher.slots:
            node = queue.popleft()
            limit = self.settings.max_jobs.get(node.step)
            if limit is not None and per_step[node.step] >= limit:
                deferred.append(node)
                continue
            tries[node.name] += 1
            launcher.start(node, may_retry=tries[node.name] <= self.settings.retries)
            per_step[node.step] += 1
        queue.extendleft(reversed(deferred))

    def _started(self, node: Node) -> None:
        """Called by the launcher (from its thread) once the job runs: replacing a value of an existing
        key is atomic, and the counting in :meth:`_write_state` never sees the dict change size."""
        self.states[node.name] = NodeState.RUNNING

    def _finished(
        self, finished: Finished, graph: graphlib.TopologicalSorter[str], queue: deque[Node], done: set[str]
    ) -> None:
        node, report = finished.node, finished.report
        if report is None:  # taken back by a cancel before it started
            self.states[node.name] = NodeState.PENDING
        elif report.succeeded:
            self.states[node.name] = NodeState.SUCCEEDED
            if not self._cancelled:
                done.add(node.name)
                graph.done(node.name)
        elif report.will_retry:
            self.states[node.name] = NodeState.PENDING
            queue.append(node)
        else:
            self.states[node.name] = NodeState.CANCELLED if self._cancelled else NodeState.FAILED

    def _write_state(self, state: RunState, *, force: bool = False) -> RunReport | None:
        """Write the state file (at most once a second unless forced: counting is O(jobs))."""
        now = time.monotonic()
        if not force and now - self._last_state_write <= _STATE_EVERY_S:
            return None
        report = RunReport(
            "local",
            str(os.getpid()),
            state,
            count_states((self.step_of[n], s) for n, s in self.states.items()),
        )
        self._last_state_write = now
        write_json_atomic(run_dir(self.spec) / STATE_FILE, {**report.to_dict(), "updated_at": time.time()})
        return report


def _alive(pid: int) -> bool:
    if not pid_exists(pid):
        return False
    try:  # a zombie (our own detached child, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalBackend(ComputeBackend):
    name = "local"
    Settings = LocalSettings
    settings: LocalSettings

    def probe(self) -> list[Probe]:
        cores = os.cpu_count() or 1
        detail = f"{self.settings.max_workers} workers on this host ({cores} cores)"
        return [Probe("executor", Health.OK, detail)]

    def submit(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        current = self.poll(spec)
        if current.state is RunState.RUNNING:
            return current  # idempotent: one executor per workflow
        if wait:
            return Executor(spec, self.settings).run()
        d = run_dir(spec)
        d.mkdir(parents=True, exist_ok=True)
        # The last run's state file must not speak for this one before the new executor writes its own
        # (a restart read as the old run's SUCCEEDED or FAILED a moment after it was started).
        starting = RunReport("local", None, RunState.RUNNING, current.counts, "executor starting")
        write_json_atomic(d / STATE_FILE, {**starting.to_dict(), "updated_at": time.time()})
        with open(d / "executor.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sites.compute.local",
                    str(spec.directory),
                    self.settings.model_dump_json(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        write_json_atomic(d / PID_FILE, {"pid": proc.pid, "started_at": time.time()})
        return RunReport("local", str(proc.pid), RunState.RUNNING, current.counts, "executor started")

    def poll(self, spec: WorkflowSpec) -> RunReport:
        d = run_dir(spec)
        try:
            state = json.loads((d / STATE_FILE).read_text())
        except (OSError, ValueError):
            state = None
        try:
            pid = int(json.loads((d / PID_FILE).read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pid = None
        if state is None:
            if pid is not None and _alive(pid):
                return RunReport("local", str(pid), RunState.RUNNING, {}, "starting")
            nodes = list(spec.nodes())  # never run here: what storage says is done, the rest pending
            done = completed(spec, nodes)
            counts = count_states(
                (n.step, NodeState.SUCCEEDED if n.name in done else NodeState.PENDING) for n in nodes
            )
            return RunReport("local", None, RunState.NOT_SUBMITTED, counts)
        recorded = RunState(state["state"])
        if recorded is RunState.RUNNING and (pid is None or not _alive(pid)):
            return RunReport(
                "local",
                state.get("run_id"),
                RunState.FAILED,
                state["counts"],
                "the executor stopped without finishing (killed?); restart resumes it",
            )
        run_id = state.get("run_id") or (str(pid) if pid is not None else None)  # None: still starting
        return RunReport("local", run_id, recorded, state["counts"], state.get("message", ""))

    def cancel(self, spec: WorkflowSpec) -> RunReport:
        report = self.poll(spec)
        if report.state is RunState.RUNNING and report.run_id:
            pid = int(report.run_id)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.settings.grace_s + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        return self.poll(spec)

    def restart(self, spec: WorkflowSpec, *, wait: bool = False) -> RunReport:
        return self.submit(spec, wait=wait)


def main(argv: list[str]) -> int:
    """Detached executor: ``python -m sites.compute.local WORKFLOW_DIR SETTINGS_JSON``."""
    spec = WorkflowSpec.load(Path(argv[0]))
    settings = LocalSettings.model_validate_json(argv[1])
    report = Executor(spec, settings).run()
    return 0 if report.state is RunState.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

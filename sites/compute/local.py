"""The ``local`` compute back-end: a process pool on this machine (the embedded default).

One single-threaded executor runs the DAG: stdlib :mod:`graphlib` says which jobs are ready, each
job is forked under the profiler (by default from this process after the pipeline is imported, which
saves 1.2 s of imports per job; ``preload = false`` execs ``drp jobs run`` instead), and the loop
sleeps in ``poll`` on one pidfd per running child (race-free, unlike SIGCHLD, which coalesces and which
``posix_spawn`` children were seen to lose), with SIGINT and SIGTERM blocked and checked on every wake-up
(at most ``_TICK_S`` apart), so a finished child, a Ctrl-C and a scheduler's TERM are all handled in one
place, without threads (forking from a threaded process is unsafe).

Resuming: the job reports on storage are the record. A job whose latest report succeeded and whose
outputs exist is done and never re-run; everything else runs again with a fresh retry budget (like a
DAGMan rescue DAG). Retries: a failed job is re-run up to ``retries`` times unless its exit code is in
``retry_unless_exit``. Cancelling (SIGINT/SIGTERM, or :meth:`LocalBackend.cancel`): running jobs get
SIGTERM, then SIGKILL after ``grace_s``; their reports record the signal. Children die with the
executor (PR_SET_PDEATHSIG), so ``kill -9`` of the executor leaves no orphan writing outputs.
"""

from __future__ import annotations

import dataclasses
import graphlib
import json
import os
import select
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
from instrumentation.profiler import JobReport, Profiler, Running, open_attempt, read_report, reap
from science.layout import Layout
from science.workflow import Node, WorkflowSpec

from .base import BackendSettings, ComputeBackend, NodeState, RunReport, RunState, count_states, job_command

STATE_FILE = "state.json"
PID_FILE = "executor.pid"
_STATE_EVERY_S = 1.0
# Reports are renamed into place without fsync (one fsync per job halved throughput on small jobs): a
# report lost to a power cut reads as "not run" and the job runs again, which is the resume rule anyway.
_DURABLE_REPORTS = False
_TICK_S = 0.25  # longest sleep between checks for SIGINT/SIGTERM
_STOP = frozenset({signal.SIGINT, signal.SIGTERM})


class _Children:
    """Running children watched through pidfds: ``wait`` returns the pids that have exited."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._pid_of: dict[int, int] = {}

    def add(self, pid: int) -> None:
        fd = os.pidfd_open(pid)
        self._poll.register(fd, select.POLLIN)
        self._pid_of[fd] = pid

    def wait(self, timeout_s: float) -> list[int]:
        exited = []
        for fd, _ in self._poll.poll(max(0, int(timeout_s * 1000))):
            self._poll.unregister(fd)
            os.close(fd)
            exited.append(self._pid_of.pop(fd))
        return exited

    def close(self) -> None:
        for fd in self._pid_of:
            os.close(fd)
        self._pid_of.clear()


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
        self.layout = Layout(spec.release)
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
        running: dict[int, tuple[Running, Node]] = {}
        tries: Counter[str] = Counter()
        per_step: Counter[str] = Counter()
        children = _Children()
        old_handlers = _install(_catch)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
        write_json_atomic(run_dir(self.spec) / PID_FILE, {"pid": os.getpid(), "started_at": time.time()})
        interval = self.settings.sample_interval_s
        next_sample = time.monotonic() + interval
        try:
            while True:
                self._take_ready(graph, queue, done)
                self._launch(queue, running, per_step, tries, target, children)
                self._write_state(RunState.RUNNING)
                if not running:
                    break
                timeout = min(_TICK_S, max(0.0, next_sample - time.monotonic())) if interval else _TICK_S
                for pid in children.wait(timeout):  # reaped before a cancel: wait() forgets them
                    finished = reap(pid)
                    assert finished is not None
                    run, node = running.pop(pid)
                    per_step[node.step] -= 1
                    self._finished(run, node, *finished, graph, queue, tries, done)
                if _stop_requested():
                    self._cancel(running, per_step, children)
                    break
                if interval and time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + interval
                    for run, _ in running.values():
                        self.profiler.sample(run)
        finally:
            children.close()
            for run, _ in running.values():
                self.profiler.close(run)
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
        self,
        queue: deque[Node],
        running: dict[int, tuple[Running, Node]],
        per_step: Counter[str],
        tries: Counter[str],
        target: Callable[[str], Callable[[], int]] | None,
        children: _Children,
    ) -> None:
        deferred: list[Node] = []
        while queue and len(running) < self.settings.max_workers:
            node = queue.popleft()
            limit = self.settings.max_jobs.get(node.step)
            if limit is not None and per_step[node.step] >= limit:
                deferred.append(node)
                continue
            attempt = open_attempt(self.spec.root / self.layout.job_dir(node.step), node.name)
            command = job_command(self.spec, node, self.settings, profiled=False)
            run = self.profiler.start(
                target(node.name) if target is not None else command,
                job=node.name,
                step=node.step,
                data_id=node.data_id,
                attempt=attempt.number,
                command=command,
                stdout=attempt.stdout,
                stderr=attempt.stderr,
                fds=attempt.fds,
            )
            running[run.pid] = (run, node)
            children.add(run.pid)
            per_step[node.step] += 1
            tries[node.name] += 1
            self.states[node.name] = NodeState.RUNNING
        queue.extendleft(reversed(deferred))

    def _finished(
        self,
        run: Running,
        node: Node,
        status: int,
        usage: Any,
        graph: graphlib.TopologicalSorter[str],
        queue: deque[Node],
        tries: Counter[str],
        done: set[str],
    ) -> None:
        missing = [o for o in node.outputs if not (self.spec.root / o).is_file()]
        report = self.profiler.finish(run, status, usage, missing_outputs=missing if status == 0 else ())
        self.profiler.close(run)
        retry = (
            not report.succeeded
            and not self._cancelled
            and report.exit_code not in self.settings.retry_unless_exit
            and tries[node.name] <= self.settings.retries
        )
        if retry:
            report = dataclasses.replace(report, will_retry=True)
        report.write(self._report_path(node, run), durable=_DURABLE_REPORTS)
        if report.succeeded:
            self.states[node.name] = NodeState.SUCCEEDED
            done.add(node.name)
            graph.done(node.name)
        elif retry:
            self.states[node.name] = NodeState.PENDING
            queue.append(node)
        else:
            self.states[node.name] = NodeState.CANCELLED if self._cancelled else NodeState.FAILED

    def _report_path(self, node: Node, run: Running) -> Path:
        return self.spec.root / self.layout.job_log(node.step, node.name, run.attempt, "json")

    def _cancel(
        self, running: dict[int, tuple[Running, Node]], per_step: Counter[str], children: _Children
    ) -> None:
        self._cancelled = True
        for pid in running:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_s
        killed = False
        while running:
            for pid in children.wait(_TICK_S):
                finished = reap(pid)
                assert finished is not None
                run, node = running.pop(pid)
                per_step[node.step] -= 1
                report = self.profiler.finish(run, *finished)
                self.profiler.close(run)
                report.write(self._report_path(node, run), durable=_DURABLE_REPORTS)
                self.states[node.name] = NodeState.SUCCEEDED if report.succeeded else NodeState.CANCELLED
            if running and not killed and time.monotonic() > deadline:
                killed = True
                for pid in running:
                    _signal_group(pid, signal.SIGKILL)

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


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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

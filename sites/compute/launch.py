"""How the local executor starts its jobs and learns that they ended.

Two launchers behind one small interface, chosen by how a job starts:

- :class:`ForkLauncher`: the pre-loaded mode forks a Python function. It runs in the executor's only
  thread (forking from a threaded process can leave a lock held forever in the child), and sleeps in
  ``poll`` on one pidfd per running child.
- :class:`ThreadLauncher`: a job that is a command is started with ``posix_spawn`` (vfork + exec, safe
  in a threaded process) by one launcher thread per worker. Each thread creates the job's logs, spawns,
  waits (``waitid`` releases the GIL) and writes the report, so the spawns, the file creations and the
  waits of different jobs overlap. With one driver thread doing all of it, the spawns were serialised:
  62 % of the executor's time on trivial jobs (issue 22).

Either way a finished job's report is written by the launcher, with ``will_retry`` decided there from
the retry budget the executor gave when it started the job.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace

from instrumentation.profiler import JobReport, Profiler, Running, Usage, open_attempt, reap
from science.layout import Layout
from science.workflow import Node, WorkflowSpec

from .base import BackendSettings, job_command

# Reports are renamed into place without fsync (one fsync per job halved throughput on small jobs): a
# report lost to a power cut reads as "not run" and the job runs again, which is the resume rule anyway.
_DURABLE_REPORTS = False

Target = Callable[[str], Callable[[], int]]


@dataclass(frozen=True)
class Finished:
    """A job that ended (its report is on storage), or that was never started (``report`` None:
    taken back from the launch queue by a cancel)."""

    node: Node
    report: JobReport | None


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class LaunchContext:
    """What every launcher is given: the workflow, the back-end's settings, the profiler, how many jobs
    run at once, and ``on_start(node)``, called when a job's process exists (the executor marks it
    running)."""

    spec: WorkflowSpec
    settings: BackendSettings
    profiler: Profiler
    workers: int
    on_start: Callable[[Node], None]


class Launcher(ABC):
    """Starts jobs and hands back the finished ones. ``running`` counts the jobs given to :meth:`start`
    and not yet collected, ``slots`` how many it takes at once."""

    def __init__(self, ctx: LaunchContext) -> None:
        self.spec = ctx.spec
        self.settings = ctx.settings
        self.profiler = ctx.profiler
        self.layout = Layout(ctx.spec.release)
        self.slots = ctx.workers
        self.on_start = ctx.on_start
        self.running = 0
        self.cancelled = False

    @abstractmethod
    def start(self, node: Node, *, may_retry: bool) -> None:
        """Start ``node``; ``may_retry``: its retry budget is not spent."""

    @abstractmethod
    def collect(self, timeout_s: float) -> list[Finished]:
        """The jobs that ended, waiting up to ``timeout_s`` for the first one."""

    @abstractmethod
    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to the process group of every running job."""

    @abstractmethod
    def sample(self) -> None:
        """Add a time-series point to every running job."""

    @abstractmethod
    def close(self) -> None:
        """Release what the launcher holds (after the last :meth:`collect`)."""

    def cancel(self, grace_s: float, tick_s: float) -> list[Finished]:
        """SIGTERM every running job, SIGKILL after ``grace_s``; collect them all."""
        self.cancelled = True
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        killed = False
        out: list[Finished] = []
        while self.running:
            out.extend(self.collect(tick_s))
            if self.running and not killed and time.monotonic() > deadline:
                killed = True
                self.signal_all(signal.SIGKILL)
        return out

    def _open(self, node: Node, function: Callable[[], int] | None = None) -> Running:
        """Claim the node's next attempt and start it under the profiler (``function``: forked
        instead of exec'ing the node's command)."""
        attempt = open_attempt(self.spec.root / self.layout.job_dir(node.step), node.name)
        command = job_command(self.spec, node, self.settings, profiled=False)
        return self.profiler.start(
            function if function is not None else command,
            job=node.name,
            step=node.step,
            data_id=node.data_id,
            attempt=attempt.number,
            command=command,
            stdout=attempt.stdout,
            stderr=attempt.stderr,
            fds=attempt.fds,
        )

    def _complete(self, run: Running, node: Node, status: int, usage: Usage, may_retry: bool) -> JobReport:
        """Turn a reaped job into its report, decide the retry, write the report."""
        missing = [o for o in node.outputs if not (self.spec.root / o).is_file()] if status == 0 else []
        try:
            report = self.profiler.finish(run, status, usage, missing_outputs=missing)
        finally:
            self.profiler.close(run)
        if (
            not report.succeeded
            and may_retry
            and not self.cancelled
            and report.exit_code not in self.settings.retry_unless_exit
        ):
            report = replace(report, will_retry=True)
        path = self.spec.root / self.layout.job_log(node.step, node.name, run.attempt, "json")
        report.write(path, durable=_DURABLE_REPORTS)
        return report


class ForkLauncher(Launcher):
    """Forks each job from the executor's thread; running children are watched through pidfds."""

    def __init__(self, ctx: LaunchContext, target: Target) -> None:
        super().__init__(ctx)
        self._target = target
        self._poll = select.poll()
        self._jobs: dict[int, tuple[int, Running, Node, bool]] = {}  # pidfd -> (pid, run, node, may_retry)

    def start(self, node: Node, *, may_retry: bool) -> None:
        run = self._open(node, self._target(node.name))
        fd = os.pidfd_open(run.pid)
        self._poll.register(fd, select.POLLIN)
        self._jobs[fd] = (run.pid, run, node, may_retry)
        self.running += 1
        self.on_start(node)

    def collect(self, timeout_s: float) -> list[Finished]:
        out = []
        for fd, _ in self._poll.poll(max(0, int(timeout_s * 1000))):
            self._poll.unregister(fd)
            os.close(fd)
            pid, run, node, may_retry = self._jobs.pop(fd)
            self.running -= 1
            finished = reap(pid)
            assert finished is not None
            out.append(Finished(node, self._complete(run, node, *finished, may_retry)))
        return out

    def signal_all(self, sig: int) -> None:
        for pid, *_ in self._jobs.values():
            signal_group(pid, sig)

    def sample(self) -> None:
        for _, run, _, _ in self._jobs.values():
            self.profiler.sample(run)

    def close(self) -> None:
        for fd, (_, run, _, _) in self._jobs.items():
            os.close(fd)
            self.profiler.close(run)
        self._jobs.clear()


_STOP_THREAD = None


class ThreadLauncher(Launcher):
    """One launcher thread per worker; each runs a job from spawn to written report.

    It takes twice as many jobs as it has threads: each thread finds its next job queued when one
    ends, instead of idling while the executor's thread wakes up to hand it one. The threads are
    started by the executor after it blocked SIGINT/SIGTERM, so they inherit the mask and the
    executor's thread alone takes those signals."""

    def __init__(self, ctx: LaunchContext) -> None:
        super().__init__(ctx)
        self.slots = 2 * ctx.workers
        self._todo: queue.SimpleQueue[tuple[Node, bool] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Finished | BaseException] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._runs: dict[int, Running] = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"drp-launch-{i}", daemon=True)
            for i in range(ctx.workers)
        ]
        for t in self._threads:
            t.start()

    def start(self, node: Node, *, may_retry: bool) -> None:
        self.running += 1
        self._todo.put((node, may_retry))

    def _work(self) -> None:
        while (item := self._todo.get()) is not _STOP_THREAD:
            node, may_retry = item
            try:
                self._done.put(self._one(node, may_retry))
            except BaseException as err:  # handed to the executor's thread, which raises it
                self._done.put(err)

    def _one(self, node: Node, may_retry: bool) -> Finished:
        if self.cancelled:
            return Finished(node, None)
        self.on_start(node)
        run = self._open(node)
        with self._lock:
            self._runs[run.pid] = run
            if self.cancelled:  # the cancel's SIGTERM went out before this job existed
                signal_group(run.pid, signal.SIGTERM)
        try:
            finished = reap(run.pid)
        finally:
            with self._lock:
                del self._runs[run.pid]
        assert finished is not None
        return Finished(node, self._complete(run, node, *finished, may_retry))

    def collect(self, timeout_s: float) -> list[Finished]:
        out: list[Finished | BaseException] = []
        try:
            out.append(self._done.get(timeout=max(0.0, timeout_s)))
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        self.running -= len(out)
        for item in out:
            if isinstance(item, BaseException):
                raise item
        return [f for f in out if isinstance(f, Finished)]

    def signal_all(self, sig: int) -> None:
        with self._lock:
            for pid in self._runs:
                signal_group(pid, sig)

    def sample(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            self.profiler.sample(run)

    def close(self) -> None:
        if self.running:  # an error left jobs behind: stop them rather than leave threads waiting
            self.cancelled = True
            self.signal_all(signal.SIGKILL)
        for _ in self._threads:
            self._todo.put(_STOP_THREAD)
        for t in self._threads:
            t.join(timeout=5)


def make_launcher(ctx: LaunchContext, target: Target | None) -> Launcher:
    """The fork launcher for a pre-loaded function, the thread launcher for a command."""
    return ForkLauncher(ctx, target) if target is not None else ThreadLauncher(ctx)


__all__ = ["Finished", "LaunchContext", "Launcher", "make_launcher", "signal_group"]

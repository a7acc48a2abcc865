"""Per-job profiling: run a job as a child process and record what it cost and how it ended.

Whatever the back-end, a job runs under this profiler and leaves a versioned **job report** (JSON)
beside the release outputs; the driver ingests reports into bookkeeping, workers never touch the
database. Measurements come from the kernel, not from sampling, so they cost nothing while the job runs:

- CPU user/sys and peak RSS of the whole process tree from ``wait4`` (Linux folds every reaped
  descendant into its parent's usage);
- read/write bytes from ``/proc/<pid>/io`` read while the finished child is still a zombie
  (``waitid(WNOWAIT)``): the kernel has by then added the I/O of its reaped descendants to it;
- exit code or signal from the wait status; the last lines of stdout and stderr from their log files.

An optional time series (prmon-like: RSS, CPU, I/O and process count of the tree every N seconds) is
sampled with psutil. Descendants that daemonise and are never reaped are not counted (as with prmon).

Two ways in: :class:`Profiler` for a driver that runs many children (the local executor), and
``python -m instrumentation.profiler --report R --stdout O --stderr E -- CMD…`` for batch systems
(HTCondor, Pegasus), which exits with the job's own exit status.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .job_report import REPORT_VERSION, JobReport, Sample, Usage, read_report, tail, tail_fd

_PR_SET_PDEATHSIG = 1
__all__ = [
    "REPORT_VERSION",
    "JobReport",
    "Profiler",
    "Running",
    "Usage",
    "claim_attempt",
    "open_attempt",
    "profile_command",
    "read_report",
    "reap",
]


@dataclass(frozen=True)
class Attempt:
    """A claimed attempt: its number, file names, and its stdout/stderr opened for the child."""

    number: int
    report: Path
    stdout: Path
    stderr: Path
    fds: tuple[int, int]


def open_attempt(report_dir: Path, job: str) -> Attempt:
    """Take the next attempt number of ``job`` in ``report_dir`` (race-free: O_EXCL on its stdout
    log) and open its stdout/stderr for writing; the caller closes ``fds``. File names are those of
    :meth:`Layout.job_log`: JOB.N.json/.out/.err."""
    n = 1
    while True:
        out = report_dir / f"{job}.{n}.out"
        try:
            out_fd = os.open(out, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            n += 1
            continue
        except FileNotFoundError:
            report_dir.mkdir(parents=True, exist_ok=True)
            continue
        err = report_dir / f"{job}.{n}.err"
        try:
            err_fd = os.open(err, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
        except OSError:
            os.close(out_fd)
            raise
        return Attempt(n, report_dir / f"{job}.{n}.json", out, err, (out_fd, err_fd))


def claim_attempt(report_dir: Path, job: str) -> tuple[int, Path, Path, Path]:
    """:func:`open_attempt` without keeping the logs open: (number, report, stdout, stderr)."""
    a = open_attempt(report_dir, job)
    for fd in a.fds:
        os.close(fd)
    return a.number, a.report, a.stdout, a.stderr


def _proc_io(pid: int) -> dict[str, int]:
    try:
        fd = os.open(f"/proc/{pid}/io", os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        return {
            k.decode(): int(v) for k, v in (line.split(b":") for line in data.splitlines() if b":" in line)
        }
    except (OSError, ValueError):
        return {}


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this child if the profiler dies, so a killed executor leaves no orphans."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


Target = Sequence[str] | Callable[[], int]


def spawn(
    target: Target,
    stdout: Path,
    stderr: Path,
    *,
    cwd: Path | None = None,
    fds: tuple[int, int] | None = None,
) -> int:
    """Start a child in its own process group with stdout/stderr going to files; return its pid.

    ``target`` is an argv to exec, or a function whose return value is the exit code (the local
    executor's pre-loaded mode: the child inherits imported libraries instead of paying for them).
    ``fds``: stdout/stderr already open (the caller keeps and closes them); else the files are
    created. Signals blocked by the parent are unblocked in the child.
    """
    if fds is None:
        stdout.parent.mkdir(parents=True, exist_ok=True)
        stderr.parent.mkdir(parents=True, exist_ok=True)
    if not callable(target) and cwd is None:
        spawned = _posix_spawn(list(target), stdout, stderr, fds)
        if spawned is not None:
            return spawned
    if fds is None:
        out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    else:
        out, err = fds
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            os.setpgid(0, 0)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            _set_parent_death_signal()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            for fd in (null, out, err):
                os.close(fd)
            # Python-level streams may have been replaced (pytest capture, a TUI): write to the fds.
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            if cwd is not None:
                os.chdir(cwd)
            if callable(target):
                code = int(target())
            else:
                try:
                    os.execvp(target[0], list(target))
                except OSError as exc:
                    sys.stderr.write(f"profiler: cannot run {target[0]}: {exc.strerror}\n")
                    code = 127
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 127 if not callable(target) else 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    if fds is None:
        os.close(out)
        os.close(err)
    return pid


_SPAWN_DEFAULT = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE})


@functools.lru_cache(maxsize=256)
def _which(name: str, path: str | None) -> str | None:
    return shutil.which(name, path=path)


def _posix_spawn(argv: list[str], stdout: Path, stderr: Path, fds: tuple[int, int] | None) -> int | None:
    """Start ``argv`` with posix_spawn (vfork: ~0.1 ms instead of a fork of a large parent, which
    costs milliseconds). The child gets its own process group, an empty signal mask and default
    dispositions; unlike the fork path it cannot get PR_SET_PDEATHSIG, which only matters when the
    executor is killed -9 (the orphan then finishes; outputs are atomic). None if it cannot exec."""
    exe = _which(argv[0], os.environ.get("PATH"))
    if exe is None:
        return None
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    logs: list[tuple[Any, ...]] = (
        [(os.POSIX_SPAWN_DUP2, fds[0], 1), (os.POSIX_SPAWN_DUP2, fds[1], 2)]
        if fds is not None
        else [
            (os.POSIX_SPAWN_OPEN, 1, str(stdout), flags, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, str(stderr), flags, 0o644),
        ]
    )
    try:
        return os.posix_spawn(
            exe,
            argv,
            os.environb,  # no str decoding of every variable on every job
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), *logs],
            setpgroup=0,
            setsigmask=(),
            setsigdef=_SPAWN_DEFAULT,
        )
    except OSError:
        return None


def reap(pid: int, *, block: bool = True) -> tuple[int, Usage] | None:
    """Collect a finished child: (wait status, usage of its tree), or None if it is still running."""
    flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    try:
        info = os.waitid(os.P_PID, pid, flags)
    except ChildProcessError:
        info = None
    if info is None:
        return None
    io = _proc_io(pid)  # still a zombie: its I/O, including its reaped descendants', is readable
    _, status, ru = os.wait4(pid, 0)
    return status, Usage(
        cpu_user=ru.ru_utime,
        cpu_sys=ru.ru_stime,
        peak_rss_bytes=ru.ru_maxrss * 1024,
        read_bytes=io.get("read_bytes", 0),
        write_bytes=io.get("write_bytes", 0),
        rchar=io.get("rchar", 0),
        wchar=io.get("wchar", 0),
    )


def sample_tree(pid: int, since: float) -> Sample | None:
    """One time-series point for a running process tree (psutil), or None if it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    rss = user = sys_ = 0.0
    rchar = wchar = 0
    for p in procs:
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                cpu = p.cpu_times()
                user += cpu.user + cpu.children_user
                sys_ += cpu.system + cpu.children_system
                io = p.io_counters()
                rchar += io.read_chars
                wchar += io.write_chars
        except psutil.Error:
            continue
    return Sample(round(time.time() - since, 3), int(rss), user, sys_, rchar, wchar, len(procs))


def exit_fields(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


@dataclass
class Running:
    """A job started by :class:`Profiler`, until it is reaped."""

    pid: int
    job: str
    step: str
    data_id: dict[str, Any]
    attempt: int
    command: list[str]
    stdout: Path
    stderr: Path
    started_at: float
    series: list[Sample] = field(default_factory=list)
    fds: tuple[int, int] | None = None  # stdout/stderr kept open by the caller, closed by finish


class Profiler:
    """Starts profiled children and turns each finished one into a :class:`JobReport`."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or socket.gethostname()

    def start(
        self,
        target: Target,
        *,
        job: str,
        step: str,
        data_id: dict[str, Any],
        attempt: int,
        command: Sequence[str],
        stdout: Path,
        stderr: Path,
        fds: tuple[int, int] | None = None,
    ) -> Running:
        """Start ``target``; with ``fds`` (from :func:`open_attempt`) the profiler owns and closes them."""
        started = time.time()
        pid = spawn(target, stdout, stderr, fds=fds)
        return Running(pid, job, step, data_id, attempt, list(command), stdout, stderr, started, fds=fds)

    def sample(self, run: Running) -> None:
        point = sample_tree(run.pid, run.started_at)
        if point is not None:
            run.series.append(point)

    def close(self, run: Running) -> None:
        """Release the log descriptors of a reaped job (after its last :meth:`finish`)."""
        if run.fds is not None:
            for fd in run.fds:
                os.close(fd)
            run.fds = None

    def finish(
        self,
        run: Running,
        status: int,
        usage: Usage,
        *,
        will_retry: bool = False,
        missing_outputs: Sequence[str] = (),
    ) -> JobReport:
        ended = time.time()
        code, sig = exit_fields(status)
        if run.fds is not None:
            out_tail, err_tail = tail_fd(run.fds[0]), tail_fd(run.fds[1])
        else:
            out_tail, err_tail = tail(run.stdout), tail(run.stderr)
        return JobReport(
            job=run.job,
            step=run.step,
            data_id=run.data_id,
            attempt=run.attempt,
            command=run.command,
            host=self.host,
            started_at=run.started_at,
            ended_at=ended,
            wall_seconds=round(ended - run.started_at, 6),
            exit_code=code,
            signal=sig,
            usage=usage,
            stdout_path=str(run.stdout),
            stderr_path=str(run.stderr),
            stdout_tail=out_tail,
            stderr_tail=err_tail,
            will_retry=will_retry,
            missing_outputs=list(missing_outputs),
            timeseries=list(run.series),
        )


def profile_command(
    argv: Sequence[str],
    report: Path,
    stdout: Path,
    stderr: Path,
    *,
    job: str = "",
    step: str = "",
    data_id: dict[str, Any] | None = None,
    attempt: int = 1,
    interval: float = 0.0,
) -> JobReport:
    """Run one command to completion under the profiler and write its report atomically."""
    prof = Profiler()
    run = prof.start(
        argv,
        job=job or Path(argv[0]).name,
        step=step,
        data_id=data_id or {},
        attempt=attempt,
        command=argv,
        stdout=stdout,
        stderr=stderr,
    )

    # Forward termination requests to the job's process group, as a batch system expects.
    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(run.pid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            done = reap(run.pid, block=interval <= 0)
            if done is not None:
                break
            prof.sample(run)
            time.sleep(interval)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    result = prof.finish(run, *done)
    result.write(report)
    return result


def parse_data_id(text: str) -> dict[str, Any]:
    """``{"visit": 7}`` or ``visit=7,band=g`` (the form a batch system's quote-free variables carry)."""
    if text.lstrip().startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"data id {text!r} is not an object")
        return value
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"data id item {item!r} is not key=value")
        out[key] = int(raw) if raw.lstrip("-").isdigit() else raw
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m instrumentation.profiler",
        description="Run a job command under the satdrp profiler and write its job report (JSON).",
    )
    parser.add_argument("--report", type=Path, help="where to write the job report")
    parser.add_argument("--stdout", type=Path, help="file for the job's stdout")
    parser.add_argument("--stderr", type=Path, help="file for the job's stderr")
    parser.add_argument(
        "--report-dir",
        type=Path,
        help="instead of the three above: JOB.N.json/.out/.err here, N the next free attempt number",
    )
    parser.add_argument("--job", default="", help="job name recorded in the report")
    parser.add_argument("--step", default="")
    parser.add_argument("--data-id", default="{}", help="data id for the report: JSON or key=value,…")
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.0, help="time-series period in s (0: off)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    attempt = args.attempt
    if args.report_dir is not None:
        if not args.job:
            parser.error("--report-dir needs --job")
        attempt, args.report, args.stdout, args.stderr = claim_attempt(args.report_dir, args.job)
    elif None in (args.report, args.stdout, args.stderr):
        parser.error("give --report, --stdout and --stderr, or --report-dir")
    report = profile_command(
        command,
        args.report,
        args.stdout,
        args.stderr,
        job=args.job,
        step=args.step,
        data_id=parse_data_id(args.data_id),
        attempt=attempt,
        interval=args.interval,
    )
    if report.signal is not None:
        return 128 + report.signal
    return report.exit_code if report.exit_code is not None else 1


if __name__ == "__main__":
    sys.exit(main())

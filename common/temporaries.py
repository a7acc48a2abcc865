"""Temporary files that name their owner, so what a killed process leaves behind can be found and removed.

Every temporary is ``.NAME.part-OWNER`` beside its target (hidden: listings of storage skip it):

- ``p<pid>@<host>``: written by a process (a job, the driver); dead when ``host`` is this host and the
  process is gone, or the pid now belongs to a process started after the file was last written;
- ``t<transfer id>.<attempt>``: a transfer's copy; dead when the books no longer have that attempt in
  flight (the transfer engine removes those of interrupted transfers when it resumes);
- anything else after ``.part-`` (names written before owners were recorded): dead after a day.

Kept free of heavy imports: the job wrapper and the executor use it.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MARK = ".part-"
LEGACY_AGE_S = 86400.0
_TEMP = re.compile(r"^\.(?P<target>.+)\.part-(?P<owner>[^/]+)$")
_PROCESS = re.compile(r"^p(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]+)$")
_TRANSFER = re.compile(r"^t(?P<id>\d+)\.(?P<attempt>\d+)$")


@functools.lru_cache(maxsize=1)
def hostname() -> str:
    """This host's name as it appears in owners (characters outside [A-Za-z0-9._-] replaced)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def process_owner() -> str:
    return f"p{os.getpid()}@{hostname()}"


def transfer_owner(transfer_id: int, attempt: int) -> str:
    return f"t{transfer_id}.{attempt}"


def temp_path(path: Path, owner: str | None = None) -> Path:
    """Where ``path`` is written before its rename; ``owner`` defaults to this process."""
    return path.with_name(f".{path.name}{MARK}{owner or process_owner()}")


@dataclass(frozen=True)
class Temporary:
    """A temporary file found on storage: its directory-relative name, target, owner and judgement."""

    name: str  # path of the temporary, relative to the walked root
    target: str  # the file it would have become
    owner: str
    kind: str  # process | transfer | unknown
    pid: int | None = None
    host: str | None = None
    transfer_id: int | None = None
    attempt: int | None = None


def parse(name: str) -> Temporary | None:
    """The temporary behind a relative path, or None when the base name is not one."""
    head, _, base = name.rpartition("/")
    m = _TEMP.match(base)
    if m is None:
        return None
    target = f"{head}/{m['target']}" if head else m["target"]
    owner = m["owner"]
    if p := _PROCESS.match(owner):
        return Temporary(name, target, owner, "process", pid=int(p["pid"]), host=p["host"])
    if t := _TRANSFER.match(owner):
        return Temporary(name, target, owner, "transfer", transfer_id=int(t["id"]), attempt=int(t["attempt"]))
    return Temporary(name, target, owner, "unknown")


@functools.lru_cache(maxsize=1)
def _boot_time() -> float:
    with open("/proc/stat") as f:
        return float(next(line.split()[1] for line in f if line.startswith("btime ")))


def process_started(pid: int) -> float | None:
    """When process ``pid`` of this host started (epoch seconds), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, counted after the command name
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def pid_exists(pid: int) -> bool:
    """Whether the kernel has a process ``pid`` (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_alive(pid: int, since: float) -> bool:
    """Is ``pid`` a process of this host that existed when a file was last written at ``since``? (a
    pid reused by a later process is not the writer)."""
    try:
        started = process_started(pid)
    except (OSError, ValueError, IndexError, StopIteration):  # no /proc: ask the kernel, pid only
        return pid_exists(pid)
    return started is not None and started <= since + 1.0


def owner_dead(tmp: Temporary, mtime: float, now: float | None = None) -> str | None:
    """Why the owner of a process or unknown temporary is dead, or None (alive, or it cannot be told
    here: another host's process; a transfer, which the books decide)."""
    if tmp.kind == "process" and tmp.pid is not None:
        if tmp.host != hostname():
            return None
        return None if process_alive(tmp.pid, mtime) else f"process {tmp.pid} on {tmp.host} is gone"
    if tmp.kind == "unknown":
        age = (now if now is not None else time.time()) - mtime
        return f"no owner recorded, {age / 3600:.0f} h old" if age > LEGACY_AGE_S else None
    return None


@dataclass(frozen=True)
class Swept:
    """One temporary a sweep judged: removed (or would be, dry run) with why, or kept with why."""

    name: str
    size: int
    removed: bool
    why: str


def sweep(root: Path, *, dry_run: bool = False) -> list[Swept]:
    """Judge every process-owned or unowned temporary under ``root`` (POSIX); remove the dead ones.
    Transfer temporaries are left to the transfer engine and the audit, which read the books."""
    out: list[Swept] = []
    for rel, size, mtime in walk_temporaries(root):
        tmp = parse(rel)
        if tmp is None or tmp.kind == "transfer":
            continue
        why = owner_dead(tmp, mtime)
        if why is None:
            out.append(Swept(rel, size, False, f"owner {tmp.owner} may be alive"))
            continue
        if not dry_run:
            (root / rel).unlink(missing_ok=True)
        out.append(Swept(rel, size, True, why))
    return out


def walk_temporaries(root: Path) -> Iterator[tuple[str, int, float]]:
    """(relative name, size, mtime) of every temporary file under ``root``; other hidden names skipped."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(root / rel if rel else root))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            name = f"{rel}/{e.name}" if rel else e.name
            if e.is_dir(follow_symlinks=False):
                if not e.name.startswith("."):
                    stack.append(name)
            elif e.name.startswith(".") and MARK in e.name and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                yield name, st.st_size, st.st_mtime

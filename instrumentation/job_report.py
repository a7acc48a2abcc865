"""The job report: what one attempt of a job cost and how it ended, as a versioned JSON file beside the
outputs (written by the profiler, read by the driver and `drp jobs show`)."""

from __future__ import annotations

import functools
import json
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.atomic import write_bytes_atomic

if TYPE_CHECKING:
    from pydantic import TypeAdapter

REPORT_SCHEMA = "satdrp.job_report"
REPORT_VERSION = 1
TAIL_LINES = 20
TAIL_BYTES = 8192


@dataclass(frozen=True)
class Usage:
    """Resources used by a finished process tree."""

    cpu_user: float
    cpu_sys: float
    peak_rss_bytes: int
    read_bytes: int  # bytes the tree caused to be fetched from storage (page-cache misses)
    write_bytes: int  # bytes the tree caused to be sent to storage
    rchar: int  # bytes passed to read()-like calls, cached or not
    wchar: int  # bytes passed to write()-like calls


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since start
    rss_bytes: int
    cpu_user: float
    cpu_sys: float
    rchar: int
    wchar: int
    nprocs: int


@dataclass(frozen=True)
class JobReport:
    """Version 1 of the job report; fields are only ever added (readers ignore unknown keys)."""

    job: str
    step: str
    data_id: dict[str, Any]
    attempt: int
    command: list[str]
    host: str
    started_at: float
    ended_at: float
    wall_seconds: float
    exit_code: int | None
    signal: int | None
    usage: Usage
    stdout_path: str
    stderr_path: str
    stdout_tail: str
    stderr_tail: str
    will_retry: bool = False
    missing_outputs: list[str] = field(default_factory=list)
    timeseries: list[Sample] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        """Exit 0 *and* every expected output present: a job that says it worked must show it."""
        return self.exit_code == 0 and not self.missing_outputs

    @property
    def error(self) -> str | None:
        """One line for an operator: why the attempt failed, or None."""
        if self.succeeded:
            return None
        if self.exit_code == 0:
            return f"exit 0 but outputs missing: {', '.join(self.missing_outputs)}"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        lines = [ln for ln in self.stderr_tail.splitlines() if ln.strip()]
        return f"exit {self.exit_code}: {lines[-1].strip()}" if lines else f"exit {self.exit_code}"

    def to_dict(self) -> dict[str, Any]:
        # Shallow (dataclasses.asdict deep-copies every field: a tenth of a millisecond per job).
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["usage"] = asdict(self.usage)
        out["timeseries"] = [asdict(s) for s in self.timeseries]
        out["schema"], out["version"] = REPORT_SCHEMA, REPORT_VERSION
        out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, d: Any, source: str = "job report") -> JobReport:
        """A report checked against its schema (types of every field, nested usage and samples): a file
        that is valid JSON but not a report, or a report with a wrong type anywhere, is a ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: not a satdrp job report (a JSON {type(d).__name__}, not an object)")
        if d.get("schema") != REPORT_SCHEMA or not isinstance(d.get("version"), int):
            raise ValueError(f"{source}: not a satdrp job report")
        if d["version"] > REPORT_VERSION:
            raise ValueError(f"{source}: report version {d['version']} is newer than this satdrp")
        from pydantic import ValidationError

        names = cls.__dataclass_fields__
        try:
            return _adapter().validate_python({k: v for k, v in d.items() if k in names})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "report"
            raise ValueError(f"{source}: bad job report: {where}: {first['msg']}") from err

    def write(self, path: Path, *, durable: bool = True) -> None:
        """Atomic; ``durable=False`` skips fsync (an unreadable report counts as "not run"). Compact
        JSON, so the C encoder does it (``jq`` or ``drp jobs show`` for reading)."""
        data = json.dumps(self.to_dict(), separators=(",", ":"), default=str).encode()
        write_bytes_atomic(path, data + b"\n", durable=durable)


@functools.cache
def _adapter() -> TypeAdapter[JobReport]:
    """The report's validator. pydantic is imported here, by readers only: the batch wrapper writes a
    report per job and never reads one, and importing pydantic was half of its cost per job."""
    from pydantic import TypeAdapter

    return TypeAdapter(JobReport)


def read_report(path: Path) -> JobReport:
    try:
        return JobReport.from_dict(json.loads(path.read_text()), str(path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: unreadable job report ({err})") from err


def tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``lines`` lines of a log file (at most ``max_bytes`` read), '' if absent."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        return tail_fd(fd, lines, max_bytes)
    finally:
        os.close(fd)


def tail_fd(fd: int, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """:func:`tail` of an open file (the executor keeps the logs it opened for a job: no re-open)."""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, max_bytes, max(0, size - max_bytes)) if size else b""
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

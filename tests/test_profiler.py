"""The profiler measures the whole process tree from the kernel and writes a versioned job report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instrumentation.profiler import (
    REPORT_VERSION,
    JobReport,
    claim_attempt,
    profile_command,
    read_report,
)

# A grandchild allocates ~120 MiB, burns CPU and writes 8 MiB: all must be attributed to the job.
TREE = (
    "import subprocess, sys;"
    "subprocess.run([sys.executable, '-c', "
    "'import sys; x = bytearray(120 * 2**20); s = sum(range(3 * 10**6)); "
    'open(sys.argv[1], "wb").write(bytes(8 * 2**20))\', sys.argv[1]], check=True);'
    "print('line1'); print('done'); sys.stderr.write('warning: careful\\n')"
)


def test_process_tree_usage_is_measured(tmp_path: Path) -> None:
    out = tmp_path / "data.bin"
    r = profile_command(
        [sys.executable, "-c", TREE, str(out)],
        tmp_path / "r.json",
        tmp_path / "o",
        tmp_path / "e",
        job="calibrate_v000001",
        step="calibrate",
        data_id={"visit": 1},
    )
    assert r.exit_code == 0 and r.signal is None and r.succeeded and r.error is None
    assert r.usage.peak_rss_bytes > 120 * 2**20
    assert r.usage.cpu_user > 0.05
    assert r.usage.wchar >= 8 * 2**20  # the grandchild's write, folded into the child at reaping
    assert r.stdout_tail == "line1\ndone" and r.stderr_tail == "warning: careful"
    assert r.wall_seconds > 0 and r.ended_at >= r.started_at
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["schema"] == "satdrp.job_report" and d["version"] == REPORT_VERSION
    assert read_report(tmp_path / "r.json") == r


def test_exit_code_signal_and_error_line(tmp_path: Path) -> None:
    r = profile_command(
        ["sh", "-c", "echo 'drp: error: raw file truncated' >&2; exit 2"],
        tmp_path / "a.json",
        tmp_path / "o",
        tmp_path / "e",
    )
    assert (r.exit_code, r.signal, r.succeeded) == (2, None, False)
    assert r.error == "exit 2: drp: error: raw file truncated"
    r = profile_command(["sh", "-c", "kill -9 $$"], tmp_path / "b.json", tmp_path / "o2", tmp_path / "e2")
    assert (r.exit_code, r.signal) == (None, 9) and r.error == "killed by SIGKILL"
    r = profile_command(["/nonexistent/binary"], tmp_path / "c.json", tmp_path / "o3", tmp_path / "e3")
    assert r.exit_code == 127 and "nonexistent" in r.stderr_tail


def test_time_series_is_optional(tmp_path: Path) -> None:
    r = profile_command(
        [sys.executable, "-c", "import time; x = bytearray(50 * 2**20); time.sleep(0.6)"],
        tmp_path / "r.json",
        tmp_path / "o",
        tmp_path / "e",
        interval=0.1,
    )
    assert len(r.timeseries) >= 3
    assert max(s.rss_bytes for s in r.timeseries) > 50 * 2**20
    assert [s.t for s in r.timeseries] == sorted(s.t for s in r.timeseries)


def test_wrapper_cli_claims_attempts_and_returns_the_job_status(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "instrumentation.profiler",
        "--report-dir",
        str(tmp_path),
        "--job",
        "merge_t0",
    ]
    for expected in (1, 2):
        p = subprocess.run([*cmd, "--", "sh", "-c", "echo hi; exit 3"], capture_output=True)
        assert p.returncode == 3
        report = read_report(tmp_path / f"merge_t0.{expected}.json")
        assert report.attempt == expected and report.stdout_tail == "hi"
    p = subprocess.run([*cmd, "--", "sh", "-c", "kill -TERM $$"], capture_output=True)
    assert p.returncode == 128 + 15
    assert claim_attempt(tmp_path, "merge_t0")[0] == 4


def test_newer_or_foreign_reports_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "satdrp.job_report", "version": REPORT_VERSION + 1}))
    with pytest.raises(ValueError, match="newer than this satdrp"):
        read_report(p)
    p.write_text("{}")
    with pytest.raises(ValueError, match="not a satdrp job report"):
        read_report(p)
    with pytest.raises(ValueError):
        JobReport.from_dict({"schema": "satdrp.job_report", "version": 1}, "partial")


def test_reports_are_checked_against_their_schema(tmp_path: Path) -> None:
    """Valid JSON that is not a report object, or a report with a wrong type in any field, is an
    unreadable report naming its path and the field (it once crashed `drp workflow status`)."""
    from instrumentation.job_report import Usage

    good = JobReport(
        "j",
        "warp",
        {"visit": 1},
        1,
        [],
        "h",
        0.0,
        1.0,
        1.0,
        0,
        None,
        Usage(1, 0, 1, 0, 0, 0, 0),
        "o",
        "e",
        "",
        "",
    )
    p = tmp_path / "j.1.json"
    for content, message in (
        ("[1, 2]", "a JSON list, not an object"),
        ('"text"', "a JSON str, not an object"),
        (json.dumps({**good.to_dict(), "exit_code": "zero"}), "bad job report: exit_code"),
        (
            json.dumps({**good.to_dict(), "usage": {**good.to_dict()["usage"], "cpu_user": None}}),
            "usage.cpu_user",
        ),
        (json.dumps({**good.to_dict(), "data_id": [1]}), "data_id"),
    ):
        p.write_text(content)
        with pytest.raises(ValueError, match=rf"{p}: .*{message}"):
            read_report(p)
    p.write_text(json.dumps(good.to_dict()))
    assert read_report(p) == good


def test_the_batch_wrapper_does_not_import_pydantic(tmp_path: Path) -> None:
    """Every HTCondor or Pegasus job starts the wrapper: it writes a report and never reads one, so the
    validator's library (pydantic, half of the wrapper's CPU per job) stays out of it."""
    probe = (
        "import sys\n"
        "from instrumentation.profiler import main\n"
        f"code = main(['--report-dir', {str(tmp_path)!r}, '--job', 'calibrate_v000001', '--', 'true'])\n"
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "[]"], out
    assert read_report(tmp_path / "calibrate_v000001.1.json").succeeded  # the reader still validates

"""Failure injection on whole campaigns: kill -9 at random moments, a destination out of space, a
corrupted job report, a half-written output left by a dead writer. Each ends with the books of an
uninterrupted run (the reference, run once per module) and with storage holding exactly the files
that run holds: no temporary, no file the catalogue does not know. Service outages are in
tests/test_outages.py."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from drp.campaign import CampaignDriver
from tests.test_campaign import _setup, _snapshot, _stored, pristine  # noqa: F401 - the module's release

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, pristine: Path) -> tuple[Path, dict[str, object]]:  # noqa: F811
    """An uninterrupted run: its directory and its books."""
    base = tmp_path_factory.mktemp("reference")
    driver = _setup(base, pristine)
    assert driver.run(max_ticks=2000).after == "DONE"
    snapshot = _snapshot(driver.db)
    driver.db.dispose()
    return base, snapshot


def _cli(directory: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from cli import main; main()", *args, str(directory / "campaign.toml")]


def _env(driver: CampaignDriver) -> dict[str, str]:
    return {**os.environ, "DRP_DB_URL": driver.db.url}


def _assert_like_reference(
    directory: Path, driver: CampaignDriver, reference: tuple[Path, dict[str, object]]
) -> None:
    ref_dir, ref_books = reference
    assert _snapshot(driver.db) == ref_books
    for site in ("ncsa", "in2p3"):
        assert _stored(directory / site) == _stored(ref_dir / site), site
        hidden = [p for p in (directory / site).rglob(".*") if p.is_file()]
        assert not hidden, (site, hidden)


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_kill_9_at_a_random_moment_then_resume(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
    reference: tuple[Path, dict[str, object]],
    seed: int,
) -> None:
    """`campaign run` killed -9 at a random moment of the campaign (transfers, processing,
    consolidation...), twice, then run to the end: the books and storage equal the reference's."""
    rng = random.Random(seed)
    driver = _setup(tmp_path, pristine)
    env = _env(driver)
    for _ in range(2):
        proc = subprocess.Popen(
            _cli(tmp_path, "campaign", "run"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(1.0, 12.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    result = subprocess.run(
        _cli(tmp_path, "campaign", "run"), env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    _assert_like_reference(tmp_path, driver, reference)


def test_destination_out_of_space_fails_by_name_then_retry_completes(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
    reference: tuple[Path, dict[str, object]],
) -> None:
    """The satellite's storage is a 6 MiB tmpfs: copies fail with ENOSPC, the partial copies are
    removed, the rules go STUCK and the campaign FAILED saying "No space left on device"; the space
    grown, `campaign retry` completes it like the reference."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.fail("this test mounts a tmpfs: it needs root (CI and `make test` run as root)")
    driver = _setup(tmp_path, pristine)
    dest = tmp_path / "in2p3"
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "satdrp-enospc", str(dest)], check=True
    )
    try:
        final = driver.run(max_ticks=2000)
        assert final.after == "FAILED" and "No space left on device" in final.message, final
        assert "STUCK" in final.message and "in2p3" in final.message
        hidden = [p for p in dest.rglob(".*") if p.is_file()]
        assert not hidden, hidden  # partial copies removed
        subprocess.run(["mount", "-o", "remount,size=512m", str(dest)], check=True)
        assert "back to REPLICATING" in driver.retry()
        assert driver.run(max_ticks=2000).after == "DONE"
        _assert_like_reference(tmp_path, driver, reference)
    finally:
        driver.db.dispose()
        subprocess.run(["umount", "-l", str(dest)], check=False)


def _run_until(driver: CampaignDriver, state: str) -> None:
    deadline = time.monotonic() + 300
    while driver.campaign().state.name != state:
        assert time.monotonic() < deadline, f"never reached {state}"
        result = driver.tick()
        assert result.after not in ("FAILED", "CANCELLED"), result
        if result.before == result.after:
            time.sleep(0.1)


def test_corrupted_job_report_is_recorded_and_the_job_run_again(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
    reference: tuple[Path, dict[str, object]],
) -> None:
    """A succeeded job's report is overwritten with garbage while the campaign processes: ingestion
    records it as unreadable with its path, the job counts as not run and runs again, and the
    campaign ends like the reference."""
    driver = _setup(tmp_path, pristine)
    _run_until(driver, "PROCESSING")
    driver.tick()  # submits both sites' runs (detached); no tick, so no ingestion, until the damage
    reports: list[Path] = []
    deadline = time.monotonic() + 120
    while not reports:
        assert time.monotonic() < deadline, "no job report appeared"
        time.sleep(0.05)
        reports = sorted((tmp_path / "in2p3").glob("tiny/jobs/calibrate/*.json"))
    victim = reports[0]
    victim.write_text('["valid JSON, not a report"]')
    assert driver.run(max_ticks=2000).after == "DONE"
    _assert_like_reference(tmp_path, driver, reference)
    with driver.db.session() as s:
        payloads = (
            s.execute(text("SELECT payload FROM events WHERE kind = 'reports.ingested'")).scalars().all()
        )
    unreadable = [u for p in payloads for u in json.loads(p).get("unreadable", [])]
    assert str(victim) in unreadable, payloads


def test_half_written_output_of_a_dead_writer_is_swept(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
    reference: tuple[Path, dict[str, object]],
) -> None:
    """A job killed while writing leaves `.NAME.part-p<pid>@<host>` beside its output: the pid is gone,
    so processing removes it before the jobs run again, and the campaign ends like the reference."""
    driver = _setup(tmp_path, pristine)
    _run_until(driver, "PROCESSING")
    dead = subprocess.Popen(["true"])
    dead.wait()
    out_dir = tmp_path / "in2p3" / "tiny" / "calexp"
    out_dir.mkdir(parents=True, exist_ok=True)
    leftover = out_dir / f".visit001000.fits.part-p{dead.pid}@{socket.gethostname()}"
    leftover.write_bytes(b"SIMPLE  =                    T" + b"\0" * 1000)
    assert driver.run(max_ticks=2000).after == "DONE"
    assert not leftover.exists()
    _assert_like_reference(tmp_path, driver, reference)

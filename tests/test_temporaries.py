"""Temporaries name their owner: a dead writer's leftovers are found and removed, a live one's kept."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from common.atomic import write_bytes_atomic
from common.temporaries import hostname, owner_dead, parse, process_alive, sweep, temp_path


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_names_parse_back_to_their_owner() -> None:
    t = parse(f"dr1/raw/.visit1.fits.part-p42@{hostname()}")
    assert t is not None and (t.target, t.kind, t.pid, t.host) == (
        "dr1/raw/visit1.fits",
        "process",
        42,
        hostname(),
    )
    t = parse(".x.parquet.part-t17.3")
    assert t is not None and (t.target, t.kind, t.transfer_id, t.attempt) == ("x.parquet", "transfer", 17, 3)
    t = parse("a/.b.part-c7d3d80fb415")
    assert t is not None and t.kind == "unknown"
    assert parse("a/visit1.fits") is None and parse("a/.hidden") is None
    assert temp_path(Path("/s/a.fits")).name == f".a.fits.part-p{os.getpid()}@{hostname()}"


def test_a_pid_is_alive_only_if_it_existed_when_the_file_was_written() -> None:
    now = time.time()
    assert process_alive(os.getpid(), now)
    assert not process_alive(os.getpid(), now - 3600), "a pid started after the write is a reuse"
    assert not process_alive(_dead_pid(), now)


def test_sweep_removes_dead_writers_leftovers_and_keeps_live_ones(tmp_path: Path) -> None:
    d = tmp_path / "dr1" / "warp"
    d.mkdir(parents=True)
    dead = temp_path(d / "a.fits", f"p{_dead_pid()}@{hostname()}")
    live = temp_path(d / "b.fits")
    elsewhere = temp_path(d / "c.fits", "p1@another-host")
    old = d / ".d.fits.part-9e3925896ec5"
    young = d / ".e.fits.part-0123456789ab"
    transfer = temp_path(d / "f.fits", "t5.1")
    for p in (dead, live, elsewhere, old, young, transfer):
        p.write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    write_bytes_atomic(d / "done.fits", b"complete")  # a finished atomic write leaves nothing
    preview = sweep(tmp_path, dry_run=True)
    assert {s.name.rpartition("/")[2] for s in preview if s.removed} == {dead.name, old.name}
    assert all(p.exists() for p in (dead, live, elsewhere, old, young, transfer))
    done = sweep(tmp_path)
    assert [s.name for s in done if s.removed] == [s.name for s in preview if s.removed]
    assert not dead.exists() and not old.exists()
    assert all(p.exists() for p in (live, elsewhere, young, transfer)), "live, unknowable or the books'"
    assert (d / "done.fits").read_bytes() == b"complete"
    t = parse(f"x/{elsewhere.name}")
    assert t is not None and owner_dead(t, time.time()) is None


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import common.atomic

    target = tmp_path / "report.json"
    write_bytes_atomic(target, b"old\n")

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common.atomic.os, "write", full)
    try:
        write_bytes_atomic(target, b"new\n", durable=False)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    else:
        raise AssertionError("the write did not fail")
    monkeypatch.undo()
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]

"""The xrootd mover against two real XRootD servers on 127.0.0.1: third-party copies verified with
adler32 by the destination server, and the faults (bad checksum, missing source, server down)."""

from __future__ import annotations

import os
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bookkeeping.database import Database
from bookkeeping.files import FileRow
from bookkeeping.states import ReplicaState, RuleState
from sites.catalogue import SiteCatalogue, parse_catalogue
from tests.xrootd_server import XRootDServer
from transfer.engine import TransferEngine
from transfer.movers.base import FailureKind, Outcome, TransferRequest
from transfer.movers.xrootd import XRootDMover, XRootDSettings
from transfer.replication.base import RuleInfo
from transfer.replication.embedded import EmbeddedBackend


def _adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


@pytest.fixture
def sites(xrootd_sites: dict[str, XRootDServer]) -> Iterator[tuple[XRootDServer, XRootDServer, str]]:
    yield xrootd_sites["ncsa"], xrootd_sites["in2p3"], f"t{uuid.uuid4().hex[:8]}"


def _plant(server: XRootDServer, name: str, data: bytes) -> None:
    path = server.data / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    server.chown()


def test_third_party_copies_verified_by_the_destination(
    sites: tuple[XRootDServer, XRootDServer, str],
) -> None:
    src, dst, tag = sites
    payloads = {f"{tag}/f{i}.fits": os.urandom(200_000 + i) for i in range(3)}
    for name, data in payloads.items():
        _plant(src, name, data)
    mover = XRootDMover(XRootDSettings(tpc="only"))
    requests = [
        TransferRequest(i, f"{src.url}/{name}", f"{dst.url}/{name}", len(data), _adler(data))
        for i, (name, data) in enumerate(payloads.items())
    ]
    results = [s.result for s in mover.submit(requests)]
    assert all(r is not None and r.outcome is Outcome.DONE for r in results), results
    for name, data in payloads.items():
        assert (dst.data / name).read_bytes() == data
        stat = mover.stat(f"{dst.url}/{name}")
        assert stat is not None and (stat.size, stat.adler32) == (
            len(data),
            _adler(data),
        )  # server-side adler32
    assert mover.stat(f"{dst.url}/{tag}/absent.fits") is None


def test_checksum_mismatch_leaves_no_copy(sites: tuple[XRootDServer, XRootDServer, str]) -> None:
    src, dst, tag = sites
    data = os.urandom(50_000)
    _plant(src, f"{tag}/bad.fits", data)
    mover = XRootDMover(XRootDSettings(tpc="first"))
    wrong = f"{(int(_adler(data), 16) ^ 1):08x}"
    (sub,) = mover.submit(
        [TransferRequest(1, f"{src.url}/{tag}/bad.fits", f"{dst.url}/{tag}/bad.fits", len(data), wrong)]
    )
    assert sub.result is not None and sub.result.outcome is Outcome.FAILED
    assert sub.result.failure is FailureKind.CHECKSUM, sub.result.message
    assert not (dst.data / tag / "bad.fits").exists(), "the bad copy was removed"


def test_missing_source(sites: tuple[XRootDServer, XRootDServer, str]) -> None:
    src, dst, tag = sites
    mover = XRootDMover(XRootDSettings())
    (sub,) = mover.submit(
        [TransferRequest(1, f"{src.url}/{tag}/nothing.fits", f"{dst.url}/{tag}/n.fits", 10, "00000001")]
    )
    assert sub.result is not None and sub.result.failure is FailureKind.SOURCE_MISSING, sub.result


def test_server_down_is_unreachable_not_a_failed_attempt(
    tmp_path: Path, sites: tuple[XRootDServer, XRootDServer, str]
) -> None:
    src, _, tag = sites
    os.chmod(tmp_path, 0o755)
    down = XRootDServer("down", tmp_path / "down").start()
    url = down.url
    down.stop()
    data = os.urandom(1000)
    _plant(src, f"{tag}/x.fits", data)
    mover = XRootDMover(XRootDSettings(connection_retry=1))
    (sub,) = mover.submit(
        [TransferRequest(1, f"{src.url}/{tag}/x.fits", f"{url}/{tag}/x.fits", 1000, _adler(data))]
    )
    assert sub.result is not None and sub.result.failure is FailureKind.UNREACHABLE, sub.result
    assert "Connection error" in sub.result.message and url in sub.result.message


def _rule_world(
    db: Database, src: XRootDServer, dst: XRootDServer, tag: str, transfer: dict[str, object], size: int
) -> tuple[SiteCatalogue, EmbeddedBackend, list[FileRow], RuleInfo]:
    """Two files planted at ncsa's server and a rule sending them to in2p3's."""
    cat = parse_catalogue(
        {
            "site": [
                {"name": "ncsa", "role": "lead", "share": 0.5, "storage": src.url},
                {"name": "in2p3", "role": "satellite", "share": 0.5, "storage": dst.url},
            ],
            "transfer": transfer,
        },
        "test",
    )
    rows = []
    for i in range(2):
        data = os.urandom(size + i)
        _plant(src, f"{tag}/raw/f{i}.fits", data)
        rows.append(FileRow(f"{tag}/raw/f{i}.fits", len(data), _adler(data)))
    backend = EmbeddedBackend(EmbeddedBackend.Settings(), cat)
    with db.session() as s:
        backend.register(s, f"{tag}:raw", rows, "ncsa")
        rule = backend.add_rule(s, f"{tag}:raw", "site=in2p3")
    return cat, backend, rows, rule


def test_rule_between_xrootd_sites(db: Database, sites: tuple[XRootDServer, XRootDServer, str]) -> None:
    src, dst, tag = sites
    cat, backend, rows, rule = _rule_world(db, src, dst, tag, {"retries": 1, "backoff_s": 0}, 30_000)
    assert cat.link("ncsa", "in2p3").mover == "xrootd"
    engine = TransferEngine(db, cat, backend)
    report = engine.run(max_seconds=120)
    engine.close()
    assert report.done == 2 and report.failed == 0, report
    with db.session() as s:
        assert backend.rule(s, rule.id).state is RuleState.OK
        states = {r.site: r.state for r in backend.replicas(s, f"{tag}:raw")}
    assert states == {"ncsa": ReplicaState.AVAILABLE, "in2p3": ReplicaState.AVAILABLE}
    for row in rows:
        assert (dst.data / row.name).read_bytes() == (src.data / row.name).read_bytes()


def test_destination_server_away_then_back(
    tmp_path: Path, db: Database, sites: tuple[XRootDServer, XRootDServer, str]
) -> None:
    """The destination XRootD server stops: engine rounds report the link unreachable and requeue the
    copies with no attempt counted (one retry would otherwise give up after two rounds); the same
    server back on its port, the rule completes with one attempt per file."""
    from sqlalchemy import text

    src, _, tag = sites
    os.chmod(tmp_path, 0o755)
    dst = XRootDServer("away", tmp_path / "away").start()
    try:
        transfer = {
            "retries": 1,
            "backoff_s": 0,
            "link": [{"source": "*", "dest": "*", "mover": "xrootd", "stream_error_window_s": 1}],
        }
        cat, backend, rows, rule = _rule_world(db, src, dst, tag, transfer, 20_000)
        dst.stop()
        engine = TransferEngine(db, cat, backend)
        try:
            for _ in range(3):
                report = engine.run(max_seconds=60, poll_s=0.05)
                assert report.unreachable and (report.done, report.failed) == (0, 0), report
            with db.session() as s:
                assert s.execute(text("SELECT DISTINCT attempts, failure FROM transfers")).all() == [
                    (0, "unreachable")
                ]
            dst.start()
            time.sleep(1.5)  # the client's StreamErrorWindow (1 s here) after the last failed connection
            report = engine.run(max_seconds=120, poll_s=0.05)
        finally:
            engine.close()
        assert (report.done, report.failed, report.pending) == (2, 0, 0), report
        with db.session() as s:
            assert backend.rule(s, rule.id).state is RuleState.OK
            assert s.execute(text("SELECT attempts FROM transfers")).scalars().all() == [1, 1]
        for row in rows:
            assert (dst.data / row.name).read_bytes() == (src.data / row.name).read_bytes()
    finally:
        dst.stop()

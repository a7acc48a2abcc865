"""The fts3 mover through the real ``fts3`` client against a small FTS3 REST server that really copies
files (tests/fake_fts.py): verified transfers, FTS-side failures mapped to satdrp's, an outage
mid-transfer, cancel, and a rule completed by the engine over an FTS link. The token never leaks."""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.files import FileRow
from bookkeeping.states import RuleState, TransferState
from sites.catalogue import SiteCatalogue, parse_catalogue
from tests.fake_fts import FakeFTS
from transfer.engine import TransferEngine
from transfer.movers.base import FailureKind, Outcome, TransferRequest, TransferResult
from transfer.movers.fts3 import FTS3Mover, FTS3Settings
from transfer.replication.embedded import EmbeddedBackend

TOKEN = "eyJ.secret-test-token.xyz"
NCSA, IN2P3 = "davs://ncsa.test/data", "davs://in2p3.test/data"


def _adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


@pytest.fixture
def fts(tmp_path: Path) -> Iterator[tuple[FakeFTS, str, dict[str, Path]]]:
    roots = {"ncsa": tmp_path / "ncsa", "in2p3": tmp_path / "in2p3"}
    for r in roots.values():
        r.mkdir()
    server = FakeFTS({NCSA: roots["ncsa"], IN2P3: roots["in2p3"]}, TOKEN)
    url = server.serve()
    yield server, url, roots
    server.stop()


def _wait(mover: FTS3Mover, ext: dict[int, str], timeout: float = 20.0) -> dict[int, TransferResult]:
    done: dict[int, TransferResult] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ext) and time.monotonic() < deadline:
        for r in mover.poll({t: e for t, e in ext.items() if t not in done}):
            if r.outcome is not Outcome.ACTIVE:
                done[r.transfer_id] = r
        time.sleep(0.05)
    return done


def test_the_real_client_is_refused_what_fts_refuses(fts: tuple[FakeFTS, str, dict[str, Path]]) -> None:
    import fts3.rest.client.easy as fts3
    from fts3.rest.client.exceptions import ClientError, NotFound, Unauthorized

    _, url, _ = fts
    ctx = fts3.Context(url, fts_access_token=TOKEN, verify=False)
    with pytest.raises(NotFound):
        fts3.get_job_status(ctx, "no-such-job")
    bad = fts3.new_job([fts3.new_transfer(f"{NCSA}/a", f"{IN2P3}/a", checksum="ADLER32:xyz")])
    with pytest.raises(ClientError, match="Invalid checksum"):
        fts3.submit(ctx, bad)
    with pytest.raises(Unauthorized):
        fts3.get_job_status(fts3.Context(url, fts_access_token="wrong", verify=False), "x")


def test_verified_transfers_and_failures(
    fts: tuple[FakeFTS, str, dict[str, Path]], caplog: pytest.LogCaptureFixture
) -> None:
    server, url, roots = fts
    caplog.set_level(logging.DEBUG)
    good = os.urandom(10_000)
    (roots["ncsa"] / "dr1").mkdir()
    (roots["ncsa"] / "dr1/good.fits").write_bytes(good)
    (roots["ncsa"] / "dr1/corrupt.fits").write_bytes(b"not what the catalogue says")
    (roots["in2p3"] / "blocked").write_text("a file where a directory should be")
    mover = FTS3Mover(FTS3Settings(endpoint=url, token=TOKEN, verify=False, job_size=2))
    reqs = [
        TransferRequest(1, f"{NCSA}/dr1/good.fits", f"{IN2P3}/dr1/good.fits", len(good), _adler(good)),
        TransferRequest(2, f"{NCSA}/dr1/corrupt.fits", f"{IN2P3}/dr1/corrupt.fits", 27, "0badc0de"),
        TransferRequest(3, f"{NCSA}/dr1/absent.fits", f"{IN2P3}/dr1/absent.fits", 5, "00000001"),
        TransferRequest(4, f"{NCSA}/dr1/good.fits", f"{IN2P3}/blocked/good.fits", len(good), _adler(good)),
    ]
    submitted = mover.submit(reqs)
    ext = {s.transfer_id: s.external_id for s in submitted if s.external_id}
    assert len(ext) == 4 and len({e.split("#")[0] for e in ext.values()}) == 2  # two FTS jobs of 2
    results = _wait(mover, ext)
    assert results[1].outcome is Outcome.DONE and results[1].bytes == len(good)
    assert (roots["in2p3"] / "dr1/good.fits").read_bytes() == good
    assert results[2].failure is FailureKind.CHECKSUM and not (roots["in2p3"] / "dr1/corrupt.fits").exists()
    assert results[3].failure is FailureKind.SOURCE_MISSING
    assert results[4].failure is FailureKind.DESTINATION
    # every authenticated request carried the bearer token, which appears in no log record or message
    assert all(auth == f"Bearer {TOKEN}" for method, path, auth in server.requests if path != "/")
    assert TOKEN not in caplog.text and all(TOKEN not in r.message for r in results.values())


def test_outage_mid_transfer_then_recovery(fts: tuple[FakeFTS, str, dict[str, Path]]) -> None:
    server, url, roots = fts
    server.delay_s = 0.5
    data = os.urandom(5000)
    (roots["ncsa"] / "x.fits").write_bytes(data)
    mover = FTS3Mover(FTS3Settings(endpoint=url, token=TOKEN, verify=False, timeout_s=2))
    (sub,) = mover.submit([TransferRequest(1, f"{NCSA}/x.fits", f"{IN2P3}/x.fits", len(data), _adler(data))])
    assert sub.external_id is not None
    port = server.port
    server.stop()
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises: the engine keeps the row ACTIVE
        mover.poll({1: sub.external_id})
    time.sleep(0.6)
    server.serve(port)  # the same FTS comes back; the job went on meanwhile
    results = _wait(mover, {1: sub.external_id})
    assert results[1].outcome is Outcome.DONE and (roots["in2p3"] / "x.fits").read_bytes() == data


def test_cancel(fts: tuple[FakeFTS, str, dict[str, Path]]) -> None:
    server, url, roots = fts
    server.delay_s = 1.0
    for i in range(3):
        (roots["ncsa"] / f"c{i}").write_bytes(b"x")
    mover = FTS3Mover(FTS3Settings(endpoint=url, token=TOKEN, verify=False))
    subs = mover.submit(
        [TransferRequest(i, f"{NCSA}/c{i}", f"{IN2P3}/c{i}", 1, _adler(b"x")) for i in range(3)]
    )
    ext = {s.transfer_id: s.external_id or "" for s in subs}
    mover.cancel(ext)
    results = _wait(mover, ext)
    assert sum(r.failure is FailureKind.CANCELLED for r in results.values()) >= 2


def _fts_world(
    url: str, roots: dict[str, Path], db: Database, monkeypatch: pytest.MonkeyPatch
) -> tuple[SiteCatalogue, EmbeddedBackend, list[FileRow], int]:
    """Three files at ncsa, a rule for in2p3, every link through the FTS at ``url`` (one retry)."""
    monkeypatch.setenv("DRP_TEST_FTS_TOKEN", TOKEN)
    cat = parse_catalogue(
        {
            "site": [
                {"name": "ncsa", "role": "lead", "share": 0.5, "storage": NCSA},
                {"name": "in2p3", "role": "satellite", "share": 0.5, "storage": IN2P3},
            ],
            "transfer": {
                "retries": 1,
                "backoff_s": 0,
                "link": [
                    {
                        "source": "*",
                        "dest": "*",
                        "mover": "fts3",
                        "endpoint": url,
                        "token_env": "DRP_TEST_FTS_TOKEN",
                        "verify": False,
                    }
                ],
            },
        },
        "test",
    )
    rows = []
    for i in range(3):
        data = os.urandom(3000 + i)
        path = roots["ncsa"] / f"dr1/raw/f{i}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(FileRow(f"dr1/raw/f{i}.fits", len(data), _adler(data)))
    backend = EmbeddedBackend(EmbeddedBackend.Settings(), cat)
    with db.session() as s:
        backend.register(s, "dr1:raw", rows, "ncsa")
        rule = backend.add_rule(s, "dr1:raw", "site=in2p3")
    return cat, backend, rows, rule.id


def test_rule_over_an_fts_link(
    fts: tuple[FakeFTS, str, dict[str, Path]], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url, roots = fts
    cat, backend, rows, rule_id = _fts_world(url, roots, db, monkeypatch)
    engine = TransferEngine(db, cat, backend)
    report = engine.run(max_seconds=60, poll_s=0.1)
    engine.close()
    assert (report.done, report.failed, report.pending) == (3, 0, 0), report
    with db.session() as s:
        assert backend.rule(s, rule_id).state is RuleState.OK
    for row in rows:
        assert (roots["in2p3"] / row.name).read_bytes() == (roots["ncsa"] / row.name).read_bytes()


def test_fts_away_is_a_wait_that_counts_no_attempt(
    fts: tuple[FakeFTS, str, dict[str, Path]], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FTS not there (connection refused): the engine round reports the link unreachable and stops,
    every copy is queued again with no attempt counted however many rounds it lasts (one retry would
    otherwise have given up after two), and FTS back, each file is copied with one attempt."""
    server, url, roots = fts
    cat, backend, _, rule_id = _fts_world(url, roots, db, monkeypatch)
    port = server.port
    server.stop()
    engine = TransferEngine(db, cat, backend)
    try:
        for _ in range(4):
            report = engine.run(max_seconds=30, poll_s=0.05)
            assert report.unreachable and (report.done, report.failed) == (0, 0), report
            assert url.split("//")[1] in next(iter(report.unreachable.values()))
        with db.session() as s:
            rows_now = s.execute(text("SELECT state, attempts, failure FROM transfers")).all()
        assert rows_now and all(
            (state, attempts, failure) == (TransferState.QUEUED, 0, "unreachable")
            for state, attempts, failure in rows_now
        ), rows_now
        server.serve(port)
        report = engine.run(max_seconds=60, poll_s=0.05)
    finally:
        engine.close()
    assert (report.done, report.failed, report.pending) == (3, 0, 0), report
    with db.session() as s:
        assert s.execute(text("SELECT attempts FROM transfers")).scalars().all() == [1, 1, 1]
        assert backend.rule(s, rule_id).state is RuleState.OK

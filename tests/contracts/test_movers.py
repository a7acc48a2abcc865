"""The mover contract: the same scenario and the same assertions on local, xrootd and fts3.

Each mover is built through the registry from the settings a catalogue would give, against real
storage (posix directories; two real XRootD servers; the FTS3 REST fake that really copies). A copy
becomes DONE only when it is verified, byte for byte at the destination; a checksum mismatch is a
CHECKSUM failure that leaves nothing behind; a missing source is SOURCE_MISSING; the probe says the
storage or service is reachable. Synchronous movers answer in ``submit``, asynchronous ones through
``poll``: the scenario waits for either.
"""

from __future__ import annotations

import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.probes import Health
from tests.fake_fts import FakeFTS
from transfer.movers.base import FailureKind, Mover, Outcome, TransferRequest, TransferResult
from transfer.movers.registry import get_mover

TOKEN = "contract-token"


@dataclass
class World:
    mover: Mover
    source: str  # storage URL roots
    dest: str
    plant: Callable[[str, bytes], None]  # put a file at the source
    read: Callable[[str], bytes | None]  # a file at the destination, None if absent
    roots: tuple[str, ...]  # what probe() is given


def _posix(root: Path) -> tuple[Callable[[str, bytes], None], Callable[[str], bytes | None]]:
    def plant(name: str, data: bytes) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)

    def read(name: str) -> bytes | None:
        return (root / name).read_bytes() if (root / name).is_file() else None

    return plant, read


@pytest.fixture(params=["local", "xrootd", "fts3"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    tag = f"c{uuid.uuid4().hex[:8]}"
    if request.param == "local":
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        plant, _ = _posix(a)
        _, read = _posix(b)
        mover = get_mover("local", {})
        yield World(mover, f"file://{a}", f"file://{b}", plant, read, (f"file://{a}", f"file://{b}"))
    elif request.param == "xrootd":
        servers: dict[str, Any] = request.getfixturevalue("xrootd_sites")
        src, dst = servers["ncsa"], servers["in2p3"]

        def plant(name: str, data: bytes) -> None:
            (src.data / tag / name).parent.mkdir(parents=True, exist_ok=True)
            (src.data / tag / name).write_bytes(data)
            src.chown()

        def read(name: str) -> bytes | None:
            path = dst.data / tag / name
            return path.read_bytes() if path.is_file() else None

        mover = get_mover("xrootd", {"tpc": "first"})
        yield World(mover, f"{src.url}/{tag}", f"{dst.url}/{tag}", plant, read, (src.url, dst.url))
    else:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        server = FakeFTS({"davs://a.test/data": a, "davs://b.test/data": b}, TOKEN)
        url = server.serve()
        plant, _ = _posix(a)
        _, read = _posix(b)
        mover = get_mover("fts3", {"endpoint": url, "token": TOKEN, "verify": False})
        yield World(mover, "davs://a.test/data", "davs://b.test/data", plant, read, ())
        server.stop()
    mover.close()


def _adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def _copy(
    world: World, requests: Sequence[TransferRequest], timeout: float = 30.0
) -> dict[int, TransferResult]:
    """Submit, then poll what the mover left running, until every copy has an outcome."""
    out: dict[int, TransferResult] = {}
    running: dict[int, str] = {}
    for s in world.mover.submit(requests):
        if s.result is not None:
            out[s.transfer_id] = s.result
        else:
            assert s.external_id, "a copy without an outcome must say how to poll it"
            running[s.transfer_id] = s.external_id
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        for r in world.mover.poll(running):
            if r.outcome is not Outcome.ACTIVE:
                out[r.transfer_id] = r
                running.pop(r.transfer_id)
        time.sleep(0.05)
    assert not running, f"no outcome within {timeout} s for {sorted(running)}"
    return out


def _request(world: World, i: int, name: str, size: int, adler: str) -> TransferRequest:
    return TransferRequest(i, f"{world.source}/{name}", f"{world.dest}/{name}", size, adler)


def test_verified_copies_arrive_byte_for_byte(world: World) -> None:
    payloads = {f"d/f{i}.fits": os.urandom(30_000 + i) for i in range(3)}
    for name, data in payloads.items():
        world.plant(name, data)
    requests = [_request(world, i, n, len(d), _adler(d)) for i, (n, d) in enumerate(payloads.items())]
    results = _copy(world, requests)
    assert all(r.outcome is Outcome.DONE for r in results.values()), results
    for name, data in payloads.items():
        assert world.read(name) == data


def test_a_checksum_mismatch_fails_and_leaves_nothing(world: World) -> None:
    data = os.urandom(20_000)
    world.plant("bad.fits", data)
    wrong = f"{int(_adler(data), 16) ^ 1:08x}"
    (result,) = _copy(world, [_request(world, 1, "bad.fits", len(data), wrong)]).values()
    assert result.outcome is Outcome.FAILED and result.failure is FailureKind.CHECKSUM, result
    assert world.read("bad.fits") is None


def test_a_missing_source_is_reported_as_such(world: World) -> None:
    (result,) = _copy(world, [_request(world, 1, "absent.fits", 10, "00000001")]).values()
    assert result.outcome is Outcome.FAILED and result.failure is FailureKind.SOURCE_MISSING, result
    assert world.read("absent.fits") is None


def test_probe_says_the_storage_or_service_answers(world: World) -> None:
    probes = world.mover.probe(world.roots)
    assert probes or not world.roots, "a mover with storage roots to check says something about them"
    assert all(p.health is Health.OK for p in probes), probes

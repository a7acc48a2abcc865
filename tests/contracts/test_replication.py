"""Replication contract: the same scenarios on every replication back-end and bookkeeping database.

Register at the lead, rule to the satellite, copies made, rule OK with identical files; a rule already
satisfied is OK at once; a missing source, a corrupted source and an unwritable destination end STUCK
with the reason recorded; a replica declared bad is copied again.

Back-ends: ``embedded``; ``rucio`` with satdrp's engine copying (then telling Rucio); and ``rucio`` in
conveyor mode, where Rucio's own judge, conveyor and necromancer move the data through an FTS3 server
(the fake that really copies) and satdrp only watches. Where the engine's counters or wording are
asserted, the conveyor cases assert what Rucio's requests and errors say instead.
"""

from __future__ import annotations

import os
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.files import FileRow
from bookkeeping.states import ReplicaState, RuleState, TransferState
from common.errors import InvalidInputError, NotFoundError
from sites.catalogue import SiteCatalogue, parse_catalogue
from tests.rucio_server import replication_settings
from transfer.engine import EngineReport, TransferEngine
from transfer.replication.base import ReplicationBackend
from transfer.replication.embedded import EmbeddedBackend
from transfer.replication.registry import get_replication


@dataclass
class World:
    db: Database
    cat: SiteCatalogue
    backend: ReplicationBackend
    engine: TransferEngine
    roots: dict[str, Path]
    scope: str
    conveyor: bool = False  # Rucio's daemons move the data; satdrp's engine never takes a transfer
    daemons: Any = None  # then: the tests' Conveyor (the daemons and the FTS3 fake they submit to)

    def settle(self, max_seconds: float = 60.0) -> EngineReport:
        """Make the copies: satdrp's engine until idle, or (conveyor) watch until no rule of this world
        is REPLICATING and no mirrored request is in flight; then the transfers' outcomes as counts."""
        if not self.conveyor:
            return self.engine.run(max_seconds=max_seconds)
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            with self.db.session() as s:
                self.backend.step(s)
                busy = [r for r in self.backend.rules(s) if r.state is RuleState.REPLICATING]
                pending = s.execute(
                    text("SELECT count(*) FROM transfers WHERE state IN (1, 2, 3)")
                ).scalar_one()
            if not busy and not pending:
                break
            time.sleep(0.5)
        with self.db.session() as s:
            counts = dict(s.execute(text("SELECT state, count(*) FROM transfers GROUP BY state")).all())
        return EngineReport(
            done=counts.get(int(TransferState.DONE), 0),
            failed=counts.get(int(TransferState.FAILED), 0),
            pending=sum(counts.get(int(st), 0) for st in (1, 2, 3)),
        )

    def did(self, name: str) -> str:
        return f"{self.scope}:{name}"

    def rucio_rule_state(self, rule_id: int) -> str | None:
        """Rucio's own state of the rule (None with the embedded back-end)."""
        client = getattr(self.backend, "client", None)
        if client is None:
            return None
        with self.db.session() as s:
            external = self.backend.rule(s, rule_id).external_id
        assert external is not None
        return str(client.get_replication_rule(external)["state"])

    def rucio_replica_state(self, name: str, site: str) -> str | None:
        """Rucio's state of a file's replica at a site (None with the embedded back-end)."""
        client = getattr(self.backend, "client", None)
        if client is None:
            return None
        scope, rest = name.split("/", 1)
        (rep,) = client.list_replicas([{"scope": scope, "name": rest}], all_states=True)
        return str(rep["states"].get(self.backend.rse(site)))  # type: ignore[attr-defined]

    def write(self, site: str, name: str, data: bytes) -> FileRow:
        path = self.roots[site] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return FileRow(name, len(data), f"{zlib.adler32(data) & 0xFFFFFFFF:08x}")

    def register(self, dataset: str, n: int, size: int = 4096) -> list[FileRow]:
        """n files of the dataset at the lead, named SCOPE/DATASET/fNNN.fits: with Rucio the first
        component is the DID scope, so every world has its own files on the shared server."""
        scope, name = dataset.split(":")
        rows = [self.write("ncsa", f"{scope}/{name}/f{i:03d}.fits", os.urandom(size)) for i in range(n)]
        with self.db.session() as s:
            self.backend.register(s, dataset, rows, "ncsa")
        return rows


def _catalogue(
    tmp: Path, replication: dict[str, object] | None = None, **transfer: object
) -> tuple[SiteCatalogue, dict[str, Path]]:
    roots = {"ncsa": tmp / "ncsa", "in2p3": tmp / "in2p3", "slac": tmp / "slac"}
    for r in roots.values():
        r.mkdir()
    data = {
        "site": [
            {"name": "ncsa", "role": "lead", "share": 0.5, "storage": f"file://{roots['ncsa']}"},
            {
                "name": "in2p3",
                "role": "satellite",
                "share": 0.3,
                "storage": f"file://{roots['in2p3']}",
                "attributes": {"country": "fr"},
            },
            {"name": "slac", "role": "satellite", "share": 0.2, "storage": f"file://{roots['slac']}"},
        ],
        "transfer": {"retries": 2, "backoff_s": 0.0, **transfer},
        "replication": replication or {"backend": "embedded"},
    }
    return parse_catalogue(data, "test"), roots


@contextmanager
def make_world(request: pytest.FixtureRequest, db: Database, tmp_path: Path, mode: str) -> Iterator[World]:
    """A catalogue of three posix sites, its replication back-end (``embedded``, ``rucio`` or
    ``rucio-conveyor``) and an engine."""
    tag = uuid.uuid4().hex[:8]
    replication: dict[str, object] = {"backend": "embedded"}
    conveyor = None
    if mode.startswith("rucio"):
        server = request.getfixturevalue("rucio_server")
        if mode == "rucio-conveyor":
            conveyor = request.getfixturevalue("rucio_conveyor")
        # RSEs are server-wide: one set per test
        replication = replication_settings(server, f"_T{tag.upper()}", conveyor)
    cat, roots = _catalogue(tmp_path, replication)
    backend = get_replication(cat)
    engine = TransferEngine(db, cat, backend)
    try:
        with conveyor.running() if conveyor is not None else nullcontext():
            yield World(
                db, cat, backend, engine, roots, f"t{tag}", conveyor=conveyor is not None, daemons=conveyor
            )
    finally:
        engine.close()


@pytest.fixture(params=["embedded", "rucio", "rucio-conveyor"])
def world(request: pytest.FixtureRequest, db: Database, tmp_path: Path) -> Iterator[World]:
    with make_world(request, db, tmp_path, request.param) as w:
        yield w


def test_rule_to_satellite_replicates_verified_copies(world: World) -> None:
    rows = world.register(world.did("raw/tract0001"), 6)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0001"), "country=fr")
    assert rule.state is RuleState.REPLICATING and rule.sites == ("in2p3",)
    assert (rule.locks_ok, rule.locks_replicating) == (0, 6)
    report = world.settle()
    assert (report.done, report.failed, report.pending) == (6, 0, 0)
    with world.db.session() as s:
        rule = world.backend.rule(s, rule.id)
        replicas = world.backend.replicas(s, world.did("raw/tract0001"))
    assert rule.state is RuleState.OK and rule.locks_ok == 6 and rule.stuck_reason is None
    assert world.rucio_rule_state(rule.id) in (None, "OK")
    assert {(r.site, r.state) for r in replicas} == {
        ("ncsa", ReplicaState.AVAILABLE),
        ("in2p3", ReplicaState.AVAILABLE),
    }
    for row in rows:
        assert (world.roots["in2p3"] / row.name).read_bytes() == (world.roots["ncsa"] / row.name).read_bytes()
    assert not list(world.roots["in2p3"].rglob(".*part-*")), "no temporary files left"
    # the same rule again is the same rule; a second engine run has nothing to do
    with world.db.session() as s:
        assert world.backend.add_rule(s, world.did("raw/tract0001"), "country=fr").id == rule.id
    assert world.engine.run(max_seconds=10).submitted == 0


def test_rule_on_sites_holding_everything_is_ok_at_once(world: World) -> None:
    world.register(world.did("raw/tract0002"), 3)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0002"), "role=lead")
        queued = s.execute(text("SELECT count(*) FROM transfers")).scalar_one()
    assert rule.state is RuleState.OK and rule.sites == ("ncsa",) and queued == 0
    assert world.rucio_rule_state(rule.id) in (None, "OK")


def test_two_copies_among_satellites(world: World) -> None:
    world.register(world.did("raw/tract0003"), 2)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0003"), "role=satellite", copies=2)
    world.settle()
    with world.db.session() as s:
        rule = world.backend.rule(s, rule.id)
    assert rule.state is RuleState.OK and rule.sites == ("in2p3", "slac") and rule.locks_ok == 4
    assert world.rucio_rule_state(rule.id) in (None, "OK")


def test_bad_rules_are_refused(world: World) -> None:
    world.register(world.did("raw/tract0004"), 1)
    with world.db.session() as s:
        with pytest.raises(InvalidInputError, match="matches 0 site"):
            world.backend.add_rule(s, world.did("raw/tract0004"), "country=de")
        with pytest.raises(InvalidInputError, match="position"):
            world.backend.add_rule(s, world.did("raw/tract0004"), "site=(")
        with pytest.raises(NotFoundError, match="not registered"):
            world.backend.add_rule(s, world.did("raw/nothing"), "site=in2p3")


def test_missing_source_makes_the_rule_stuck_with_its_reason(world: World) -> None:
    rows = world.register(world.did("raw/tract0005"), 3)
    (world.roots["ncsa"] / rows[1].name).unlink()
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0005"), "site=in2p3")
    report = world.settle()
    if world.conveyor:  # Rucio retries a failed request as a new request: one failed row per attempt
        assert report.done == 2 and report.failed >= 1
    else:
        assert (report.done, report.failed) == (2, 1)
    with world.db.session() as s:
        rule = world.backend.rule(s, rule.id)
    assert rule.state is RuleState.STUCK and (rule.locks_ok, rule.locks_stuck) == (2, 1)
    assert rule.stuck_reason is not None
    assert rows[1].name in rule.stuck_reason and "at in2p3" in rule.stuck_reason
    assert ("No such file" if world.conveyor else "source missing") in rule.stuck_reason


def test_corrupt_copy_is_removed_retried_then_bad(world: World) -> None:
    rows = world.register(world.did("raw/tract0006"), 2)
    src = world.roots["ncsa"] / rows[0].name
    src.write_bytes(bytes(b ^ 0xFF for b in src.read_bytes()))  # same size, different bytes
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0006"), "site=in2p3")
    report = world.settle()
    if world.conveyor:
        assert report.done == 1 and report.failed >= 1  # FTS verified the checksum; Rucio retried
    else:
        assert (report.done, report.retried, report.failed) == (1, 2, 1)  # 1 + retries=2 attempts
    assert not (world.roots["in2p3"] / rows[0].name).exists(), "a bad copy never stays under its real name"
    with world.db.session() as s:
        rule = world.backend.rule(s, rule.id)
        tried = s.execute(
            text(
                "SELECT t.attempts, t.failure, t.state FROM transfers t JOIN files f ON f.id = t.file_id "
                "WHERE f.name = :n ORDER BY t.id"
            ),
            {"n": rows[0].name},
        ).all()
        attempts, failure, _ = tried[-1]
        states = {(r.name, r.site): r.state for r in world.backend.replicas(s, world.did("raw/tract0006"))}
    assert states[(rows[1].name, "in2p3")] is ReplicaState.AVAILABLE
    assert rule.state is RuleState.STUCK and rule.stuck_reason is not None
    if world.conveyor:  # the mirrored request says what FTS said; Rucio gave the copy up: no replica
        # one row per Rucio request, each FAILED with Rucio's state as its failure kind
        assert tried and all((f, st) == ("failed", int(TransferState.FAILED)) for _, f, st in tried), tried
        assert states[(rows[0].name, "in2p3")] is ReplicaState.UNAVAILABLE
        assert "CHECKSUM MISMATCH" in rule.stuck_reason
    else:
        assert (attempts, failure) == (3, "checksum")
        assert states[(rows[0].name, "in2p3")] is ReplicaState.BAD
        assert "does not match the catalogue" in rule.stuck_reason
        assert "after 3 attempt(s)" in rule.stuck_reason


def test_unwritable_destination_is_stuck_with_reason(world: World) -> None:
    world.register(world.did("raw/tract0007"), 1)
    (world.roots["in2p3"] / world.scope).write_text("a file where a directory should be\n")
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0007"), "site=in2p3")
    report = world.settle()
    assert report.failed >= 1 if world.conveyor else report.failed == 1
    with world.db.session() as s:
        rule = world.backend.rule(s, rule.id)
        (state,) = {
            r.state for r in world.backend.replicas(s, world.did("raw/tract0007")) if r.site == "in2p3"
        }
    assert state is ReplicaState.UNAVAILABLE
    assert rule.state is RuleState.STUCK and rule.stuck_reason
    assert ("DESTINATION" if world.conveyor else "cannot write") in rule.stuck_reason


def test_file_attached_after_the_rule_is_copied(world: World) -> None:
    """A rule covers files attached to its dataset later: an OK rule replicates again, then is OK."""
    world.register(world.did("raw/tract0009"), 2)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0009"), "site=in2p3")
    world.settle()
    late = world.write("ncsa", f"{world.scope}/raw/tract0009/late.fits", b"attached later\n" * 100)
    with world.db.session() as s:
        world.backend.register(s, world.did("raw/tract0009"), [late], "ncsa")
        assert world.backend.rule(s, rule.id).state is RuleState.REPLICATING
    world.settle()
    with world.db.session() as s:
        info = world.backend.rule(s, rule.id)
    assert info.state is RuleState.OK and info.locks_ok == 3
    assert (world.roots["in2p3"] / late.name).read_bytes() == (world.roots["ncsa"] / late.name).read_bytes()
    if world.rucio_rule_state(rule.id) is not None:
        assert world.rucio_rule_state(rule.id) == "OK"
        assert world.rucio_replica_state(late.name, "in2p3") == "AVAILABLE"


def test_declared_bad_replica_is_copied_again(world: World) -> None:
    rows = world.register(world.did("raw/tract0008"), 2)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0008"), "site=in2p3")
    world.settle()
    damaged = world.roots["in2p3"] / rows[0].name
    damaged.write_bytes(b"garbage")
    with world.db.session() as s:
        assert (
            world.backend.declare_bad(s, [(rows[0].name, "in2p3")], "audit: size mismatch", source="audit")
            == 1
        )
        assert world.backend.rule(s, rule.id).state is RuleState.REPLICATING
        (reason,) = s.execute(text("SELECT reason FROM bad_replicas")).scalars()
    assert reason == "audit: size mismatch"
    assert world.rucio_replica_state(rows[0].name, "in2p3") in (None, "BAD"), "declared bad in Rucio too"
    world.settle()
    with world.db.session() as s:
        assert world.backend.rule(s, rule.id).state is RuleState.OK
    assert damaged.read_bytes() == (world.roots["ncsa"] / rows[0].name).read_bytes()
    assert world.rucio_replica_state(rows[0].name, "in2p3") in (None, "AVAILABLE")
    assert world.rucio_rule_state(rule.id) in (None, "OK")


def test_bad_replica_without_healthy_copy_is_stuck_and_says_so(world: World) -> None:
    rows = world.register(world.did("raw/tract0009"), 1)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0009"), "site=ncsa")
        world.backend.declare_bad(s, [(rows[0].name, "ncsa")], "audit: adler32 mismatch", source="audit")
        info = world.backend.rule(s, rule.id)
    assert info.state is RuleState.STUCK and info.stuck_reason is not None
    assert "BAD at ncsa: audit: adler32 mismatch" in info.stuck_reason


def test_active_transfers_per_link_are_limited(db: Database, tmp_path: Path) -> None:
    cat, roots = _catalogue(tmp_path, max_active=2)
    backend = EmbeddedBackend(EmbeddedBackend.Settings(), cat)
    engine = TransferEngine(db, cat, backend)
    w = World(db, cat, backend, engine, roots, "dr1")
    w.register(w.did("raw/tract0010"), 5)
    with db.session() as s:
        backend.add_rule(s, w.did("raw/tract0010"), "site=slac")
    first = engine.run_once()
    assert first.submitted == 2 and first.pending == 3
    total = engine.run(max_seconds=60)
    assert total.done == 3 and total.pending == 0
    with db.session() as s:
        assert (
            s.execute(
                text("SELECT count(*) FROM transfers WHERE state = :d"), {"d": int(TransferState.DONE)}
            ).scalar_one()
            == 5
        )
    engine.close()


def test_a_source_declared_bad_after_queueing_is_never_read(db: Database, tmp_path: Path) -> None:
    """Copies queued from a replica that is then declared BAD switch to another verified replica; with
    none left they fail without an attempt, and the rule says why (the engine's own rule: embedded)."""
    cat, roots = _catalogue(tmp_path)
    backend = EmbeddedBackend(EmbeddedBackend.Settings(), cat)
    engine = TransferEngine(db, cat, backend)
    w = World(db, cat, backend, engine, roots, "dr2")
    rows = w.register(w.did("raw/tract0011"), 2)
    with db.session() as s:
        backend.add_rule(s, w.did("raw/tract0011"), "site=slac")
    assert engine.run(max_seconds=60).done == 2
    with db.session() as s:
        rule = backend.add_rule(s, w.did("raw/tract0011"), "site=in2p3")
        backend.declare_bad(s, [(r.name, "ncsa") for r in rows], "audit: adler32 mismatch", source="audit")
        backend.declare_bad(s, [(rows[1].name, "slac")], "audit: size mismatch", source="audit")
    (roots["ncsa"] / rows[0].name).write_bytes(b"garbage")  # a read from ncsa would fail its checksum
    engine.run(max_seconds=60)
    engine.close()
    with db.session() as s:
        got = s.execute(
            text(
                "SELECT f.name, t.state, t.attempts, t.source_site_id, t.error FROM transfers t "
                "JOIN files f ON f.id = t.file_id JOIN sites d ON d.id = t.dest_site_id "
                "WHERE d.name = 'in2p3' ORDER BY f.name"
            )
        ).all()
        slac = s.execute(text("SELECT id FROM sites WHERE name = 'slac'")).scalar_one()
        info = backend.rule(s, rule.id)
    (n0, st0, at0, src0, _), (n1, st1, at1, _, err1) = got
    assert (n0, TransferState(st0), at0, src0) == (rows[0].name, TransferState.DONE, 1, slac)
    assert (roots["in2p3"] / n0).read_bytes() == (roots["slac"] / n0).read_bytes()
    assert (n1, TransferState(st1), at1) == (rows[1].name, TransferState.FAILED, 0)
    assert "no verified copy left to copy from" in err1 and not (roots["in2p3"] / n1).exists()
    assert info.state is RuleState.STUCK and info.stuck_reason is not None

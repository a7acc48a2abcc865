"""Conveyor mode end to end: Rucio's judge, conveyor and necromancer move the data through the FTS3
fake, satdrp only registers, places rules and watches.

The contract suite (tests/contracts/test_replication.py) runs the common scenarios in this mode too;
here are the ones only the conveyor has: every AVAILABLE copy comes from a Rucio request (satdrp wrote
no replica state for it), FTS losing its jobs, DR repairs left to Rucio, what `drp doctor` says about
the mode, and the demo campaign in this mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, text

from bookkeeping.database import Database
from bookkeeping.states import ReplicaState, RuleState, TransferState
from common.probes import Health
from tests.contracts.test_replication import World, make_world
from transfer.dr import audit, recover


@pytest.fixture
def world(request: pytest.FixtureRequest, db: Database, tmp_path: Path) -> Iterator[World]:
    with make_world(request, db, tmp_path, "rucio-conveyor") as w:
        yield w


def _history(world: World, name: str, dest: str) -> list[dict[str, object]]:
    """Rucio's archived requests for the file to the site's RSE."""
    client = world.backend.client  # type: ignore[attr-defined]
    rse = world.backend.rse(dest)  # type: ignore[attr-defined]
    scope, rest = name.split("/", 1)
    return [
        r
        for r in client.list_requests_history(world.backend.rse("ncsa"), rse, "D,F,L", 0, 10000)  # type: ignore[attr-defined]
        if r["scope"] == scope and r["name"] == rest
    ]


def test_every_available_copy_comes_from_a_done_rucio_request(world: World) -> None:
    rows = world.register(world.did("raw/tract0201"), 5)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0201"), "site=in2p3")
    world.settle()
    with world.db.session() as s:
        assert world.backend.rule(s, rule.id).state is RuleState.OK
        mirrored = s.execute(text("SELECT mover, request_id, external_id, state, bytes FROM transfers")).all()
    assert world.rucio_rule_state(rule.id) == "OK"
    for r in rows:
        assert world.rucio_replica_state(r.name, "in2p3") == "AVAILABLE"
        done = [h for h in _history(world, r.name, "in2p3") if h["state"] == "DONE"]
        assert len(done) == 1, f"{r.name}: made by exactly one Rucio request"
        assert (world.roots["in2p3"] / r.name).read_bytes() == (world.roots["ncsa"] / r.name).read_bytes()
    # one bookkeeping row per Rucio request, each with its FTS job; none invented
    assert len(mirrored) == 5
    assert {m.mover for m in mirrored} == {"rucio"}
    assert all(m.request_id and m.external_id for m in mirrored)
    assert {TransferState(m.state) for m in mirrored} == {TransferState.DONE}
    assert sum(m.bytes for m in mirrored) == 5 * 4096
    # satdrp's engine never took one of them
    assert world.engine.run(max_seconds=1).submitted == 0


def test_fts_forgetting_its_jobs_makes_them_lost_then_resubmitted(world: World) -> None:
    fts = world.daemons.fts
    fts.going.clear()  # FTS accepts the jobs but does not run them yet
    try:
        rows = world.register(world.did("raw/tract0203"), 3)
        with world.db.session() as s:
            rule = world.backend.add_rule(s, world.did("raw/tract0203"), "site=in2p3")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until Rucio has submitted all three to FTS
            with world.db.session() as s:
                world.backend.step(s)
                active = s.execute(
                    text("SELECT count(*) FROM transfers WHERE state = :a AND external_id IS NOT NULL"),
                    {"a": int(TransferState.ACTIVE)},
                ).scalar_one()
            if active == 3:
                break
            time.sleep(0.3)
        assert active == 3, "Rucio submitted the requests to FTS"
        fts.restart(down_s=2.0)  # down for a couple of poller passes, back with no memory of the jobs
    finally:
        fts.going.set()
    world.settle(max_seconds=120)
    with world.db.session() as s:
        assert world.backend.rule(s, rule.id).state is RuleState.OK
        rows_ = s.execute(text("SELECT state, error FROM transfers ORDER BY id")).all()
    lost = [r for r in rows_ if r.state == int(TransferState.FAILED)]
    assert len(lost) == 3 and all("lost" in (r.error or "").lower() for r in lost), rows_
    assert sum(r.state == int(TransferState.DONE) for r in rows_) == 3, "resubmitted, then done"
    for r in rows:
        assert (world.roots["in2p3"] / r.name).read_bytes() == (world.roots["ncsa"] / r.name).read_bytes()


def _replica_states(world: World, names: list[str], site: str) -> list[int]:
    with world.db.session() as s:
        return [
            int(st)
            for (st,) in s.execute(
                text(
                    "SELECT r.state FROM replicas r JOIN files f ON f.id = r.file_id JOIN sites x "
                    "ON x.id = r.site_id WHERE x.name = :site AND f.name IN :names ORDER BY f.name"
                ).bindparams(bindparam("names", expanding=True)),
                {"site": site, "names": names},
            )
        ]


def test_dr_recover_lets_rucio_repair(world: World) -> None:
    rows = world.register(world.did("raw/tract0204"), 4)
    with world.db.session() as s:
        rule = world.backend.add_rule(s, world.did("raw/tract0204"), "site=in2p3")
    world.settle()
    root = world.roots["in2p3"]
    (root / rows[0].name).unlink()
    (root / rows[1].name).write_bytes(b"garbage")
    found = audit(world.db, world.cat, world.backend, "in2p3", verify_checksums=True)
    assert {f.name for f in found.findings} == {rows[0].name, rows[1].name}
    for r in rows[:2]:
        # declared in Rucio; its necromancer may already have started the repair
        assert world.rucio_replica_state(r.name, "in2p3") in ("BAD", "COPYING", "AVAILABLE")
    before = _count_requests(world)
    # the necromancer and conveyor can finish before recover starts
    repaired = _replica_states(world, [r.name for r in rows[:2]], "in2p3").count(int(ReplicaState.AVAILABLE))
    done = recover(world.db, world.cat, world.backend, "in2p3", max_seconds=120)
    # the books change only when a step mirrors Rucio: each repair is counted once, before or by recover
    # (which also watches a repair already started: see the next test)
    assert (done.recovered + repaired, done.unrecoverable, done.failed, done.pending) == (2, [], [], 0)
    with world.db.session() as s:
        assert world.backend.rule(s, rule.id).state is RuleState.OK
        assert s.execute(text("SELECT count(*) FROM transfers WHERE mover <> 'rucio'")).scalar_one() == 0
    assert _count_requests(world) == before + 2, "Rucio made one new request per damaged replica"
    for r in rows:
        assert (root / r.name).read_bytes() == (world.roots["ncsa"] / r.name).read_bytes()
        assert world.rucio_replica_state(r.name, "in2p3") == "AVAILABLE"
    assert audit(world.db, world.cat, world.backend, "in2p3", verify_checksums=True).findings == []


def test_recover_watches_a_repair_rucio_has_started(world: World) -> None:
    """Once Rucio's necromancer has started repairing a replica `drp dr audit` declared bad, bookkeeping
    mirrors it COPYING: recover watches that repair to its end instead of calling it a rule's copy
    and returning at once with nothing done."""
    rows = world.register(world.did("raw/tract0205"), 2)
    with world.db.session() as s:
        world.backend.add_rule(s, world.did("raw/tract0205"), "site=in2p3")
    world.settle()
    daemons = world.daemons
    assert daemons is not None
    daemons.gate.unlink()  # no repair before bookkeeping has seen it start
    daemons.wait_idle()
    (world.roots["in2p3"] / rows[0].name).unlink()
    assert [f.name for f in audit(world.db, world.cat, world.backend, "in2p3").findings] == [rows[0].name]
    daemons.gate.touch()
    deadline = time.monotonic() + 60
    while _replica_states(world, [rows[0].name], "in2p3") != [int(ReplicaState.COPYING)]:
        assert time.monotonic() < deadline, "Rucio never started the repair"
        with world.db.session() as s:
            world.backend.step(s)
        time.sleep(0.1)
    daemons.gate.unlink()  # the repair stays unfinished until recover runs
    daemons.wait_idle()
    assert _replica_states(world, [rows[0].name], "in2p3") == [int(ReplicaState.COPYING)]
    daemons.gate.touch()
    done = recover(world.db, world.cat, world.backend, "in2p3", max_seconds=120)
    assert (done.to_recover, done.recovered, done.failed, done.pending) == (1, 1, [], 0)
    assert (world.roots["in2p3"] / rows[0].name).read_bytes() == (
        world.roots["ncsa"] / rows[0].name
    ).read_bytes()


def _count_requests(world: World) -> int:
    with world.db.session() as s:
        return int(s.execute(text("SELECT count(*) FROM transfers")).scalar_one())


def test_doctor_names_the_mode_and_checks_fts(world: World) -> None:
    probes = {p.check: p for p in world.backend.probe()}
    assert probes["transfers"].health is Health.OK
    assert "conveyor" in probes["transfers"].detail and world.daemons.fts_url in probes["transfers"].detail
    assert probes["FTS3 endpoint"].health is Health.OK
    assert "conveyor" in world.backend.data_path() and not world.backend.engine_copies


def test_demo_campaign_completes_in_conveyor_mode(
    rucio_server: object, rucio_conveyor: object, tmp_path: Path
) -> None:
    """`drp demo --small --replication rucio.toml`: the whole campaign with every copy made by Rucio's
    conveyor through FTS3, every file verified at both sites."""
    import uuid

    from drp.demo import DemoSettings, run_demo
    from tests.rucio_server import replication_settings

    tag = uuid.uuid4().hex[:8]
    settings_file = tmp_path / "rucio.toml"
    table = replication_settings(rucio_server, f"_D{tag.upper()}", rucio_conveyor)  # type: ignore[arg-type]
    settings_file.write_text("[replication]\n" + "".join(f'{k} = "{v}"\n' for k, v in table.items()))
    with rucio_conveyor.running():  # type: ignore[attr-defined]
        result = run_demo(
            DemoSettings(workdir=tmp_path / "demo", small=True, replication=settings_file, release=f"dr{tag}")
        )
    assert (result.state, result.mismatches) == ("DONE", []), result.message
    assert "Rucio requests:" in result.message and " 0 done" not in result.message, result.message
    assert result.verified == {"ncsa": result.files, "in2p3": result.files} and result.files > 0
    assert result.status is not None and result.status.data_path is not None
    assert "conveyor" in result.status.data_path
    db = Database(result.db_url)
    try:
        with db.session() as s:
            movers = dict(s.execute(text("SELECT mover, count(*) FROM transfers GROUP BY mover")).all())
            no_request = s.execute(text("SELECT count(*) FROM transfers WHERE request_id IS NULL")).scalar()
    finally:
        db.dispose()
    assert set(movers) == {"rucio"} and movers["rucio"] > 0 and no_request == 0


def test_xrootd_sites_copy_through_fts_with_rucio(
    rucio_server: object,
    rucio_conveyor: object,
    xrootd_sites: dict[str, object],
    db: Database,
    tmp_path: Path,
) -> None:
    """Two XRootD sites: Rucio's conveyor submits root:// → root:// to FTS3, which copies third-party
    (xrdcp --tpc first) with the requested adler32 checked; the rule goes OK, the books mirror it."""
    import os
    import uuid
    import zlib

    from bookkeeping.files import FileRow
    from sites.catalogue import parse_catalogue
    from tests.rucio_server import PASSWORD, USERNAME
    from transfer.engine import TransferEngine
    from transfer.replication.registry import get_replication

    tag = uuid.uuid4().hex[:8]
    src, dst = xrootd_sites["ncsa"], xrootd_sites["in2p3"]
    cat = parse_catalogue(
        {
            "site": [
                {"name": "ncsa", "role": "lead", "share": 0.5, "storage": f"{src.url}/{tag}"},  # type: ignore[attr-defined]
                {"name": "in2p3", "role": "satellite", "share": 0.5, "storage": f"{dst.url}/{tag}"},  # type: ignore[attr-defined]
            ],
            "replication": {
                "backend": "rucio",
                "host": rucio_server.url,  # type: ignore[attr-defined]
                "username": USERNAME,
                "password": PASSWORD,
                "rse_suffix": f"_X{tag.upper()}",
                "transfers": "conveyor",
                "fts": rucio_conveyor.fts_url,  # type: ignore[attr-defined]
            },
        },
        "test",
    )
    scope = f"x{tag}"
    rows = []
    for i in range(3):
        data = os.urandom(8192)
        path = src.data / tag / scope / "raw" / f"f{i}.fits"  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(FileRow(f"{scope}/raw/f{i}.fits", len(data), f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"))
    src.chown()  # type: ignore[attr-defined]
    backend = get_replication(cat)
    engine = TransferEngine(db, cat, backend)
    try:
        with db.session() as s:
            backend.register(s, f"{scope}:raw", rows, "ncsa")
            rule = backend.add_rule(s, f"{scope}:raw", "site=in2p3")
        with rucio_conveyor.running():  # type: ignore[attr-defined]
            engine.run(max_seconds=120, poll_s=0.5)
        with db.session() as s:
            info = backend.rule(s, rule.id)
            movers = s.execute(text("SELECT mover, state FROM transfers")).all()
    finally:
        engine.close()
    assert info.state is RuleState.OK, info.stuck_reason
    assert sorted(movers) == [("rucio", int(TransferState.DONE))] * 3
    for r in rows:
        copy = dst.data / tag / r.name  # type: ignore[attr-defined]
        assert copy.read_bytes() == (src.data / tag / r.name).read_bytes()  # type: ignore[attr-defined]


def test_satdrp_mode_pushes_copies_rucio_missed_after_a_restart(
    request: pytest.FixtureRequest, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`transfers = "satdrp"`: copies verified in bookkeeping whose AVAILABLE state never reached Rucio
    (the process died between the two) are pushed by the next process's first step."""
    from transfer.replication.registry import get_replication

    with make_world(request, db, tmp_path, "rucio") as world:
        rows = world.register(world.did("raw/tract0301"), 2)
        monkeypatch.setattr(world.backend, "_available_in_rucio", lambda session, replicas: None)
        with world.db.session() as s:
            rule = world.backend.add_rule(s, world.did("raw/tract0301"), "site=in2p3")
        world.settle()  # copied and verified; Rucio never told
        assert world.rucio_rule_state(rule.id) == "REPLICATING"
        restarted = get_replication(world.cat)  # a new process: nothing reconciled yet
        with world.db.session() as s:
            restarted.step(s)
        assert world.rucio_rule_state(rule.id) == "OK"
        assert {world.rucio_replica_state(r.name, "in2p3") for r in rows} == {"AVAILABLE"}

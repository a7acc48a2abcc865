"""Disaster recovery of data on a finished tiny campaign: the audit finds exactly the damage done to a
site's storage (nothing more), recover restores it from the other site, a second audit is clean; a file
whose only copies are corrupt is reported unrecoverable and left in place; dark files are reported and
deleted only on request, never when they are the last copy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.sites import upsert_sites
from drp.campaign import CampaignDriver
from science.synth import generate_release
from sites.catalogue import load_catalogue
from tests.contracts.test_replication import World, make_world
from tests.test_campaign import _setup
from tests.test_local_backend import CFG
from transfer.dr import DrStatus, FindingKind, audit, recover, replicate, status
from transfer.replication.registry import get_replication


@pytest.fixture(params=["embedded", "rucio"])
def world(request: pytest.FixtureRequest, db: Database, tmp_path: Path) -> Iterator[World]:
    """The replication contract's world, on the back-ends where satdrp copies (× SQLite and PG)."""
    with make_world(request, db, tmp_path, request.param) as w:
        yield w


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    generate_release(CFG, root)
    return root


@pytest.fixture
def finished(tmp_path: Path, pristine: Path) -> CampaignDriver:
    driver = _setup(tmp_path, pristine)
    assert driver.run(max_ticks=200).after == "DONE"
    return driver


def _catalogued(driver: CampaignDriver) -> list[tuple[str, int]]:
    with driver.db.session() as s:
        return [(str(n), int(z)) for n, z in s.execute(text("SELECT name, size FROM files ORDER BY name"))]


def _flip(path: Path) -> None:
    """Corrupt in place, same size: only a checksum can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _states(driver: CampaignDriver, site: str, names: list[str]) -> dict[str, str]:
    with driver.db.session() as s:
        rows = s.execute(
            text(
                "SELECT f.name, r.state FROM files f JOIN replicas r ON r.file_id = f.id "
                "JOIN sites s ON s.id = r.site_id WHERE s.name = :site"
            ),
            {"site": site},
        ).all()
    from bookkeeping.states import ReplicaState

    return {n: ReplicaState(st).name for n, st in rows if n in names}


def test_audit_finds_exactly_the_damage_and_recover_restores_it(
    finished: CampaignDriver, tmp_path: Path
) -> None:
    d, backend = finished, finished.replication
    root, other = tmp_path / "in2p3", tmp_path / "ncsa"
    clean = audit(d.db, d.catalogue, backend, "in2p3", verify_checksums=True)
    assert clean.findings == [] and clean.exit_code == 0
    assert clean.checked == len(_catalogued(d)) and clean.bytes_read == sum(z for _, z in _catalogued(d))
    assert set(clean.outside) >= {"tiny/jobs", "tiny/calexp"}, "uncatalogued types are not called dark"

    files = [n for n, z in _catalogued(d) if z > 100]
    lost, flipped, truncated = files[0:3], files[5:7], files[9]
    for n in lost:
        (root / n).unlink()
    for n in flipped:
        _flip(root / n)
    with (root / truncated).open("r+b") as f:
        f.truncate(10)
    dark = f"{Path(files[0]).parent}/stray.fits"
    (root / dark).write_bytes(b"not in the catalogue")

    quick = audit(d.db, d.catalogue, backend, "in2p3", dry_run=True)
    assert {(f.kind, f.name) for f in quick.findings} == {
        *((FindingKind.LOST, n) for n in lost),
        (FindingKind.CORRUPT, truncated),
        (FindingKind.DARK, dark),
    }, "without checksums: absences, sizes and dark files only"
    assert quick.audit_id is None and _states(d, "in2p3", lost) == dict.fromkeys(lost, "AVAILABLE")

    found = audit(d.db, d.catalogue, backend, "in2p3", verify_checksums=True)
    assert {(f.kind, f.name) for f in found.findings} == {
        *((FindingKind.LOST, n) for n in lost),
        *((FindingKind.CORRUPT, n) for n in [*flipped, truncated]),
        (FindingKind.DARK, dark),
    }
    assert found.exit_code == 1
    by_name = {f.name: f for f in found.findings}
    assert "adler32" in by_name[flipped[0]].reason and "size 10 on storage" in by_name[truncated].reason
    assert by_name[dark].action == "reported" and (root / dark).exists()
    with d.db.session() as s:
        recorded = s.execute(
            text("SELECT kind, name FROM audit_findings WHERE audit_id = :a"), {"a": found.audit_id}
        ).all()
        declared = s.execute(text("SELECT count(*) FROM bad_replicas WHERE source = 'audit'")).scalar_one()
    assert sorted(recorded) == sorted((f.kind.value, f.name) for f in found.findings)
    assert declared == 6
    assert set(_states(d, "in2p3", lost + flipped).values()) <= {"LOST", "BAD", "COPYING"}

    done = recover(d.db, d.catalogue, backend, "in2p3")
    assert (done.to_recover, done.recovered, done.unrecoverable, done.failed) == (6, 6, [], [])
    assert done.exit_code == 0
    for n in [*lost, *flipped, truncated]:
        assert (root / n).read_bytes() == (other / n).read_bytes()
    assert set(_states(d, "in2p3", [*lost, *flipped, truncated]).values()) == {"AVAILABLE"}

    again = audit(d.db, d.catalogue, backend, "in2p3", verify_checksums=True)
    assert [(f.kind, f.name) for f in again.findings] == [(FindingKind.DARK, dark)], "only the dark file"
    cleaned = audit(d.db, d.catalogue, backend, "in2p3", delete_dark=True)
    assert [f.action for f in cleaned.findings] == ["deleted"] and not (root / dark).exists()
    assert audit(d.db, d.catalogue, backend, "in2p3", verify_checksums=True).findings == []
    assert audit(d.db, d.catalogue, backend, "ncsa", verify_checksums=True).findings == []


def test_only_copy_corrupt_is_unrecoverable_and_left_in_place(
    finished: CampaignDriver, tmp_path: Path
) -> None:
    d, backend = finished, finished.replication
    name = next(n for n, z in _catalogued(d) if z > 100)
    with d.db.session() as s:
        before = s.execute(text("SELECT max(id) FROM transfers")).scalar_one()
    for site in ("ncsa", "in2p3"):
        _flip(tmp_path / site / name)
    damaged = (tmp_path / "in2p3" / name).read_bytes()
    for site in ("ncsa", "in2p3"):
        rep = audit(d.db, d.catalogue, backend, site, verify_checksums=True)
        assert [(f.kind, f.name) for f in rep.findings] == [(FindingKind.CORRUPT, name)]
    damaged_ncsa = (tmp_path / "ncsa" / name).read_bytes()
    # ncsa first: its audit queued a copy from in2p3, whose replica the second audit declared bad
    for site in ("ncsa", "in2p3"):
        preview = recover(d.db, d.catalogue, backend, site, dry_run=True)
        assert [n for n, _ in preview.unrecoverable] == [name], site
        rec = recover(d.db, d.catalogue, backend, site)
        assert (rec.exit_code, rec.recovered, rec.failed) == (1, 0, []), site
        ((unrec, why),) = rec.unrecoverable
        assert unrec == name and "no verified copy at any other site" in why, why
    with d.db.session() as s:
        tried = s.execute(
            text("SELECT count(*) FROM transfers WHERE id > :b AND attempts > 0"), {"b": before}
        ).scalar_one()
    assert tried == 0, "no copy was attempted from a replica declared bad"
    assert _states(d, "ncsa", [name]) == _states(d, "in2p3", [name]) == {name: "BAD"}
    assert (tmp_path / "in2p3" / name).read_bytes() == damaged, "left in place"
    assert (tmp_path / "ncsa" / name).read_bytes() == damaged_ncsa, "left in place"
    st = status_of(d)
    assert st.no_copy == 1 and (name, "no verified copy") in st.examples
    ((listed, why),) = st.unrecoverable
    assert listed == name and why.startswith("ncsa BAD (") and "; in2p3 BAD (" in why, why


def test_audit_removes_the_temporaries_of_dead_owners_and_keeps_live_ones(
    finished: CampaignDriver, tmp_path: Path
) -> None:
    import subprocess

    from common.temporaries import hostname, temp_path

    d, backend = finished, finished.replication
    name = next(n for n, _ in _catalogued(d))
    target = tmp_path / "in2p3" / name
    gone = subprocess.Popen(["true"])
    gone.wait()
    with d.db.session() as s:
        done_transfer = s.execute(text("SELECT max(id) FROM transfers WHERE state = 4")).scalar_one()
    temps = {
        "dead job": temp_path(target, f"p{gone.pid}@{hostname()}"),
        "live": temp_path(target),
        "finished transfer": temp_path(target, f"t{done_transfer}.1"),
    }
    for p in temps.values():
        p.write_bytes(b"partial copy")
    preview = audit(d.db, d.catalogue, backend, "in2p3", dry_run=True)
    assert preview.exit_code == 0 and preview.to_dict()["counts"]["TEMP"] == 3
    acts = {f.name.rpartition("/")[2]: f.action for f in preview.of(FindingKind.TEMP)}
    assert acts == {
        temps["dead job"].name: "would delete",
        temps["live"].name: "kept: owner alive",
        temps["finished transfer"].name: "would delete",
    }
    assert all(p.exists() for p in temps.values())
    real = audit(d.db, d.catalogue, backend, "in2p3")
    assert sorted(f.action or "" for f in real.of(FindingKind.TEMP)) == [
        "deleted",
        "deleted",
        "kept: owner alive",
    ]
    assert [p.exists() for p in temps.values()] == [False, True, False]
    assert f"process {gone.pid} on {hostname()} is gone" in " ".join(f.reason for f in real.findings)


def test_dark_file_that_is_the_last_copy_is_never_deleted(finished: CampaignDriver, tmp_path: Path) -> None:
    d, backend = finished, finished.replication
    name = next(n for n, z in _catalogued(d) if z > 100)
    (tmp_path / "ncsa" / name).unlink()
    audit(d.db, d.catalogue, backend, "ncsa")  # declared LOST at ncsa: in2p3 holds the only copy
    with d.db.session() as s:  # the in2p3 replica is declared LOST by an operator who was wrong
        backend.declare_bad(s, [(name, "in2p3")], "operator: thought lost", source="operator")
    rep = audit(d.db, d.catalogue, backend, "in2p3", delete_dark=True)
    assert [(f.kind, f.action) for f in rep.findings if f.name == name] == []  # declared bad: not dark
    with d.db.session() as s:
        s.execute(
            text(
                "DELETE FROM replicas WHERE site_id = (SELECT id FROM sites WHERE name = 'in2p3') "
                "AND file_id = (SELECT id FROM files WHERE name = :n)"
            ),
            {"n": name},
        )
    rep = audit(d.db, d.catalogue, backend, "in2p3", delete_dark=True)
    ((f,),) = [[f for f in rep.findings if f.name == name]]
    assert f.kind is FindingKind.DARK and f.action == "kept: no verified copy elsewhere"
    assert (tmp_path / "in2p3" / name).exists()


def test_status_and_replicate_fill_a_new_site(finished: CampaignDriver, tmp_path: Path) -> None:
    """A third centre joins as a DR site: `replicate --to slac` gives it the whole release, verified."""
    d = finished
    st = status_of(d)
    assert st.single_copy == 0 and st.no_copy == 0 and st.exit_code == 0
    types = {t.type: t for t in st.types}
    assert {"inputs", "meta", "outputs"} <= set(types)
    for t in types.values():
        assert t.available == {"in2p3": t.files, "ncsa": t.files}
    (tmp_path / "slac").mkdir()
    toml = (tmp_path / "sites.toml").read_text().replace("share = 0.5", "share = 0.4", 1)
    toml = toml.replace(
        "[transfer]",
        f"""[[site]]
name = "slac"
role = "satellite"
share = 0.1
storage = "file://{tmp_path / "slac"}"

[transfer]""",
    )
    (tmp_path / "sites3.toml").write_text(toml)
    cat = load_catalogue(tmp_path / "sites3.toml")
    backend = get_replication(cat)
    with d.db.session() as s:
        upsert_sites(s, [x.to_row() for x in cat.sites])
    dry = replicate(d.db, cat, backend, "slac", "tiny", dry_run=True)
    files = _catalogued(d)
    assert (dry.missing_files, dry.missing_bytes, dry.exit_code) == (len(files), sum(z for _, z in files), 3)
    full = replicate(d.db, cat, backend, "slac", "tiny")
    assert (full.copied, full.failed, full.pending, full.exit_code) == (len(files), 0, 0, 0)
    for n, _ in files:
        assert (tmp_path / "slac" / n).read_bytes() == (tmp_path / "ncsa" / n).read_bytes()
    assert audit(d.db, cat, backend, "slac", verify_checksums=True).findings == []
    again = replicate(d.db, cat, backend, "slac", "tiny")
    assert (again.rules_added, again.copied, again.exit_code) == (0, 0, 0), "idempotent"
    assert {t.type: t.available["slac"] for t in status_of(d).types} == {
        t.type: t.files for t in status_of(d).types
    }


def status_of(d: CampaignDriver) -> DrStatus:
    with d.db.session() as s:
        return status(s)


def test_cli_audit_recover_status(finished: CampaignDriver, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from cli import cli

    env = {"DRP_DB_URL": f"sqlite:///{tmp_path / 'bk.sqlite'}", "DRP_SITES": str(tmp_path / "sites.toml")}
    runner = CliRunner()

    def drp(*args: str) -> tuple[int, Any]:
        res = runner.invoke(cli, ["dr", *args, "--json"], env=env, catch_exceptions=False)
        return res.exit_code, json.loads(res.stdout)

    code, st = drp("status")
    assert code == 0 and st["single_copy"] == 0
    name = next(n for n, z in _catalogued(finished) if z > 100)
    (tmp_path / "in2p3" / name).unlink()
    code, rep = drp("audit", "--site", "in2p3", "--dry-run")
    assert (
        code == 1
        and rep["counts"] == {"LOST": 1, "CORRUPT": 0, "DARK": 0, "TEMP": 0}
        and rep["audit_id"] is None
    )
    code, rep = drp("audit", "--site", "in2p3", "--verify-checksums")
    assert (
        code == 1 and rep["findings"][0]["name"] == name and rep["findings"][0]["action"] == "declared LOST"
    )
    code, rec = drp("recover", "--site", "in2p3")
    assert code == 0 and rec["recovered"] == 1
    code, rep = drp("audit", "--site", "in2p3", "--sample", "0.5", "--verify-checksums")
    assert code == 0 and 0 < rep["checked"] < rep["catalogued"]
    bad = runner.invoke(cli, ["dr", "audit", "--site", "nowhere"], env=env)
    assert bad.exit_code == 2 and "nowhere" in bad.output


def test_audit_and_recover_on_every_replication_backend(world: World) -> None:
    """The same damage found and repaired with the embedded back-end and a real Rucio server (where the
    bad replicas are declared BAD and are AVAILABLE again after recovery), on SQLite and PostgreSQL."""
    rows = world.register(world.did("raw/tract0101"), 8)
    with world.db.session() as s:
        world.backend.add_rule(s, world.did("raw/tract0101"), "site=in2p3")
    world.engine.run(max_seconds=60)
    rucio = getattr(world.backend, "client", None) is not None
    root = world.roots["in2p3"]
    assert audit(world.db, world.cat, world.backend, "in2p3", verify_checksums=True).findings == []
    (root / rows[0].name).unlink()
    (root / rows[1].name).unlink()
    _flip(root / rows[2].name)
    found = audit(world.db, world.cat, world.backend, "in2p3", verify_checksums=True)
    assert {(f.kind, f.name) for f in found.findings} == {
        (FindingKind.LOST, rows[0].name),
        (FindingKind.LOST, rows[1].name),
        (FindingKind.CORRUPT, rows[2].name),
    }
    if rucio:
        for r in rows[:3]:
            assert world.rucio_replica_state(r.name, "in2p3") == "BAD", "declared in Rucio"
        assert world.rucio_replica_state(rows[3].name, "in2p3") == "AVAILABLE"
    done = recover(world.db, world.cat, world.backend, "in2p3")
    assert (done.recovered, done.unrecoverable, done.failed) == (3, [], [])
    assert audit(world.db, world.cat, world.backend, "in2p3", verify_checksums=True).findings == []
    for r in rows:
        assert (root / r.name).read_bytes() == (world.roots["ncsa"] / r.name).read_bytes()
        if rucio:
            assert world.rucio_replica_state(r.name, "in2p3") == "AVAILABLE"

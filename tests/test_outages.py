"""Services going away mid-campaign and coming back: the real Rucio server and the real PostgreSQL,
each behind a proxy that the test takes down (connection refused, open connections cut) and brings
back. Every wait is a recorded event, ticks back off, nothing is half-written, and the campaign ends
DONE with the books of an uninterrupted run."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bookkeeping.database import Database
from common.errors import EXIT_USAGE, DatabaseUnavailableError
from drp.campaign import CampaignDriver, TickResult
from drp.campaign_config import load_campaign
from sites.catalogue import load_catalogue
from tests.fault_proxy import FaultProxy
from tests.test_campaign import _setup, pristine  # noqa: F401 - the module's release fixture
from transfer.checksum import adler32_file


def _books(db: Database) -> dict[str, Any]:
    """What an uninterrupted run would also hold: files, replicas per site and state, one transfer per
    (file, destination), jobs."""
    with db.session() as s:
        return {
            "files": s.execute(text("SELECT count(*) FROM files")).scalar_one(),
            "replicas": sorted(
                tuple(r)
                for r in s.execute(text("SELECT site_id, state, count(*) FROM replicas GROUP BY 1, 2"))
            ),
            "duplicate_transfers": s.execute(
                text(
                    "SELECT count(*) FROM (SELECT file_id, dest_site_id FROM transfers "
                    "GROUP BY file_id, dest_site_id HAVING count(*) > 1) d"
                )
            ).scalar_one(),
            "failed_transfers": s.execute(
                text("SELECT count(*) FROM transfers WHERE state <> 4")
            ).scalar_one(),
        }


def _events(db: Database, kind: str) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.execute(
            text("SELECT message, payload FROM events WHERE kind = :k ORDER BY id"), {"k": kind}
        ).all()
    return [{"message": m, **json.loads(p)} for m, p in rows]


def _with_rucio(tmp: Path, proxy: FaultProxy) -> CampaignDriver:
    from tests.rucio_server import PASSWORD, USERNAME

    sites = tmp / "sites.toml"
    sites.write_text(
        sites.read_text() + f'\n[replication]\nbackend = "rucio"\nhost = "{proxy.url()}"\n'
        f'username = "{USERNAME}"\npassword = "{PASSWORD}"\nrse_suffix = "_O{uuid.uuid4().hex[:8].upper()}"\n'
    )
    cfg = load_campaign(tmp / "campaign.toml")
    db = Database(f"sqlite:///{tmp / 'bk.sqlite'}")
    return CampaignDriver(db, cfg, load_catalogue(cfg.sites_path))


def test_rucio_away_twice_mid_campaign_waits_backs_off_and_finishes(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
    rucio_server: Any,
) -> None:
    """Rucio goes away in the middle of registration (just after it attached a chunk of files to a
    dataset, its answer lost) and again while inputs replicate: each tick then exits 3 with "waiting:
    Rucio at … cannot be reached; retry in N s", N doubling; the campaign stays in its phase, one event
    per wait and one when Rucio answers again; it ends DONE with every file verified at both sites, no
    duplicate transfer and nothing failed."""
    proxy = FaultProxy("127.0.0.1", rucio_server.port).up()
    _setup(tmp_path, pristine)
    driver = _with_rucio(tmp_path, proxy)
    driver.create()
    seen: list[TickResult] = []
    outages = {"PLANNED": 3, "REPLICATING": 2}  # waits to sit through in each phase

    def on_tick(result: TickResult) -> None:
        seen.append(result)
        state = result.after
        if state == "PLANNED" and proxy.is_up and result.retry_in is None:
            proxy.down_after(rb"POST /dids/attachments ", count=2)  # during the next tick's registration
        elif state in outages and proxy.is_up and result.retry_in is None:
            proxy.down()  # away for the next ticks
        elif not proxy.is_up and result.retry_in is not None:
            outages[state] -= 1
            if outages[state] == 0:
                del outages[state]
                proxy.up()

    try:
        final = driver.run(max_ticks=2000, on_tick=on_tick)
    finally:
        proxy.up()
    assert final.after == "DONE", final
    waits = [r for r in seen if r.retry_in is not None]
    assert {r.before for r in waits} == {"PLANNED", "REPLICATING"}
    assert all(r.exit_code == 3 for r in waits)
    assert all(f"Rucio at {proxy.url()} cannot be reached" in r.message for r in waits), waits
    events = _events(driver.db, "campaign.waiting")
    planned = [e for e in events if e["state"] == "PLANNED"]
    assert [e["count"] for e in planned] == [1, 2, 3]
    delays = [float(e["message"].split("retry in ")[1].split(" s")[0]) for e in planned]
    assert delays[0] < delays[1] < delays[2]  # 0.2, 0.4, 0.8 s: doubled per wait
    assert len(_events(driver.db, "campaign.resumed")) == 2
    books = _books(driver.db)
    assert books["duplicate_transfers"] == 0 and books["failed_transfers"] == 0
    with driver.db.session() as s:
        files = s.execute(text("SELECT name, size, adler32 FROM files")).all()
    assert len(files) == books["files"] > 0
    for site in ("ncsa", "in2p3"):
        for name, size, adler in files:
            assert adler32_file(tmp_path / site / name) == (adler, size), (site, name)


def test_ticks_inside_the_back_off_leave_the_service_alone(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
    rucio_server: Any,
) -> None:
    """A cron tick inside the back-off does not call Rucio and says when the next try is; `--now`
    (tick(now=True)) tries at once; Rucio back, the next tick registers."""
    proxy = FaultProxy("127.0.0.1", rucio_server.port).up()
    _setup(tmp_path, pristine)
    cfg_file = tmp_path / "campaign.toml"
    cfg_file.write_text(cfg_file.read_text().replace("poll_seconds = 0.2", "poll_seconds = 30"))
    driver = _with_rucio(tmp_path, proxy)
    driver.create()
    assert driver.tick().after == "PLANNED"
    proxy.down()
    first = driver.tick()
    assert first.retry_in == 30 and "retry in 30 s (wait 1)" in first.message
    proxy.up()
    before = proxy.connections
    second = driver.tick()
    assert second.after == "PLANNED" and second.retry_in is not None and 0 < second.retry_in <= 30
    assert "next try in" in second.message and proxy.connections == before
    assert len(_events(driver.db, "campaign.waiting")) == 1  # a skipped tick is not a wait
    third = driver.tick(now=True)
    assert third.after == "REGISTERED" and third.retry_in is None
    assert proxy.connections > before


def test_bookkeeping_away_mid_campaign_exits_2_and_resumes(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
    pg_server: Any,
) -> None:
    """PostgreSQL (the books) goes away between ticks and during one: the tick stops with a one-line
    DatabaseUnavailableError (exit 2, the password masked), nothing half-written; back, the campaign
    continues to DONE with one transfer per copy."""
    from click.testing import CliRunner

    from cli import cli

    _setup(tmp_path, pristine)
    name = f"o_{uuid.uuid4().hex[:10]}"
    url = pg_server.create_database(name)
    proxy = FaultProxy("127.0.0.1", pg_server.port).up()
    proxied = url.replace(f":{pg_server.port}/", f":{proxy.port}/")
    assert proxied != url
    db = Database(proxied)
    try:
        db.upgrade()
        cfg = load_campaign(tmp_path / "campaign.toml")
        driver = CampaignDriver(db, cfg, load_catalogue(cfg.sites_path))
        driver.create()
        states = [driver.tick().after for _ in range(3)]
        assert states[-1] == "REPLICATING"
        proxy.down()
        with pytest.raises(DatabaseUnavailableError) as err:
            driver.tick()
        assert err.value.exit_code == EXIT_USAGE and "cannot be reached" in str(err.value)
        out = CliRunner().invoke(
            cli, ["campaign", "tick", str(tmp_path / "campaign.toml")], env={"DRP_DB_URL": proxied}
        )
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
        assert "cannot be reached" in out.output and len(out.output.strip().splitlines()) == 1
        proxy.up()
        cut = {"done": False}

        def cut_once(result: TickResult) -> None:  # away again during processing, for one tick
            if result.after == "PROCESSING" and not cut["done"]:
                cut["done"] = True
                proxy.down()
                time.sleep(0.2)
                proxy.up()

        final = None
        for _ in range(5):
            try:
                final = driver.run(max_ticks=2000, on_tick=cut_once)
                break
            except DatabaseUnavailableError:
                continue  # the cron's next tick
        assert final is not None and final.after == "DONE", final
        books = _books(db)
        assert books["duplicate_transfers"] == 0 and books["failed_transfers"] == 0
    finally:
        proxy.up()
        db.dispose()
        pg_server.drop_database(name)
